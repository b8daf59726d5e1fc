//! `rcumod torture`: the pipe torture passes on a real flavor and, as the control, fails
//! (exit status 1) on `busted`, whose grace periods do not wait.

mod common;

use common::{rcumod, text};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn memb_succeeds() {
    let o = rcumod(&["torture", "--flavor", "memb", "--duration", "1"], LIMIT);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("rcu-torture: Reader Pipe: "), "{out}");
    assert!(out.contains("rtmbe: 0 "), "{out}");
    assert!(
        out.trim_end()
            .ends_with("rcu-torture: --- End of test: SUCCESS"),
        "{out}"
    );
    // Nothing past the second bucket.
    let pipe: Vec<u64> = out
        .lines()
        .find_map(|l| l.strip_prefix("rcu-torture: Reader Pipe: "))
        .unwrap()
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(pipe.len(), 11, "{out}");
    assert!(pipe[0] > 0, "{out}");
    assert!(pipe[2..].iter().all(|&n| n == 0), "{out}");
}

#[test]
fn busted_fails() {
    let o = rcumod(&["torture", "--flavor", "busted", "--duration", "1"], LIMIT);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "busted must FAIL: {out}{err}");
    assert!(out.contains("aged 2 or more"), "{out}");
    assert!(
        out.trim_end()
            .ends_with("rcu-torture: --- End of test: FAILURE"),
        "{out}"
    );
}
