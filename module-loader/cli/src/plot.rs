//! `rcumod stress --plot FILE`: an SVG histogram of unload latency, normal against expedited
//! unloads, in log-scale buckets (four per decade). Hand-written SVG: one small function, no
//! plotting dependency, and the file opens in any browser.

use std::fmt::Write as _;
use std::time::Duration;

const W: f64 = 820.0;
const H: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 70.0;
/// Buckets per decade.
const PER_DECADE: f64 = 4.0;
const NORMAL_COLOR: &str = "#4e79a7";
const EXPEDITED_COLOR: &str = "#f28e2b";

fn decade_label(exp: i32) -> String {
    // 10^exp nanoseconds.
    let (unit, base) = match exp {
        e if e < 3 => ("ns", 0),
        e if e < 6 => ("µs", 3),
        e if e < 9 => ("ms", 6),
        _ => ("s", 9),
    };
    format!("{}{unit}", 10u64.pow((exp - base) as u32))
}

/// Log-scale bucket counts of `d` over decades `lo..hi` (of nanoseconds).
fn buckets(d: &[Duration], lo: i32, n: usize) -> Vec<u64> {
    let mut b = vec![0u64; n];
    for x in d {
        let ns = (x.as_nanos() as f64).max(1.0);
        let i = ((ns.log10() - lo as f64) * PER_DECADE).floor();
        b[(i.max(0.0) as usize).min(n - 1)] += 1;
    }
    b
}

/// A "nice" axis maximum ≥ `m` (1, 2, 5 × 10^k).
fn nice_max(m: u64) -> u64 {
    let mut p = 1u64;
    loop {
        for f in [1, 2, 5] {
            if f * p >= m.max(1) {
                return f * p;
            }
        }
        p *= 10;
    }
}

/// The SVG document.
pub fn latency_svg(normal: &[Duration], expedited: &[Duration]) -> String {
    let all: Vec<f64> = normal
        .iter()
        .chain(expedited)
        .map(|d| (d.as_nanos() as f64).max(1.0))
        .collect();
    let (mut lo, mut hi) = (3i32, 4i32); // 1µs..10µs when there is nothing to show
    if !all.is_empty() {
        let min = all.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = all.iter().cloned().fold(0.0, f64::max);
        lo = min.log10().floor() as i32;
        hi = (max.log10().floor() as i32 + 1).max(lo + 1);
    }
    let n = ((hi - lo) as f64 * PER_DECADE) as usize;
    let bn = buckets(normal, lo, n);
    let be = buckets(expedited, lo, n);
    let ymax = nice_max(bn.iter().chain(&be).copied().max().unwrap_or(0));
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let bw = pw / n as f64;
    let y = |c: u64| TOP + ph - ph * c as f64 / ymax as f64;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="16">rcumod stress: unload latency</text>"#,
        W / 2.0
    );
    // Bars.
    for i in 0..n {
        let x0 = LEFT + i as f64 * bw;
        for (k, (c, color)) in [(bn[i], NORMAL_COLOR), (be[i], EXPEDITED_COLOR)]
            .into_iter()
            .enumerate()
        {
            if c == 0 {
                continue;
            }
            let x = x0 + bw * (0.1 + 0.4 * k as f64);
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{c}</title></rect>"#,
                y(c),
                bw * 0.4,
                TOP + ph - y(c)
            );
        }
    }
    // Axes.
    let _ = writeln!(
        s,
        r#"<path d="M{LEFT} {TOP} V{} H{}" fill="none" stroke="black"/>"#,
        TOP + ph,
        LEFT + pw
    );
    for t in 0..=5u64 {
        let c = ymax * t / 5;
        let yy = y(c);
        let _ = writeln!(
            s,
            r##"<line x1="{}" y1="{yy:.1}" x2="{LEFT}" y2="{yy:.1}" stroke="black"/><line x1="{LEFT}" y1="{yy:.1}" x2="{}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{c}</text>"##,
            LEFT - 5.0,
            LEFT + pw,
            LEFT - 8.0,
            yy + 4.0
        );
    }
    for d in lo..=hi {
        let x = LEFT + (d - lo) as f64 * PER_DECADE * bw;
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="black"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
            TOP + ph,
            TOP + ph + 5.0,
            TOP + ph + 20.0,
            decade_label(d)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">unload latency (UnloadReport.total, log scale, {} buckets per decade)</text>"#,
        LEFT + pw / 2.0,
        H - 20.0,
        PER_DECADE
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">unloads</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    // Legend.
    for (k, (label, count, color)) in [
        ("normal", normal.len(), NORMAL_COLOR),
        ("expedited", expedited.len(), EXPEDITED_COLOR),
    ]
    .into_iter()
    .enumerate()
    {
        let ly = TOP + 10.0 + 18.0 * k as f64;
        let lx = LEFT + pw - 150.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{color}"/><text x="{}" y="{ly}">{label} (n={count})</text>"#,
            ly - 10.0,
            lx + 18.0
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_both_series() {
        let n: Vec<Duration> = (1..50).map(|i| Duration::from_micros(100 * i)).collect();
        let e: Vec<Duration> = (1..20).map(|i| Duration::from_micros(30 * i)).collect();
        let svg = latency_svg(&n, &e);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains(NORMAL_COLOR) && svg.contains(EXPEDITED_COLOR));
        assert!(svg.contains("normal (n=49)") && svg.contains("expedited (n=19)"));
        assert!(svg.contains(">1ms<"));
        assert!(latency_svg(&[], &[]).contains("</svg>"));
        assert_eq!(nice_max(7), 10);
        assert_eq!(nice_max(0), 1);
        assert_eq!(decade_label(9), "1s");
    }
}
