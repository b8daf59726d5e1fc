//! What both comparative benchmarks share: the criterion configuration, the record of every
//! sample criterion takes (from which the ratio tables are computed), and the table printer.
//!
//! Every benchmark is a criterion group named after the *shape* (`read_memb_1r`,
//! `sync_qsbr_1r`, ...) with one function per implementation (`rcu-core`, `liburcu`, ...), and
//! uses `iter_custom`. Each call of the routine is recorded here as (iterations, elapsed time);
//! the trailing calls whose iteration counts follow criterion's sampling plan are its
//! measurement samples (the earlier ones are its warm-up), so the median of their time per
//! iteration is the same statistic as criterion's "median" estimate, without reading its files.

// Each benchmark binary uses only part of this module.
#![allow(dead_code)]

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Samples per benchmark (criterion's minimum is 10).
pub(crate) const SAMPLE_SIZE: usize = 20;

/// The criterion configuration: short runs, so that each benchmark binary takes about a
/// minute on 2 cores. Command-line options (`--sample-size`, a filter, ...) still apply.
pub(crate) fn criterion(measurement: Duration) -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(measurement)
        .sample_size(SAMPLE_SIZE)
        .without_plots()
        .configure_from_args()
}

/// One call of a benchmark routine.
struct Sample {
    key: String,
    iters: u64,
    elapsed: Duration,
    /// For benchmarks that time every call: (median, p99) of the call latencies, ns.
    per_call: Option<(f64, f64)>,
}

static SAMPLES: Mutex<Vec<Sample>> = Mutex::new(Vec::new());

/// CPU time used by *other* processes while each benchmark ran (key → CPUs, e.g. 0.3 = 30 %
/// of one CPU), from `/proc/stat` minus this process's own time. On a 2-CPU machine anything
/// beyond a few percent means the figures are disturbed. Linux only; absent elsewhere.
static NOISE: Mutex<Vec<(String, f64)>> = Mutex::new(Vec::new());

/// Clock ticks of the whole machine's busy time and of this process.
struct CpuTicks {
    at: Instant,
    machine_busy: u64,
    own: u64,
}

impl CpuTicks {
    fn now() -> Option<CpuTicks> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        // user nice system idle iowait irq softirq steal ...
        let machine_busy = cpu.iter().take(8).sum::<u64>() - cpu.get(3)? - cpu.get(4)?;
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = own.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let own = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(CpuTicks {
            at: Instant::now(),
            machine_busy,
            own,
        })
    }

    /// Other processes' CPU use since `self`, in CPUs (USER_HZ = 100 on Linux).
    fn others_since(&self) -> Option<f64> {
        let now = CpuTicks::now()?;
        let others = now.machine_busy.saturating_sub(self.machine_busy) as f64
            - now.own.saturating_sub(self.own) as f64;
        Some((others / 100.0 / now.at.duration_since(self.at).as_secs_f64()).max(0.0))
    }
}

/// Run `f` (one `bench_function`) and note how busy the rest of the machine was meanwhile.
fn watching_noise(key: &str, f: impl FnOnce()) {
    let before = CpuTicks::now();
    f();
    if let Some(others) = before.and_then(|b| b.others_since()) {
        NOISE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((key.to_owned(), others));
    }
}

fn noise(key: &str) -> Option<f64> {
    NOISE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|&(_, n)| n)
}

fn record(key: &str, iters: u64, elapsed: Duration, per_call: Option<(f64, f64)>) {
    SAMPLES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Sample {
            key: key.to_owned(),
            iters,
            elapsed,
            per_call,
        });
}

/// Benchmark `run(iters)`, which runs `iters` iterations and returns their elapsed time, as
/// function `name` of `group` (whose name is `group_name`).
pub(crate) fn bench_loop(
    group: &mut BenchmarkGroup<'_, WallTime>,
    group_name: &str,
    name: &str,
    mut run: impl FnMut(u64) -> Duration,
) {
    let key = format!("{group_name}/{name}");
    watching_noise(&key, || {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let elapsed = run(iters);
                record(&key, iters, elapsed, None);
                elapsed
            })
        });
    });
}

/// Latencies kept per routine call for the per-call median and p99.
const LATENCY_CAP: usize = 1 << 20;

/// Benchmark `call()`, timing every call on its own as the anchors did (a clock read before and
/// after); criterion is given the sum of those per-call times. Also records the per-call median
/// and p99 of each routine call.
pub(crate) fn bench_calls(
    group: &mut BenchmarkGroup<'_, WallTime>,
    group_name: &str,
    name: &str,
    mut call: impl FnMut(),
) {
    let key = format!("{group_name}/{name}");
    let mut lat: Vec<u64> = Vec::new();
    let routine = |b: &mut criterion::Bencher<'_>| {
        b.iter_custom(|iters| {
            lat.clear();
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t0 = Instant::now();
                call();
                let d = t0.elapsed();
                total += d;
                if lat.len() < LATENCY_CAP {
                    lat.push(d.as_nanos() as u64);
                }
            }
            let per_call = (!lat.is_empty()).then(|| {
                lat.sort_unstable();
                let p99 = lat[((lat.len() - 1) as f64 * 0.99) as usize] as f64;
                (lat[lat.len() / 2] as f64, p99)
            });
            record(&key, iters, total, per_call);
            total
        })
    };
    watching_noise(&key, || {
        group.bench_function(name, routine);
    });
}

/// Criterion's measurement samples of one benchmark, summarised.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Summary {
    /// Median over the samples of the time per iteration, ns (criterion's "median").
    pub(crate) median_ns: f64,
    /// For [`bench_calls`]: median over the samples of the per-call median and p99, ns.
    pub(crate) per_call: Option<(f64, f64)>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// The summary of benchmark `key` (`group/function`), if criterion measured it in this run
/// (not in `--test` mode, not filtered out).
pub(crate) fn summary(key: &str) -> Option<Summary> {
    let all = SAMPLES.lock().unwrap_or_else(|e| e.into_inner());
    let mine: Vec<&Sample> = all.iter().filter(|s| s.key == key).collect();
    let last = measurement_samples(&mine);
    // Criterion takes at least 10 samples; fewer means test mode or an interrupted run.
    if last.len() < 10 {
        return None;
    }
    let median_ns = median(
        last.iter()
            .map(|s| s.elapsed.as_nanos() as f64 / s.iters as f64)
            .collect(),
    );
    let per_call = last.iter().all(|s| s.per_call.is_some()).then(|| {
        let p = |f: fn((f64, f64)) -> f64| {
            median(last.iter().map(|s| f(s.per_call.unwrap())).collect())
        };
        (p(|x| x.0), p(|x| x.1))
    });
    Some(Summary {
        median_ns,
        per_call,
    })
}

/// The trailing calls that were criterion's measurement samples, whatever `--sample-size` says:
/// in linear sampling their iteration counts are d, 2d, …, n·d (warm-up calls double instead,
/// and none can precede the first sample by exactly d); in flat sampling they are all equal.
fn measurement_samples<'s>(mine: &'s [&'s Sample]) -> &'s [&'s Sample] {
    let n = mine.len();
    if n < 2 {
        return mine;
    }
    let iters = |i: usize| mine[i].iters;
    let step = iters(n - 1).wrapping_sub(iters(n - 2));
    let mut k = n - 1;
    while k > 0 && iters(k).wrapping_sub(iters(k - 1)) == step {
        k -= 1;
    }
    &mine[k..]
}

/// A row of a ratio table: a label, rcu-core's benchmark key and the liburcu one it is
/// compared with.
pub(crate) struct Row<'a> {
    pub(crate) label: &'a str,
    pub(crate) ours: &'a str,
    pub(crate) theirs: &'a str,
}

/// How to print a time.
#[derive(Clone, Copy)]
pub(crate) enum Unit {
    Ns,
    Us,
}

fn fmt_time(ns: f64, unit: Unit) -> String {
    match unit {
        Unit::Ns => format!("{ns:.3} ns"),
        Unit::Us => format!("{:.3} µs", ns / 1000.0),
    }
}

fn fmt_ratio(ours: f64, theirs: f64) -> String {
    format!("{:.2}×", ours / theirs)
}

fn fmt_noise(key: &str) -> String {
    noise(key).map_or_else(|| "?".to_owned(), |n| format!("{:.0} %", n * 100.0))
}

/// Print the "rcu-core / liburcu" table for the rows measured in this run (Markdown, so it
/// can be pasted into docs/performance.md). With `per_call`, adds the per-call median and p99.
/// The last column is the CPU time other processes used while each side ran (see [`NOISE`]).
pub(crate) fn print_ratio_table(title: &str, rows: &[Row<'_>], unit: Unit, per_call: bool) {
    let measured: Vec<(&Row<'_>, Summary, Option<Summary>)> = rows
        .iter()
        .filter_map(|r| summary(r.ours).map(|s| (r, s, summary(r.theirs))))
        .collect();
    if measured.is_empty() {
        return;
    }
    println!();
    println!("## {title}: rcu-core / liburcu (same run; criterion median over its samples)");
    println!();
    if per_call {
        println!(
            "| shape | rcu-core | liburcu | ratio | rcu-core per-call median / p99 | \
             liburcu per-call median / p99 | ratio of medians | other processes' CPU |"
        );
        println!("|---|---|---|---|---|---|---|---|");
    } else {
        println!("| shape | rcu-core | liburcu | ratio | other processes' CPU |");
        println!("|---|---|---|---|---|");
    }
    for (row, ours, theirs) in measured {
        let (theirs_s, ratio) = match theirs {
            Some(t) => (
                fmt_time(t.median_ns, unit),
                fmt_ratio(ours.median_ns, t.median_ns),
            ),
            None => ("not measured".to_owned(), "–".to_owned()),
        };
        let mut line = format!(
            "| {} | {} | {} | {}",
            row.label,
            fmt_time(ours.median_ns, unit),
            theirs_s,
            ratio
        );
        if per_call {
            let pc = |s: Option<Summary>| match s.and_then(|s| s.per_call) {
                Some((m, p)) => format!("{} / {}", fmt_time(m, unit), fmt_time(p, unit)),
                None => "–".to_owned(),
            };
            let r = match (ours.per_call, theirs.and_then(|t| t.per_call)) {
                (Some((a, _)), Some((b, _))) => fmt_ratio(a, b),
                _ => "–".to_owned(),
            };
            line += &format!(" | {} | {} | {}", pc(Some(ours)), pc(theirs), r);
        }
        let theirs_noise = if theirs.is_some() {
            fmt_noise(row.theirs)
        } else {
            "–".to_owned()
        };
        line += &format!(" | {} / {}", fmt_noise(row.ours), theirs_noise);
        println!("{line} |");
    }
    if !rcumod_tests::HAVE_LIBURCU {
        println!();
        println!(
            "(liburcu was not built into this binary: no pkg-config/liburcu-dev 0.13, or \
             RCUMOD_NO_LIBURCU=1; see tests/build.rs)"
        );
    }
}
