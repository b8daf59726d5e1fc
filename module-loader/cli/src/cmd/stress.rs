//! `rcumod stress`: modules loaded, hot-reloaded and unloaded in cycles under reader load,
//! with an rcutorture-style summary and verdict.
//!
//! One worker thread per module runs cycles of: load (with seeded random parameters: a
//! small `period_us` makes `rcu_list`/`c_list` churn, i.e. flood `call_rcu`) → dwell while
//! `--readers` threads call every published hook → every `--reload-every` cycles a hot
//! `Host::reload` → unload, normal or expedited (`--expedite-ratio`). The workers run
//! concurrently, so unloads, barriers and reloads of different modules overlap.
//!
//! The verdict is about the unload protocol's promise: every callback a module posted was
//! invoked before its code was unmapped. From each `UnloadReport`'s final counters, lost =
//! posted − invoked − late must be 0 and late must be 0 (in `--checked` mode a late callback
//! is counted instead of crashing the process; without it, the process would die); any load,
//! reload or unload error is a failure too. A pinned module (still mapped, with the reason) is
//! reported but is not a safety failure.
//!
//! With no `--module`, the bundled samples are used: `librcu_list.so` next to this executable
//! (the same cargo target directory), and `c_list.c` compiled with `cc` into a temporary
//! directory when the workspace sources are present. So is `handoff_thread`, built from
//! `handoff.c`: a C module whose own `pthread_create`d thread never stops, which the host must
//! answer `Pinned` (naming the thread) rather than unmap under it. It runs one cycle, and its
//! pinned unload counts as pinned, not as an error.

use crate::cli::StressArgs;
use crate::cmd::host::{hook_reader, mode_name};
use crate::logging::BarWriter;
use crate::output::{human, percentile, Json};
use crate::rng::XorShift;
use indicatif::{ProgressBar, ProgressStyle};
use module_loader::{Host, HostEvent, UnloadMode, UnloadOutcome, UnloadReport};
use rcumod_abi::modinfo::ParamType;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where the workspace's C samples and the C header are, as seen when this binary was built.
const C_SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../sample-modules/c/c_list.c"
);
const C_HANDOFF: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../sample-modules/c/handoff.c"
);
/// The bundled module that pins by design (see the module documentation).
const PINS_BY_DESIGN: &str = "handoff_thread";
const C_INCLUDE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../module-abi/include");
/// The bundled Rust samples, looked for next to the executable.
const RUST_SAMPLES: &[&str] = &[
    "librcu_list.so",
    "libtorture.so",
    "libtimer_poster.so",
    "libsrcu_user.so",
    "libprofiler.so",
    "libgreeter_v1.so",
];

/// A module under test.
#[derive(Debug, Clone)]
struct Subject {
    path: PathBuf,
    /// Another version of the same module, which hot reloads alternate with (greeter v2).
    alt_path: Option<PathBuf>,
    name: String,
    /// Declared parameters we know how to vary.
    params: Vec<(String, ParamType)>,
    /// At most this many cycles (the module that pins by design: every pinned instance leaves
    /// its thread running for the rest of the process).
    max_cycles: Option<u64>,
}

/// Counters and reports gathered by the workers.
#[derive(Debug, Default)]
struct Tally {
    cycles: u64,
    loads: u64,
    unloads: u64,
    reloads: u64,
    reports: Vec<UnloadReport>,
    errors: Vec<String>,
}

/// The summary.
#[derive(Debug, Default)]
struct Summary {
    cycles: u64,
    loads: u64,
    unloads: u64,
    reloads: u64,
    pinned: u64,
    pinned_reasons: Vec<String>,
    posted: u64,
    invoked: u64,
    lost: u64,
    late: u64,
    refused_after_stop: u64,
    refused_foreign: u64,
    normal: Vec<Duration>,
    expedited: Vec<Duration>,
    /// Expedited unloads' step durations, by step (Unpublish … Close): where the tail is.
    expedited_steps: [Vec<Duration>; 5],
    barrier_rounds: u64,
    boosts: u64,
    forced: u64,
    inline: u64,
    reader_calls: u64,
    errors: Vec<String>,
    elapsed: Duration,
}

impl Summary {
    fn success(&self) -> bool {
        self.errors.is_empty() && self.lost == 0 && self.late == 0
    }
}

/// Compile the C sample `src` into `dir` as module `name` (with `defines`); `None` (with a
/// warning) if it cannot be.
fn compile_c_sample(
    dir: &Path,
    src: &str,
    name: &str,
    defines: &[&str],
    log: &BarWriter,
) -> Option<PathBuf> {
    let src = Path::new(src);
    if !src.exists() {
        return None;
    }
    let out = dir.join(format!("lib{name}.so"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let r = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-pthread", "-I"])
        .arg(C_INCLUDE)
        .args(defines)
        .arg("-o")
        .arg(&out)
        .arg(src)
        .output();
    match r {
        Ok(o) if o.status.success() => Some(out),
        Ok(o) => {
            log.line(&format!(
                "rcumod: WARNING: compiling {} failed; {name} skipped:\n{}",
                src.display(),
                String::from_utf8_lossy(&o.stderr)
            ));
            None
        }
        Err(e) => {
            log.line(&format!(
                "rcumod: WARNING: cannot run the C compiler `{cc}` ({e}); {name} skipped"
            ));
            None
        }
    }
}

/// The bundled samples: Rust ones next to the executable, the C one compiled into `tmp`.
fn bundled(tmp: &Path, log: &BarWriter) -> Result<Vec<PathBuf>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate this executable: {e}"))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let mut found: Vec<PathBuf> = RUST_SAMPLES
        .iter()
        .map(|f| dir.join(f))
        .filter(|p| p.exists())
        .collect();
    if found.is_empty() {
        log.line(&format!(
            "rcumod: WARNING: no Rust sample module next to {} (build it with `cargo build -p rcu_list`)",
            exe.display()
        ));
    }
    if std::fs::create_dir_all(tmp).is_ok() {
        found.extend(compile_c_sample(tmp, C_SAMPLE, "c_list", &[], log));
        let define = format!("-DMODNAME=\"{PINS_BY_DESIGN}\"");
        let defines = ["-DCASE_THREAD", define.as_str(), "-Wno-unused-function"];
        found.extend(compile_c_sample(
            tmp,
            C_HANDOFF,
            PINS_BY_DESIGN,
            &defines,
            log,
        ));
    }
    if found.is_empty() {
        return Err(format!(
            "no modules to stress: no bundled sample module was found next to {} nor could \
             c_list be compiled; build them (`cargo build -p rcu_list`) or pass --module PATH",
            exe.display()
        ));
    }
    Ok(found)
}

/// Random parameters for the parameters we know: list sizes and churn periods (small: a
/// callback flood). c_list's `domain` is deliberately left at its default (0, the hook
/// domain): its hook walks the list inside a read section of domain 0, so frees posted to
/// another domain (qsbr) would not wait for those readers — a use-after-free this command
/// caught as a SIGSEGV in c_list's `sum` when it varied that parameter.
fn random_params(s: &Subject, rng: &mut XorShift) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, ty) in &s.params {
        let v = match (s.name.as_str(), name.as_str(), ty) {
            (_, _, ParamType::Str | ParamType::Bool) => continue,
            (_, "count", _) => rng.range(8, 256),
            ("profiler", "period_us", _) => rng.range(200, 2000),
            (_, "period_us", _) => rng.range(20, 400),
            // torture: a callback flood at load and a few self-reposting chains.
            (_, "flood", _) => rng.range(1_000, 50_000),
            (_, "chains", _) => rng.range(1, 8),
            (_, "burst", _) => rng.range(1, 32),
            (_, "sleep_us", _) => rng.range(50, 500),
            (_, "swap_ms", _) => rng.range(2, 20),
            _ => continue,
        };
        out.push((name.clone(), v.to_string()));
    }
    out
}

/// What bounds the run.
#[derive(Clone, Copy, Debug)]
enum Bound {
    Cycles(u64),
    Until(Instant),
}

fn worker(
    host: &Host,
    s: &Subject,
    seed: u64,
    bound: Bound,
    args: &StressArgs,
    tally: &Mutex<Tally>,
    abort: &AtomicBool,
) {
    let mut rng = XorShift::new(seed);
    let pick = |rng: &mut XorShift| {
        if rng.chance(args.expedite_ratio) {
            UnloadMode::Expedited
        } else {
            UnloadMode::Normal
        }
    };
    let tally = || tally.lock().unwrap_or_else(|e| e.into_inner());
    let mut cycle = 0u64;
    loop {
        let more = match bound {
            Bound::Cycles(n) => cycle < n,
            Bound::Until(d) => Instant::now() < d,
        } && s.max_cycles.is_none_or(|m| cycle < m);
        if !more || abort.load(Ordering::Relaxed) {
            return;
        }
        cycle += 1;
        let params = random_params(s, &mut rng);
        if let Err(e) = host.load(&s.path, &params) {
            tally().errors.push(format!("load: {e}"));
            abort.store(true, Ordering::Relaxed);
            return;
        }
        tally().loads += 1;
        std::thread::sleep(Duration::from_micros(rng.range(500, 8000)));
        if args.reload_every > 0 && cycle.is_multiple_of(args.reload_every) {
            let params = random_params(s, &mut rng);
            // Alternate versions where there are two; otherwise reload the same file.
            let file = match &s.alt_path {
                Some(alt) if (cycle / args.reload_every) % 2 == 1 => alt,
                _ => &s.path,
            };
            match host.reload(&s.name, file, &params, pick(&mut rng)) {
                Ok((_, report)) => {
                    let mut t = tally();
                    t.reloads += 1;
                    t.reports.push(report);
                }
                // The old version stays live: go on and unload it.
                Err(e) => tally().errors.push(format!("reload {}: {e}", s.name)),
            }
            std::thread::sleep(Duration::from_micros(rng.range(500, 8000)));
        }
        match host.unload(&s.name, pick(&mut rng)) {
            Ok(report) => {
                let mut t = tally();
                t.unloads += 1;
                t.cycles += 1;
                t.reports.push(report);
            }
            Err(e) => {
                tally().errors.push(format!("unload {}: {e}", s.name));
                abort.store(true, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// Run `stress`; returns the exit status.
pub fn run(args: &StressArgs, log: &BarWriter) -> u8 {
    if !(0.0..=1.0).contains(&args.expedite_ratio) {
        eprintln!("rcumod: ERROR: --expedite-ratio must be between 0.0 and 1.0");
        return 2;
    }
    if let Some(d) = args.duration {
        if !(d.is_finite() && d > 0.0) {
            eprintln!("rcumod: ERROR: --duration must be a positive number of seconds");
            return 2;
        }
    }
    let tmp = std::env::temp_dir().join(format!("rcumod-stress-{}", std::process::id()));
    let status = run_in(args, log, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    status
}

fn run_in(args: &StressArgs, log: &BarWriter, tmp: &Path) -> u8 {
    let mut paths = if args.modules.is_empty() {
        match bundled(tmp, log) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("rcumod: ERROR: {e}");
                return 1;
            }
        }
    } else {
        args.modules.clone()
    };
    if let Some(m) = args.module_count {
        if m == 0 {
            eprintln!("rcumod: ERROR: --modules must be at least 1");
            return 2;
        }
        paths.truncate(m);
    }

    let host = match Host::builder()
        .checked(args.checked)
        .exit_deadline(Duration::from_millis(args.exit_deadline))
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            eprintln!("rcumod: ERROR: cannot create the host: {e}");
            return 1;
        }
    };
    let mut subjects: Vec<Subject> = Vec::new();
    for p in &paths {
        let i = match host.inspect(p) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("rcumod: ERROR: {e}");
                return 1;
            }
        };
        if subjects.iter().any(|s| s.name == i.modinfo.name) {
            eprintln!(
                "rcumod: ERROR: module {} is given twice ({})",
                i.modinfo.name,
                p.display()
            );
            return 2;
        }
        // A second version next to the first one (libgreeter_v1.so → libgreeter_v2.so).
        let alt_path = p
            .file_name()
            .and_then(|f| f.to_str())
            .filter(|f| f.contains("_v1."))
            .map(|f| p.with_file_name(f.replace("_v1.", "_v2.")))
            .filter(|a| a.exists());
        subjects.push(Subject {
            path: p.clone(),
            alt_path,
            name: i.modinfo.name.clone(),
            params: i
                .modinfo
                .params
                .iter()
                .map(|p| (p.name.clone(), p.ty))
                .collect(),
            max_cycles: (args.modules.is_empty() && i.modinfo.name == PINS_BY_DESIGN).then_some(1),
        });
    }
    let events = host.subscribe();
    let names: Vec<String> = subjects.iter().map(|s| s.name.clone()).collect();
    let bound = match args.duration {
        Some(d) => Bound::Until(Instant::now() + Duration::from_secs_f64(d)),
        None => Bound::Cycles(args.cycles),
    };
    let total = match bound {
        Bound::Cycles(n) => subjects
            .iter()
            .map(|s| s.max_cycles.unwrap_or(n).min(n))
            .sum(),
        Bound::Until(_) => 0,
    };
    let start_line = format!(
        "rcumod-stress: --- Start of test: modules={} readers={} {} expedite_ratio={} reload_every={} seed={:#x} checked={}",
        names.join(","),
        args.readers,
        match args.duration {
            Some(d) => format!("duration={d}s"),
            None => format!("cycles={}", args.cycles),
        },
        args.expedite_ratio,
        args.reload_every,
        args.seed,
        args.checked
    );
    if args.json {
        log.line(&start_line);
    } else {
        println!("{start_line}");
    }

    let tty = std::io::stderr().is_terminal();
    let bar = tty.then(|| {
        let pb = if total > 0 {
            ProgressBar::new(total)
        } else {
            ProgressBar::new_spinner()
        };
        let tpl = if total > 0 {
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} cycles {wide_msg}"
        } else {
            "{spinner} [{elapsed_precise}] {pos} cycles {wide_msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(tpl) {
            pb.set_style(style);
        }
        pb
    });
    log.set(bar.clone());

    let tally = Mutex::new(Tally::default());
    let stop_readers = AtomicBool::new(false);
    let stop_ticker = AtomicBool::new(false);
    let abort = AtomicBool::new(false);
    let reader_calls = AtomicU64::new(0);
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        for _ in 0..args.readers {
            sc.spawn(|| hook_reader(&host, &stop_readers, &reader_calls, Duration::ZERO));
        }
        // Progress: the bar on a terminal, a plain line every second otherwise.
        sc.spawn(|| {
            let mut last_line = Instant::now();
            while !stop_ticker.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let (cycles, loads, unloads, reloads, errors) = {
                    let t = tally.lock().unwrap_or_else(|e| e.into_inner());
                    (t.cycles, t.loads, t.unloads, t.reloads, t.errors.len())
                };
                let calls = reader_calls.load(Ordering::Relaxed);
                let msg = format!(
                    "loads {loads} unloads {unloads} reloads {reloads} errors {errors} reader calls {calls}"
                );
                if let Some(pb) = &bar {
                    pb.set_position(cycles);
                    pb.set_message(msg);
                } else if last_line.elapsed() >= Duration::from_secs(1) {
                    last_line = Instant::now();
                    let of = if total > 0 {
                        format!("/{total}")
                    } else {
                        String::new()
                    };
                    log.line(&format!(
                        "rcumod-stress: [{:.1}s] {cycles}{of} cycles, {msg}",
                        t0.elapsed().as_secs_f64()
                    ));
                }
            }
        });
        let workers: Vec<_> = subjects
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let seed = args.seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let (host, tally, abort) = (&host, &tally, &abort);
                sc.spawn(move || worker(host, s, seed, bound, args, tally, abort))
            })
            .collect();
        for w in workers {
            if w.join().is_err() {
                tally
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .errors
                    .push("a worker thread panicked".into());
            }
        }
        stop_readers.store(true, Ordering::Relaxed);
        stop_ticker.store(true, Ordering::Relaxed);
    });
    // Anything left (after an error): unload it by the protocol, and count it.
    let leftovers = host.unload_all(UnloadMode::Normal);
    let elapsed = t0.elapsed();
    if let Some(pb) = &bar {
        pb.finish_and_clear();
    }
    log.set(None);

    let mut tally = tally.into_inner().unwrap_or_else(|e| e.into_inner());
    tally.reports.extend(leftovers);
    let late_events = events
        .try_iter()
        .filter(|e| matches!(e, HostEvent::LateCallback { .. }))
        .count() as u64;
    let s = summarize(tally, late_events, reader_calls.into_inner(), elapsed);
    drop(host);

    if let Some(path) = &args.plot {
        if let Err(e) = std::fs::write(path, crate::plot::latency_svg(&s.normal, &s.expedited)) {
            eprintln!("rcumod: ERROR: cannot write {}: {e}", path.display());
        }
    }
    if args.json {
        println!("{}", to_json(&s, args, &names));
    } else {
        print!("{}", render(&s));
    }
    if s.success() {
        0
    } else {
        1
    }
}

fn summarize(t: Tally, late_events: u64, reader_calls: u64, elapsed: Duration) -> Summary {
    let mut s = Summary {
        cycles: t.cycles,
        loads: t.loads,
        unloads: t.unloads,
        reloads: t.reloads,
        reader_calls,
        errors: t.errors,
        elapsed,
        ..Summary::default()
    };
    for r in &t.reports {
        let c = r.callbacks;
        s.posted += c.posted;
        s.invoked += c.invoked;
        s.late += c.late;
        s.lost += c.posted.saturating_sub(c.invoked + c.late);
        s.refused_after_stop += c.refused_after_stop;
        s.refused_foreign += c.refused_foreign;
        s.barrier_rounds += u64::from(r.barrier_rounds);
        if let Some(e) = r.expedite {
            s.boosts += u64::from(e.threads_boosted);
            s.forced += u64::from(e.threads_forced);
            s.inline += e.callbacks_inline;
        }
        if let UnloadOutcome::Pinned { reason } = &r.outcome {
            s.pinned += 1;
            if s.pinned_reasons.len() < 5 {
                s.pinned_reasons.push(format!("{}: {reason}", r.name));
            }
        }
        match r.mode {
            UnloadMode::Expedited => {
                s.expedited.push(r.total);
                for t in &r.steps {
                    s.expedited_steps[step_index(t.step)].push(t.duration);
                }
            }
            _ => s.normal.push(r.total),
        }
    }
    for v in &mut s.expedited_steps {
        v.sort();
    }
    // Each late callback is counted by its module's counters and by a host event; the events
    // also see those that came after the module's report was taken.
    s.late = s.late.max(late_events);
    s.normal.sort();
    s.expedited.sort();
    s
}

const STEP_NAMES: [&str; 5] = ["unpublish", "stop", "barrier", "verify", "close"];

fn step_index(step: module_loader::Step) -> usize {
    use module_loader::Step;
    match step {
        Step::Unpublish => 0,
        Step::StopPosting => 1,
        Step::Barrier => 2,
        Step::Verify => 3,
        Step::Close => 4,
    }
}

fn lat(v: &[Duration]) -> String {
    match (percentile(v, 50.0), percentile(v, 99.0)) {
        (Some(p50), Some(p99)) => format!(
            "n={} p50 {} p99 {} max {}",
            v.len(),
            human(p50),
            human(p99),
            human(*v.last().unwrap_or(&p99))
        ),
        _ => "n=0".into(),
    }
}

fn render(s: &Summary) -> String {
    let p = "rcumod-stress:";
    let mut o = String::new();
    o.push_str(&format!(
        "{p} cycles: {} loads: {} unloads: {} reloads: {} pinned: {} errors: {} ({:.2}s)\n",
        s.cycles,
        s.loads,
        s.unloads,
        s.reloads,
        s.pinned,
        s.errors.len(),
        s.elapsed.as_secs_f64()
    ));
    o.push_str(&format!(
        "{p} callbacks: posted: {} invoked: {} lost: {} late: {} refused_after_stop: {} refused_foreign: {}\n",
        s.posted, s.invoked, s.lost, s.late, s.refused_after_stop, s.refused_foreign
    ));
    o.push_str(&format!("{p} unload latency normal: {}\n", lat(&s.normal)));
    o.push_str(&format!(
        "{p} unload latency expedited: {}\n",
        lat(&s.expedited)
    ));
    let steps: Vec<String> = STEP_NAMES
        .iter()
        .zip(&s.expedited_steps)
        .filter_map(|(name, v)| {
            let (p50, p99) = (percentile(v, 50.0)?, percentile(v, 99.0)?);
            Some(format!("{name} {}/{}", human(p50), human(p99)))
        })
        .collect();
    if !steps.is_empty() {
        o.push_str(&format!(
            "{p} expedited steps p50/p99: {}\n",
            steps.join(" ")
        ));
    }
    o.push_str(&format!(
        "{p} barrier rounds: {} boosts: {} forced: {} inline callbacks: {}\n",
        s.barrier_rounds, s.boosts, s.forced, s.inline
    ));
    o.push_str(&format!("{p} reader hook calls: {}\n", s.reader_calls));
    for r in &s.pinned_reasons {
        o.push_str(&format!("{p} pinned: {r}\n"));
    }
    for e in s.errors.iter().take(10) {
        o.push_str(&format!("{p} !!! {e}\n"));
    }
    if s.lost > 0 {
        o.push_str(&format!(
            "{p} !!! {} callback(s) lost: posted but never invoked when their module went\n",
            s.lost
        ));
    }
    if s.late > 0 {
        o.push_str(&format!(
            "{p} !!! late callbacks: their module was unmapped before they ran\n"
        ));
    }
    o.push_str(&format!(
        "{p} --- End of test: {}\n",
        if s.success() { "SUCCESS" } else { "FAILURE" }
    ));
    o
}

fn lat_json(v: &[Duration]) -> Json {
    let ns = |d: Option<Duration>| d.map(|d| d.as_nanos() as u64);
    Json::obj()
        .with("count", v.len())
        .with("p50_ns", ns(percentile(v, 50.0)))
        .with("p99_ns", ns(percentile(v, 99.0)))
        .with("max_ns", ns(v.last().copied()))
}

fn to_json(s: &Summary, args: &StressArgs, names: &[String]) -> Json {
    Json::obj()
        .with("seed", args.seed)
        .with("modules", names.to_vec())
        .with("readers", args.readers)
        .with("checked", args.checked)
        .with("expedite_ratio", args.expedite_ratio)
        .with("cycles", s.cycles)
        .with("loads", s.loads)
        .with("unloads", s.unloads)
        .with("reloads", s.reloads)
        .with("pinned", s.pinned)
        .with("pinned_reasons", s.pinned_reasons.clone())
        .with(
            "callbacks",
            Json::obj()
                .with("posted", s.posted)
                .with("invoked", s.invoked)
                .with("lost", s.lost)
                .with("late", s.late)
                .with("refused_after_stop", s.refused_after_stop)
                .with("refused_foreign", s.refused_foreign),
        )
        .with(
            "unload_latency",
            Json::obj()
                .with(mode_name(UnloadMode::Normal), lat_json(&s.normal))
                .with(mode_name(UnloadMode::Expedited), lat_json(&s.expedited)),
        )
        .with("barrier_rounds", s.barrier_rounds)
        .with("boosts", s.boosts)
        .with("threads_forced", s.forced)
        .with("callbacks_inline", s.inline)
        .with("reader_hook_calls", s.reader_calls)
        .with("errors", s.errors.clone())
        .with("elapsed_s", s.elapsed.as_secs_f64())
        .with("result", if s.success() { "SUCCESS" } else { "FAILURE" })
}
