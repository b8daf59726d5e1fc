//! The clients of `rcumod host`: `insmod`, `rmmod`, `lsmod`, `reload`, `hooks`, `shutdown`.
//!
//! Each sends one request over the host's socket (`protocol`) and prints the answer in kmod's
//! style: errors on stderr as `rcumod: ERROR: …` with exit status 1, `lsmod` as kmod's
//! `Module  Size  Used by` table plus a State column. `rmmod --wait MSEC` retries a module
//! that is in use (or still loading/unloading) with exponential backoff until MSEC elapse, as
//! `modprobe -r --wait` does.

use crate::cli::{InsmodArgs, LsmodArgs, ReloadArgs, RmmodArgs, SocketArg};
use crate::output::{human, Align, Json, Table};
use crate::protocol::{
    self, ErrorKind, Mode, ModuleRecord, Record, Request, Response, UnloadRecord,
};
use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a client waits for an answer (an unload may wait for module threads and
/// barriers).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

/// Print an error in kmod's form (`rcumod: ERROR: …`).
pub fn print_error(msg: &str) {
    if msg.starts_with("ERROR:") {
        eprintln!("rcumod: {msg}");
    } else {
        eprintln!("rcumod: ERROR: {msg}");
    }
}

/// Send `req` to the host at `socket` and read its answer.
pub fn request(socket: &Path, req: &Request) -> Result<Response, String> {
    let stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach the rcumod host at {}: {e} (is `rcumod host` running?)",
            socket.display()
        )
    })?;
    let _ = stream.set_read_timeout(Some(ANSWER_TIMEOUT));
    let mut line = req.encode();
    line.push('\n');
    std::io::Write::write_all(&mut &stream, line.as_bytes())
        .map_err(|e| format!("sending the request to {}: {e}", socket.display()))?;
    Response::read_from(&mut BufReader::new(&stream)).map_err(|e| e.to_string())
}

fn socket(s: &SocketArg) -> PathBuf {
    protocol::socket_path(s.socket.as_deref())
}

/// Send and report transport or request errors; `Some(records)` on success.
fn call(s: &SocketArg, req: &Request) -> Result<Vec<Record>, u8> {
    match request(&socket(s), req) {
        Ok(Response {
            records,
            status: Ok(()),
        }) => Ok(records),
        Ok(Response {
            status: Err((_, msg)),
            ..
        }) => {
            print_error(&msg);
            Err(1)
        }
        Err(e) => {
            print_error(&e);
            Err(1)
        }
    }
}

/// The absolute form of a path given on the command line (the host has another cwd).
fn absolute(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_owned())
        .display()
        .to_string()
}

/// `insmod FILE [param=value…]`: silent on success, as kmod's insmod (`-v` says what loaded).
pub fn insmod(a: &InsmodArgs, verbose: u8) -> u8 {
    let req = Request::Insmod {
        path: absolute(&a.file),
        params: a.params.clone(),
    };
    match call(&a.socket, &req) {
        Ok(recs) => {
            if verbose > 0 {
                for r in recs {
                    if let Record::Module(m) = r {
                        println!("inserted {} ({} bytes, {})", m.name, m.size, m.state);
                    }
                }
            }
            0
        }
        Err(code) => code,
    }
}

/// One line for an unload outcome: `NAME: Unloaded (mode, time)` or `NAME: Pinned: reason`.
pub fn outcome_line(u: &UnloadRecord) -> String {
    if u.outcome == "unloaded" {
        format!(
            "{}: Unloaded ({}, {})",
            u.name,
            u.mode,
            human(Duration::from_nanos(u.total_ns))
        )
    } else {
        format!("{}: Pinned: {}", u.name, u.pinned_reason)
    }
}

/// The `-v` detail of an unload: step timings and counts.
pub fn report_detail(u: &UnloadRecord) -> String {
    let mut t = Table::new(&[("  step", Align::Left), ("time", Align::Right)]);
    for (s, ns) in &u.steps {
        t.row(vec![format!("  {s}"), human(Duration::from_nanos(*ns))]);
    }
    t.row(vec![
        "  total".into(),
        human(Duration::from_nanos(u.total_ns)),
    ]);
    let mut out = t.render(&[]);
    out.push_str(&format!(
        "  barrier: {} round(s) over {} domain(s)\n",
        u.barrier_rounds, u.domains_barriered
    ));
    out.push_str(&format!(
        "  callbacks: posted {}, invoked {}, late {}, refused after stop {}\n",
        u.posted, u.invoked, u.late, u.refused_after_stop
    ));
    out.push_str(&format!(
        "  withdrawn: {} hook(s), {} timer(s), {} thread(s)\n",
        u.hooks, u.timers, u.threads
    ));
    if let Some([rounds, gps, forced, boosted, denied, inline]) = u.expedite {
        out.push_str(&format!(
            "  expedited: {rounds} round(s), {gps} grace period(s), {forced} thread(s) forced, \
             {boosted} boosted, {denied} boost(s) denied, {inline} callback(s) invoked inline\n"
        ));
    }
    out
}

/// `rmmod NAME… [--expedite] [--wait MSEC]`.
pub fn rmmod(a: &RmmodArgs, verbose: u8) -> u8 {
    let mode = if a.expedite {
        Mode::Expedited
    } else {
        Mode::Normal
    };
    let path = socket(&a.socket);
    let mut status = 0;
    for name in &a.names {
        let req = Request::Rmmod {
            name: name.clone(),
            mode,
        };
        let deadline = a.wait.map(|ms| Instant::now() + Duration::from_millis(ms));
        let mut backoff = Duration::from_millis(10);
        loop {
            match request(&path, &req) {
                Ok(Response {
                    records,
                    status: Ok(()),
                }) => {
                    for r in records {
                        if let Record::Unload(u) = r {
                            println!("{}", outcome_line(&u));
                            if verbose > 0 {
                                print!("{}", report_detail(&u));
                            }
                        }
                    }
                    break;
                }
                Ok(Response {
                    status: Err((kind, msg)),
                    ..
                }) => {
                    let retry = matches!(kind, ErrorKind::InUse | ErrorKind::Busy);
                    match deadline {
                        Some(d) if retry && Instant::now() < d => {
                            let left = d.saturating_duration_since(Instant::now());
                            std::thread::sleep(backoff.min(left));
                            backoff = (backoff * 2).min(Duration::from_secs(1));
                        }
                        _ => {
                            print_error(&msg);
                            status = 1;
                            break;
                        }
                    }
                }
                Err(e) => {
                    print_error(&e);
                    status = 1;
                    break;
                }
            }
        }
    }
    status
}

/// The State column: `Live`, `Loading`, `Unloading`, or `Pinned: reason`.
fn state_cell(m: &ModuleRecord) -> String {
    if m.pinned_reason.is_empty() {
        m.state.clone()
    } else {
        format!("{}: {}", m.state, m.pinned_reason)
    }
}

/// Render modules as kmod's lsmod does, with a State column.
pub fn lsmod_table(mods: &[ModuleRecord]) -> String {
    let mut t = Table::new(&[
        ("Module", Align::Left),
        ("Size", Align::Right),
        ("Used by", Align::Left),
        ("State", Align::Left),
    ]);
    for m in mods {
        let used = if m.used_by.is_empty() {
            "0".to_owned()
        } else {
            format!("{} {}", m.used_by.len(), m.used_by.join(","))
        };
        t.row(vec![
            m.name.clone(),
            m.size.to_string(),
            used,
            state_cell(m),
        ]);
    }
    t.render(&[19, 8])
}

/// `lsmod [--json]`.
pub fn lsmod(a: &LsmodArgs) -> u8 {
    let recs = match call(&a.socket, &Request::Lsmod) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let mods: Vec<ModuleRecord> = recs
        .into_iter()
        .filter_map(|r| match r {
            Record::Module(m) => Some(m),
            _ => None,
        })
        .collect();
    if a.json {
        let arr: Vec<Json> = mods
            .iter()
            .map(|m| {
                Json::obj()
                    .with("name", m.name.as_str())
                    .with("size", m.size)
                    .with("used_by", m.used_by.clone())
                    .with("state", m.state.as_str())
                    .with(
                        "pinned_reason",
                        (!m.pinned_reason.is_empty()).then(|| m.pinned_reason.clone()),
                    )
                    .with(
                        "version",
                        (!m.version.is_empty()).then(|| m.version.clone()),
                    )
                    .with("path", m.path.as_str())
                    .with(
                        "callbacks",
                        Json::obj()
                            .with("posted", m.posted)
                            .with("invoked", m.invoked)
                            .with("pending", m.pending)
                            .with("late", m.late),
                    )
            })
            .collect();
        println!("{}", Json::Arr(arr));
    } else {
        print!("{}", lsmod_table(&mods));
    }
    0
}

/// `reload NAME FILE [param=value…] [--expedite]`.
pub fn reload(a: &ReloadArgs, verbose: u8) -> u8 {
    let req = Request::Reload {
        name: a.name.clone(),
        path: absolute(&a.file),
        mode: if a.expedite {
            Mode::Expedited
        } else {
            Mode::Normal
        },
        params: a.params.clone(),
    };
    let recs = match call(&a.socket, &req) {
        Ok(r) => r,
        Err(c) => return c,
    };
    for r in recs {
        match r {
            Record::Module(m) => println!("{}: reloaded from {}", m.name, m.path),
            Record::Unload(u) => {
                println!("old version {}", outcome_line(&u));
                if verbose > 0 {
                    print!("{}", report_detail(&u));
                }
            }
            _ => {}
        }
    }
    0
}

/// `hooks`: the published hooks and their modules (`-v`: the readers' call count).
pub fn hooks(s: &SocketArg, verbose: u8) -> u8 {
    let recs = match call(s, &Request::Hooks) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let mut t = Table::new(&[("Hook", Align::Left), ("Module", Align::Left)]);
    let mut stats = Vec::new();
    for r in recs {
        match r {
            Record::Hook { name, module } => t.row(vec![name, module]),
            Record::Stat { key, value } => stats.push((key, value)),
            _ => {}
        }
    }
    print!("{}", t.render(&[19]));
    if verbose > 0 {
        for (k, v) in stats {
            println!("{}: {v}", k.replace('_', " "));
        }
    }
    0
}

/// `shutdown`.
pub fn shutdown(s: &SocketArg) -> u8 {
    match call(s, &Request::Shutdown) {
        Ok(_) => 0,
        Err(c) => c,
    }
}
