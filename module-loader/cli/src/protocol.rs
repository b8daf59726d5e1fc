//! The control protocol between `rcumod host` and its clients (`insmod`, `rmmod`, `lsmod`,
//! `reload`, `hooks`, `shutdown`), over a Unix stream socket.
//!
//! Why a line protocol of our own: the host and its clients are the same binary, the messages
//! are few and flat, and a text format can be read with `socat` when something goes wrong.
//! Loading a module is running code, so the socket is the host's security boundary: it is
//! created mode 0600 and every connection's peer uid is checked (`cmd::host`).
//!
//! # Wire format
//!
//! One request per connection. The client sends one line; the host answers with zero or more
//! record lines and exactly one final status line, then closes the connection.
//!
//! ```text
//! request  = verb *( TAB field ) LF
//! record   = tag  *( TAB field ) LF
//! status   = "ok" LF
//!          / "err" TAB kind TAB message LF
//! ```
//!
//! Fields are UTF-8 with four escapes, so that any path, value or (multi-line) message fits in
//! one field: `\\` (backslash), `\t` (tab), `\n` (line feed), `\r` (carriage return). A request
//! line is at most [`MAX_LINE`] bytes.
//!
//! | request | records in the answer |
//! |---|---|
//! | `insmod PATH [name=value…]` | one `module` (the loaded module) |
//! | `rmmod NAME normal\|expedited` | one `unload`, its `step`s, an `expedite` if expedited |
//! | `reload NAME PATH normal\|expedited [name=value…]` | `module` (the new version), then the old version's `unload`, `step`s, `expedite` |
//! | `lsmod` | one `module` per module in the host's table |
//! | `hooks` | one `hook` per published hook, then `stat reader_calls N` |
//! | `shutdown` | none; the host unloads everything and exits after answering |
//! | `ping` | none |
//!
//! Records (`fields` in order; numbers in decimal; durations in nanoseconds):
//!
//! * `module` name size state pinned_reason used_by(comma-separated) version path posted
//!   invoked pending late
//! * `unload` name mode outcome pinned_reason total_ns barrier_rounds domains_barriered
//!   posted invoked late refused_after_stop hooks timers threads
//! * `step` name duration_ns
//! * `expedite` rounds grace_periods threads_forced threads_boosted boosts_denied
//!   callbacks_inline
//! * `hook` name module
//! * `stat` key value
//!
//! Error kinds: `not_loaded`, `in_use`, `busy` (coming or going: retrying may succeed),
//! `not_live` (pinned), `load`, `reload`, `usage`, `denied` (peer credential refused),
//! `internal`. The message is the complete kmod-style text (without the `rcumod: ` prefix).

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};

/// Longest request or record line accepted, in bytes (the terminating LF excluded).
pub const MAX_LINE: usize = 64 * 1024;

/// The socket path: `explicit` if given, else `$RCUMOD_SOCKET`, else
/// `$XDG_RUNTIME_DIR/rcumod.sock` (a per-user 0700 directory), else `/tmp/rcumod-$UID.sock`.
pub fn socket_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    if let Some(p) = std::env::var_os("RCUMOD_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Path::new(&d).join("rcumod.sock");
    }
    PathBuf::from(format!("/tmp/rcumod-{}.sock", effective_uid()))
}

/// This process's effective uid.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Escape one field.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// Undo [`escape`]. A backslash before any other character, or at the end, is an error.
pub fn unescape(s: &str) -> Result<String, ProtocolError> {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('\\') => out.push('\\'),
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            other => {
                return Err(ProtocolError(format!(
                    "bad escape `\\{}` in field",
                    other.map(String::from).unwrap_or_default()
                )))
            }
        }
    }
    Ok(out)
}

/// Join fields into one line (without the LF).
pub fn encode_line<S: AsRef<str>>(fields: &[S]) -> String {
    fields
        .iter()
        .map(|f| escape(f.as_ref()))
        .collect::<Vec<_>>()
        .join("\t")
}

/// Split one line (without its LF) into fields.
pub fn decode_line(line: &str) -> Result<Vec<String>, ProtocolError> {
    line.split('\t').map(unescape).collect()
}

/// A malformed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// Read one line of at most [`MAX_LINE`] bytes; `Ok(None)` at end of stream.
pub fn read_line(r: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = r
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_LINE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("line longer than {MAX_LINE} bytes"),
        ));
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "line is not UTF-8"))
}

/// Unload mode on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `normal`
    Normal,
    /// `expedited`
    Expedited,
}

impl Mode {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::Expedited => "expedited",
        }
    }

    fn parse(s: &str) -> Result<Mode, ProtocolError> {
        match s {
            "normal" => Ok(Mode::Normal),
            "expedited" => Ok(Mode::Expedited),
            _ => Err(ProtocolError(format!("unknown unload mode `{s}`"))),
        }
    }
}

/// A request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Load a module file with `name=value` parameters.
    Insmod {
        /// Absolute path of the module file (as the host sees it).
        path: String,
        /// `name=value` strings.
        params: Vec<String>,
    },
    /// Unload a module.
    Rmmod {
        /// Module name.
        name: String,
        /// How.
        mode: Mode,
    },
    /// Replace a live module by a new file.
    Reload {
        /// Module name.
        name: String,
        /// The new file.
        path: String,
        /// How to retire the old version.
        mode: Mode,
        /// `name=value` strings.
        params: Vec<String>,
    },
    /// List modules.
    Lsmod,
    /// List hooks.
    Hooks,
    /// Unload everything and exit.
    Shutdown,
    /// Liveness check.
    Ping,
}

impl Request {
    /// The request line (without LF).
    pub fn encode(&self) -> String {
        let mut f: Vec<String> = Vec::new();
        match self {
            Request::Insmod { path, params } => {
                f.push("insmod".into());
                f.push(path.clone());
                f.extend(params.iter().cloned());
            }
            Request::Rmmod { name, mode } => {
                f.extend(["rmmod".into(), name.clone(), mode.as_str().into()]);
            }
            Request::Reload {
                name,
                path,
                mode,
                params,
            } => {
                f.extend([
                    "reload".into(),
                    name.clone(),
                    path.clone(),
                    mode.as_str().into(),
                ]);
                f.extend(params.iter().cloned());
            }
            Request::Lsmod => f.push("lsmod".into()),
            Request::Hooks => f.push("hooks".into()),
            Request::Shutdown => f.push("shutdown".into()),
            Request::Ping => f.push("ping".into()),
        }
        encode_line(&f)
    }

    /// Parse a request line.
    pub fn decode(line: &str) -> Result<Request, ProtocolError> {
        let f = decode_line(line)?;
        let arity = |n: usize| -> Result<(), ProtocolError> {
            if f.len() == n {
                Ok(())
            } else {
                Err(ProtocolError(format!(
                    "`{}` takes {} field(s), got {}",
                    f[0],
                    n - 1,
                    f.len() - 1
                )))
            }
        };
        match f[0].as_str() {
            "insmod" if f.len() >= 2 => Ok(Request::Insmod {
                path: f[1].clone(),
                params: f[2..].to_vec(),
            }),
            "rmmod" => {
                arity(3)?;
                Ok(Request::Rmmod {
                    name: f[1].clone(),
                    mode: Mode::parse(&f[2])?,
                })
            }
            "reload" if f.len() >= 4 => Ok(Request::Reload {
                name: f[1].clone(),
                path: f[2].clone(),
                mode: Mode::parse(&f[3])?,
                params: f[4..].to_vec(),
            }),
            "lsmod" => arity(1).map(|_| Request::Lsmod),
            "hooks" => arity(1).map(|_| Request::Hooks),
            "shutdown" => arity(1).map(|_| Request::Shutdown),
            "ping" => arity(1).map(|_| Request::Ping),
            "insmod" | "reload" => Err(ProtocolError(format!("`{}`: missing fields", f[0]))),
            other => Err(ProtocolError(format!("unknown request `{other}`"))),
        }
    }
}

/// Why a request failed (the `kind` of an `err` status line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such module.
    NotLoaded,
    /// Other modules depend on it.
    InUse,
    /// Coming or going: a retry may succeed.
    Busy,
    /// Pinned or otherwise not live.
    NotLive,
    /// A load failed.
    Load,
    /// A reload failed.
    Reload,
    /// A malformed request.
    Usage,
    /// The peer's credentials were refused.
    Denied,
    /// Anything else.
    Internal,
}

impl ErrorKind {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotLoaded => "not_loaded",
            ErrorKind::InUse => "in_use",
            ErrorKind::Busy => "busy",
            ErrorKind::NotLive => "not_live",
            ErrorKind::Load => "load",
            ErrorKind::Reload => "reload",
            ErrorKind::Usage => "usage",
            ErrorKind::Denied => "denied",
            ErrorKind::Internal => "internal",
        }
    }

    /// Parse a wire name (unknown kinds become `Internal`).
    pub fn parse(s: &str) -> ErrorKind {
        match s {
            "not_loaded" => ErrorKind::NotLoaded,
            "in_use" => ErrorKind::InUse,
            "busy" => ErrorKind::Busy,
            "not_live" => ErrorKind::NotLive,
            "load" => ErrorKind::Load,
            "reload" => ErrorKind::Reload,
            "usage" => ErrorKind::Usage,
            "denied" => ErrorKind::Denied,
            _ => ErrorKind::Internal,
        }
    }
}

/// A module, as `lsmod` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleRecord {
    /// Name.
    pub name: String,
    /// Mapped size in bytes.
    pub size: u64,
    /// `Live`, `Loading`, `Unloading` or `Pinned`.
    pub state: String,
    /// Why it is pinned (empty otherwise).
    pub pinned_reason: String,
    /// Modules that depend on it.
    pub used_by: Vec<String>,
    /// `.modinfo` version (empty if none).
    pub version: String,
    /// The file it was loaded from.
    pub path: String,
    /// Callbacks posted.
    pub posted: u64,
    /// Callbacks invoked.
    pub invoked: u64,
    /// Callbacks pending.
    pub pending: u64,
    /// Late callbacks (checked mode).
    pub late: u64,
}

/// What an unload did (a wire form of `module_loader::UnloadReport`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnloadRecord {
    /// Module name.
    pub name: String,
    /// Mode used.
    pub mode: String,
    /// `unloaded` or `pinned`.
    pub outcome: String,
    /// Why it is pinned (empty otherwise).
    pub pinned_reason: String,
    /// Total time, ns.
    pub total_ns: u64,
    /// Barrier rounds.
    pub barrier_rounds: u32,
    /// Domains barriered.
    pub domains_barriered: u32,
    /// Callbacks posted.
    pub posted: u64,
    /// Callbacks invoked.
    pub invoked: u64,
    /// Late callbacks.
    pub late: u64,
    /// Posts refused after stop.
    pub refused_after_stop: u64,
    /// Hooks withdrawn.
    pub hooks: u64,
    /// Timers cancelled.
    pub timers: u64,
    /// Threads stopped.
    pub threads: u64,
    /// Each step: (name, ns).
    pub steps: Vec<(String, u64)>,
    /// The expedited path's work: rounds, grace periods, forced, boosted, denied, inline.
    pub expedite: Option<[u64; 6]>,
}

/// One record line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A module.
    Module(ModuleRecord),
    /// An unload report (its `step` and `expedite` lines folded in).
    Unload(UnloadRecord),
    /// A hook and its module.
    Hook {
        /// Hook name.
        name: String,
        /// Module name.
        module: String,
    },
    /// A statistic.
    Stat {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, ProtocolError> {
    s.parse()
        .map_err(|_| ProtocolError(format!("`{s}` is not a number ({what})")))
}

impl Record {
    /// The record's lines (an unload is several).
    pub fn encode(&self) -> Vec<String> {
        match self {
            Record::Module(m) => vec![encode_line(&[
                "module".to_owned(),
                m.name.clone(),
                m.size.to_string(),
                m.state.clone(),
                m.pinned_reason.clone(),
                m.used_by.join(","),
                m.version.clone(),
                m.path.clone(),
                m.posted.to_string(),
                m.invoked.to_string(),
                m.pending.to_string(),
                m.late.to_string(),
            ])],
            Record::Unload(u) => {
                let mut lines = vec![encode_line(&[
                    "unload".to_owned(),
                    u.name.clone(),
                    u.mode.clone(),
                    u.outcome.clone(),
                    u.pinned_reason.clone(),
                    u.total_ns.to_string(),
                    u.barrier_rounds.to_string(),
                    u.domains_barriered.to_string(),
                    u.posted.to_string(),
                    u.invoked.to_string(),
                    u.late.to_string(),
                    u.refused_after_stop.to_string(),
                    u.hooks.to_string(),
                    u.timers.to_string(),
                    u.threads.to_string(),
                ])];
                for (s, ns) in &u.steps {
                    lines.push(encode_line(&["step".to_owned(), s.clone(), ns.to_string()]));
                }
                if let Some(e) = u.expedite {
                    let mut f = vec!["expedite".to_owned()];
                    f.extend(e.iter().map(u64::to_string));
                    lines.push(encode_line(&f));
                }
                lines
            }
            Record::Hook { name, module } => {
                vec![encode_line(&["hook", name.as_str(), module.as_str()])]
            }
            Record::Stat { key, value } => {
                vec![encode_line(&["stat", key.as_str(), value.as_str()])]
            }
        }
    }
}

/// A complete answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The records, in order.
    pub records: Vec<Record>,
    /// `Ok` or the error kind and message.
    pub status: Result<(), (ErrorKind, String)>,
}

impl Response {
    /// A successful answer.
    pub fn ok(records: Vec<Record>) -> Response {
        Response {
            records,
            status: Ok(()),
        }
    }

    /// A failed answer.
    pub fn err(kind: ErrorKind, message: impl Into<String>) -> Response {
        Response {
            records: Vec::new(),
            status: Err((kind, message.into())),
        }
    }

    /// Write the answer.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let mut out = String::new();
        for r in &self.records {
            for line in r.encode() {
                out.push_str(&line);
                out.push('\n');
            }
        }
        match &self.status {
            Ok(()) => out.push_str("ok\n"),
            Err((kind, msg)) => {
                out.push_str(&encode_line(&["err", kind.as_str(), msg.as_str()]));
                out.push('\n');
            }
        }
        w.write_all(out.as_bytes())?;
        w.flush()
    }

    /// Read an answer up to and including its status line.
    pub fn read_from(r: &mut impl BufRead) -> Result<Response, ProtocolError> {
        let mut records: Vec<Record> = Vec::new();
        loop {
            let line = read_line(r)
                .map_err(|e| ProtocolError(format!("reading the answer: {e}")))?
                .ok_or_else(|| {
                    ProtocolError("the host closed the connection without a status line".into())
                })?;
            let f = decode_line(&line)?;
            let want = |n: usize| -> Result<(), ProtocolError> {
                if f.len() == n {
                    Ok(())
                } else {
                    Err(ProtocolError(format!(
                        "`{}` record has {} fields, expected {}",
                        f[0],
                        f.len() - 1,
                        n - 1
                    )))
                }
            };
            match f[0].as_str() {
                "ok" => {
                    return Ok(Response {
                        records,
                        status: Ok(()),
                    })
                }
                "err" => {
                    want(3)?;
                    return Ok(Response {
                        records,
                        status: Err((ErrorKind::parse(&f[1]), f[2].clone())),
                    });
                }
                "module" => {
                    want(12)?;
                    records.push(Record::Module(ModuleRecord {
                        name: f[1].clone(),
                        size: num(&f[2], "size")?,
                        state: f[3].clone(),
                        pinned_reason: f[4].clone(),
                        used_by: f[5]
                            .split(',')
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect(),
                        version: f[6].clone(),
                        path: f[7].clone(),
                        posted: num(&f[8], "posted")?,
                        invoked: num(&f[9], "invoked")?,
                        pending: num(&f[10], "pending")?,
                        late: num(&f[11], "late")?,
                    }));
                }
                "unload" => {
                    want(15)?;
                    records.push(Record::Unload(UnloadRecord {
                        name: f[1].clone(),
                        mode: f[2].clone(),
                        outcome: f[3].clone(),
                        pinned_reason: f[4].clone(),
                        total_ns: num(&f[5], "total")?,
                        barrier_rounds: num(&f[6], "barrier rounds")?,
                        domains_barriered: num(&f[7], "domains")?,
                        posted: num(&f[8], "posted")?,
                        invoked: num(&f[9], "invoked")?,
                        late: num(&f[10], "late")?,
                        refused_after_stop: num(&f[11], "refused")?,
                        hooks: num(&f[12], "hooks")?,
                        timers: num(&f[13], "timers")?,
                        threads: num(&f[14], "threads")?,
                        steps: Vec::new(),
                        expedite: None,
                    }));
                }
                "step" | "expedite" => {
                    let Some(Record::Unload(u)) = records.last_mut() else {
                        return Err(ProtocolError(format!("`{}` outside an unload", f[0])));
                    };
                    if f[0] == "step" {
                        want(3)?;
                        u.steps.push((f[1].clone(), num(&f[2], "step")?));
                    } else {
                        want(7)?;
                        let mut e = [0u64; 6];
                        for (i, v) in e.iter_mut().enumerate() {
                            *v = num(&f[i + 1], "expedite")?;
                        }
                        u.expedite = Some(e);
                    }
                }
                "hook" => {
                    want(3)?;
                    records.push(Record::Hook {
                        name: f[1].clone(),
                        module: f[2].clone(),
                    });
                }
                "stat" => {
                    want(3)?;
                    records.push(Record::Stat {
                        key: f[1].clone(),
                        value: f[2].clone(),
                    });
                }
                other => return Err(ProtocolError(format!("unknown record `{other}`"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_round_trip() {
        for s in ["", "plain", "a\tb\nc\\d\re", "\\t", "/tmp/with space/ü.so"] {
            assert_eq!(unescape(&escape(s)).unwrap(), s);
            assert!(!escape(s).contains('\t') && !escape(s).contains('\n'));
        }
        assert!(unescape("bad\\x").is_err());
        assert!(unescape("bad\\").is_err());
    }

    #[test]
    fn requests_round_trip() {
        let reqs = [
            Request::Insmod {
                path: "/a b/\tx.so".into(),
                params: vec!["count=3".into(), "s=a\nb".into()],
            },
            Request::Rmmod {
                name: "m".into(),
                mode: Mode::Expedited,
            },
            Request::Reload {
                name: "m".into(),
                path: "/p".into(),
                mode: Mode::Normal,
                params: vec![],
            },
            Request::Lsmod,
            Request::Hooks,
            Request::Shutdown,
            Request::Ping,
        ];
        for r in reqs {
            assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        }
        assert!(Request::decode("rmmod\tx").is_err());
        assert!(Request::decode("frobnicate").is_err());
    }

    #[test]
    fn responses_round_trip() {
        let resp = Response::ok(vec![
            Record::Module(ModuleRecord {
                name: "rcu_list".into(),
                size: 12,
                state: "Live".into(),
                used_by: vec!["a".into(), "b".into()],
                ..Default::default()
            }),
            Record::Unload(UnloadRecord {
                name: "rcu_list".into(),
                mode: "expedited".into(),
                outcome: "unloaded".into(),
                steps: vec![("Unpublish".into(), 5), ("Close".into(), 7)],
                expedite: Some([1, 2, 3, 4, 5, 6]),
                ..Default::default()
            }),
            Record::Hook {
                name: "h".into(),
                module: "m".into(),
            },
            Record::Stat {
                key: "k".into(),
                value: "v".into(),
            },
        ]);
        let mut buf = Vec::new();
        resp.write_to(&mut buf).unwrap();
        let back = Response::read_from(&mut &buf[..]).unwrap();
        assert_eq!(back, resp);

        let e = Response::err(ErrorKind::InUse, "ERROR: Module a is in use by: b\nsecond");
        let mut buf = Vec::new();
        e.write_to(&mut buf).unwrap();
        assert_eq!(Response::read_from(&mut &buf[..]).unwrap(), e);
        assert!(Response::read_from(&mut &b"module\tx\n"[..]).is_err());
    }
}
