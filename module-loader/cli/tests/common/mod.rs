//! Helpers shared by the `rcumod` command-line tests: running the built binary with a time
//! bound, a private temporary directory, and a small JSON syntax checker (the command line
//! writes JSON with its own escaper; the tests check that it parses).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub(crate) const RCUMOD: &str = env!("CARGO_BIN_EXE_rcumod");

/// Run `rcumod args…`, killing it after `limit` (a hang guard), and return its output.
pub(crate) fn rcumod(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(RCUMOD)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rcumod");
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut v);
        v
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait rcumod") {
            break st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "hang guard: `rcumod {}` did not finish within {limit:?}; stderr so far:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&t_err.join().unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

/// stdout and stderr as text.
pub(crate) fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A fresh directory private to this test process and `tag` (removed by [`TempDir`]'s drop).
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("rcumod-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create temp dir");
        TempDir(d)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Check that `s` is exactly one JSON value (RFC 8259 syntax), surrounded by whitespace.
pub(crate) fn assert_json(s: &str) {
    let b = s.as_bytes();
    let mut i = 0;
    ws(b, &mut i);
    value(b, &mut i).unwrap_or_else(|e| panic!("invalid JSON at byte {e}: {s}"));
    ws(b, &mut i);
    assert_eq!(i, b.len(), "trailing data after the JSON value: {s}");
}

fn ws(b: &[u8], i: &mut usize) {
    while *i < b.len() && matches!(b[*i], b' ' | b'\t' | b'\n' | b'\r') {
        *i += 1;
    }
}

fn lit(b: &[u8], i: &mut usize, l: &[u8]) -> Result<(), usize> {
    if b[*i..].starts_with(l) {
        *i += l.len();
        Ok(())
    } else {
        Err(*i)
    }
}

fn value(b: &[u8], i: &mut usize) -> Result<(), usize> {
    match b.get(*i).ok_or(*i)? {
        b'{' => {
            *i += 1;
            ws(b, i);
            if b.get(*i) == Some(&b'}') {
                *i += 1;
                return Ok(());
            }
            loop {
                ws(b, i);
                string(b, i)?;
                ws(b, i);
                lit(b, i, b":")?;
                ws(b, i);
                value(b, i)?;
                ws(b, i);
                match b.get(*i) {
                    Some(b',') => *i += 1,
                    Some(b'}') => {
                        *i += 1;
                        return Ok(());
                    }
                    _ => return Err(*i),
                }
            }
        }
        b'[' => {
            *i += 1;
            ws(b, i);
            if b.get(*i) == Some(&b']') {
                *i += 1;
                return Ok(());
            }
            loop {
                ws(b, i);
                value(b, i)?;
                ws(b, i);
                match b.get(*i) {
                    Some(b',') => *i += 1,
                    Some(b']') => {
                        *i += 1;
                        return Ok(());
                    }
                    _ => return Err(*i),
                }
            }
        }
        b'"' => string(b, i),
        b't' => lit(b, i, b"true"),
        b'f' => lit(b, i, b"false"),
        b'n' => lit(b, i, b"null"),
        b'-' | b'0'..=b'9' => number(b, i),
        _ => Err(*i),
    }
}

fn string(b: &[u8], i: &mut usize) -> Result<(), usize> {
    lit(b, i, b"\"")?;
    while let Some(&c) = b.get(*i) {
        *i += 1;
        match c {
            b'"' => return Ok(()),
            b'\\' => match b.get(*i) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => *i += 1,
                Some(b'u')
                    if b.len() >= *i + 5 && b[*i + 1..*i + 5].iter().all(u8::is_ascii_hexdigit) =>
                {
                    *i += 5
                }
                _ => return Err(*i),
            },
            0..=0x1f => return Err(*i - 1),
            _ => {}
        }
    }
    Err(*i)
}

fn number(b: &[u8], i: &mut usize) -> Result<(), usize> {
    let start = *i;
    if b.get(*i) == Some(&b'-') {
        *i += 1;
    }
    let digits = |i: &mut usize| {
        let s = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > s
    };
    if !digits(i) {
        return Err(start);
    }
    if b.get(*i) == Some(&b'.') {
        *i += 1;
        if !digits(i) {
            return Err(*i);
        }
    }
    if matches!(b.get(*i), Some(b'e' | b'E')) {
        *i += 1;
        if matches!(b.get(*i), Some(b'+' | b'-')) {
            *i += 1;
        }
        if !digits(i) {
            return Err(*i);
        }
    }
    Ok(())
}
