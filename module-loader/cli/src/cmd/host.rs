//! `rcumod host`: a long-running module host controlled over a Unix socket.
//!
//! The process owns one [`Host`] and `--readers` worker threads that call every published
//! hook in a loop (each call inside the host's read section, through `Host::call_hook`), so
//! modules are always loaded, reloaded and unloaded under concurrent readers. Clients
//! (`rcumod insmod`, `rmmod`, `lsmod`, `reload`, `hooks`, `shutdown`) send one request per
//! connection (`protocol`).
//!
//! Loading a module is running code, so the socket is guarded twice: it is created mode 0600
//! (umask 0177 around `bind`, then `chmod`), and every accepted connection's peer uid, read
//! with `SO_PEERCRED`, must be the host's own ([`authorized`]; root is refused too unless the
//! host runs as root). Refusals are answered with `err denied` and logged. A socket file left
//! by a host that died is removed only if it is ours, is a socket, and nothing listens on it.
//!
//! SIGINT/SIGTERM or `rcumod shutdown` stop it cleanly: readers stop, every module is
//! unloaded by the protocol, the socket file is removed.

use crate::cli::HostArgs;
use crate::protocol::{
    self, ErrorKind, Mode, ModuleRecord, Record, Request, Response, UnloadRecord,
};
use module_loader::inspect::InspectPolicy;
use module_loader::{
    parse_params, Host, HostEvent, LoadError, ModuleInfo, ModuleState, ReloadError, UnloadError,
    UnloadMode, UnloadOutcome, UnloadReport,
};
use std::io::{self, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Most connections served at once; more are answered `busy`.
const MAX_CONNECTIONS: usize = 16;
/// How long a client may take to send its request.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Set by SIGINT/SIGTERM.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    SIGNALLED.store(true, Ordering::SeqCst);
}

/// May a peer with uid `peer_uid` control a host running as `host_uid`? Only the host's own
/// user may: loading a module runs its code with the host's privileges. Root is not special:
/// a root peer is refused by a non-root host (it would be code from another user running in
/// this process), and a root host accepts only root.
pub fn authorized(peer_uid: u32, host_uid: u32) -> bool {
    peer_uid == host_uid
}

/// A connection peer's credentials, as the kernel recorded them at `connect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCred {
    /// Process id.
    pub pid: i32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Read the peer credentials of a connected Unix stream socket (`SO_PEERCRED`).
pub fn peer_cred(stream: &UnixStream) -> io::Result<PeerCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the fd is a valid socket owned by `stream` for the duration of the call; `cred`
    // is a writable `ucred` and `len` holds its exact size, as SO_PEERCRED requires.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<libc::ucred>() {
        return Err(io::Error::other(format!(
            "SO_PEERCRED returned {len} bytes, expected {}",
            std::mem::size_of::<libc::ucred>()
        )));
    }
    Ok(PeerCred {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// Why the socket could not be set up.
fn socket_error(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("socket {}: {what}", path.display()))
}

/// Remove `path` if it is a stale socket of ours (nothing listening); refuse anything else.
fn clear_stale(path: &Path) -> io::Result<()> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(socket_error(path, e)),
    };
    if !md.file_type().is_socket() {
        return Err(socket_error(
            path,
            "exists and is not a socket; not removing it",
        ));
    }
    let me = protocol::effective_uid();
    if md.uid() != me {
        return Err(socket_error(
            path,
            format!(
                "exists and belongs to uid {}, not to this user (uid {me}); not removing it",
                md.uid()
            ),
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(socket_error(
            path,
            "another host is already listening on it",
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).map_err(|e| socket_error(path, e))?;
            tracing::info!(target: "rcumod", socket = %path.display(), "removed a stale socket (nothing was listening on it)");
            Ok(())
        }
        Err(e) => Err(socket_error(
            path,
            format!("exists, and probing it failed: {e}"),
        )),
    }
}

/// Create the listening socket with mode 0600.
pub fn listen(path: &Path) -> io::Result<UnixListener> {
    clear_stale(path)?;
    // The socket file is created by bind() with mode 0777 & ~umask: make it 0600 from the
    // start, so there is no window in which another user could connect.
    // SAFETY: umask has no preconditions; it is process-wide, and no other thread of this
    // process creates files while the host starts (readers are started afterwards).
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above; restores the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|e| socket_error(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| socket_error(path, e))?;
    Ok(listener)
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler only
        // stores to an atomic, which is async-signal-safe; `sig` is a valid catchable signal.
        // SA_RESETHAND: a second signal (while the clean shutdown runs) kills as usual.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// State shared by the accept loop, the connection threads and the readers.
struct Shared {
    host: Host,
    stop: AtomicBool,
    /// Stops the event logger (after the final unloads, whose events it should still log).
    events_stop: AtomicBool,
    reader_calls: AtomicU64,
    connections: AtomicUsize,
}

/// Run the host until shutdown; returns the exit status.
pub fn run(args: &HostArgs) -> u8 {
    let path = protocol::socket_path(args.socket.socket.as_deref());
    match serve(args, &path) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rcumod: ERROR: {e}");
            1
        }
    }
}

fn serve(args: &HostArgs, path: &Path) -> io::Result<()> {
    let policy = InspectPolicy {
        allow_pinned: args.allow_pinned,
        allow_search_paths: args.allow_search_paths,
        ..InspectPolicy::default()
    };
    let host = Host::builder()
        .checked(args.checked)
        .policy(policy)
        .reuse_unchanged_files(!args.reread_unchanged)
        .exit_deadline(Duration::from_millis(args.exit_deadline))
        .build()
        .map_err(|e| io::Error::other(format!("cannot create the host: {e}")))?;
    let listener = listen(path)?;
    let shared = Arc::new(Shared {
        host,
        stop: AtomicBool::new(false),
        events_stop: AtomicBool::new(false),
        reader_calls: AtomicU64::new(0),
        connections: AtomicUsize::new(0),
    });
    install_signal_handlers();
    let uid = protocol::effective_uid();
    tracing::info!(
        target: "rcumod",
        socket = %path.display(),
        pid = std::process::id(),
        uid,
        readers = args.readers,
        checked = args.checked,
        "host listening"
    );

    let events = spawn_event_logger(&shared);
    let readers: Vec<JoinHandle<()>> = (0..args.readers)
        .map(|i| spawn_reader(&shared, i, Duration::from_micros(args.read_pause_us)))
        .collect();

    let result = accept_loop(&shared, &listener, uid);

    // Shutdown: no new connections; finish the ones in progress; stop readers; unload all.
    drop(listener);
    let _ = std::fs::remove_file(path);
    shared.stop.store(true, Ordering::SeqCst);
    for r in readers {
        let _ = r.join();
    }
    while shared.connections.load(Ordering::SeqCst) > 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let reports = shared.host.unload_all(UnloadMode::Normal);
    for r in &reports {
        tracing::info!(target: "rcumod", module = %r.name, outcome = %r.outcome, "unloaded at shutdown");
    }
    shared.events_stop.store(true, Ordering::SeqCst);
    let _ = events.join();
    tracing::info!(
        target: "rcumod",
        reader_calls = shared.reader_calls.load(Ordering::Relaxed),
        "host stopped"
    );
    result
}

fn accept_loop(shared: &Arc<Shared>, listener: &UnixListener, uid: u32) -> io::Result<()> {
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            tracing::info!(target: "rcumod", "shutdown requested");
            return Ok(());
        }
        if SIGNALLED.load(Ordering::SeqCst) {
            tracing::info!(target: "rcumod", "signal received; shutting down");
            return Ok(());
        }
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for a listening socket owned by `listener`; 200 ms timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 200) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            continue;
        }
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(target: "rcumod", error = %e, "accept failed");
                continue;
            }
        };
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
        let cred = match peer_cred(&stream) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(target: "rcumod", error = %e, "refused a connection: cannot read its peer credentials");
                let _ = Response::err(
                    ErrorKind::Denied,
                    format!("permission denied: cannot read the peer credentials: {e}"),
                )
                .write_to(&mut &stream);
                continue;
            }
        };
        if !authorized(cred.uid, uid) {
            tracing::warn!(
                target: "rcumod",
                peer_uid = cred.uid,
                peer_gid = cred.gid,
                peer_pid = cred.pid,
                host_uid = uid,
                "refused a connection from uid {}: only uid {uid} may control this host",
                cred.uid
            );
            let _ = Response::err(
                ErrorKind::Denied,
                format!(
                    "permission denied: this host (uid {uid}) accepts requests only from its own \
                     user, not from uid {}",
                    cred.uid
                ),
            )
            .write_to(&mut &stream);
            continue;
        }
        if shared.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
            let _ = Response::err(ErrorKind::Busy, "the host is busy; try again")
                .write_to(&mut &stream);
            continue;
        }
        let sh = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("rcumod-conn".into())
            .spawn(move || {
                serve_connection(&sh, stream, cred);
                sh.connections.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(target: "rcumod", error = %e, "cannot start a connection thread");
        }
    }
}

fn serve_connection(shared: &Shared, stream: UnixStream, cred: PeerCred) {
    let mut reader = BufReader::new(&stream);
    let response = match protocol::read_line(&mut reader) {
        Ok(Some(line)) => match Request::decode(&line) {
            Ok(req) => {
                tracing::debug!(target: "rcumod", peer_pid = cred.pid, request = %line, "request");
                handle(shared, req, cred)
            }
            Err(e) => Response::err(ErrorKind::Usage, e.to_string()),
        },
        Ok(None) => return,
        Err(e) => Response::err(ErrorKind::Usage, format!("reading the request: {e}")),
    };
    if let Err(e) = response.write_to(&mut &stream) {
        tracing::debug!(target: "rcumod", error = %e, "client went away before the answer");
    }
}

fn mode(m: Mode) -> UnloadMode {
    match m {
        Mode::Normal => UnloadMode::Normal,
        Mode::Expedited => UnloadMode::Expedited,
    }
}

/// "could not insert module FILE: reason", with FILE the path as the client sent it (the
/// library names some errors by module name instead; the reason is kept word for word).
pub fn insert_message(file: &str, e: &LoadError) -> String {
    let full = e.to_string();
    let prefix = match e {
        LoadError::Inspect { path, .. }
        | LoadError::Copy { path, .. }
        | LoadError::DlOpen { path, .. }
        | LoadError::Descriptor { path, .. } => {
            Some(format!("could not insert module {}: ", path.display()))
        }
        LoadError::AlreadyLoaded { name }
        | LoadError::MissingDependency { name, .. }
        | LoadError::UnknownParameter { name, .. }
        | LoadError::InvalidParameter { name, .. }
        | LoadError::InitFailed { name, .. } => Some(format!("could not insert module {name}: ")),
        _ => None,
    };
    let reason = prefix
        .and_then(|p| full.strip_prefix(&p).map(str::to_owned))
        .unwrap_or(full);
    format!("could not insert module {file}: {reason}")
}

fn unload_error(e: &UnloadError) -> Response {
    let kind = match e {
        UnloadError::NotLoaded { .. } => ErrorKind::NotLoaded,
        UnloadError::InUse { .. } => ErrorKind::InUse,
        UnloadError::NotLive { state, .. } if state != "Pinned" => ErrorKind::Busy,
        _ => ErrorKind::NotLive,
    };
    Response::err(kind, e.to_string())
}

fn handle(shared: &Shared, req: Request, cred: PeerCred) -> Response {
    let host = &shared.host;
    match req {
        Request::Ping => Response::ok(Vec::new()),
        Request::Lsmod => Response::ok(
            host.list()
                .iter()
                .map(|m| Record::Module(module_record(m)))
                .collect(),
        ),
        Request::Hooks => {
            let mut recs: Vec<Record> = host
                .hooks()
                .into_iter()
                .map(|(name, module)| Record::Hook { name, module })
                .collect();
            recs.push(Record::Stat {
                key: "reader_calls".into(),
                value: shared.reader_calls.load(Ordering::Relaxed).to_string(),
            });
            Response::ok(recs)
        }
        Request::Shutdown => {
            tracing::info!(target: "rcumod", peer_pid = cred.pid, "shutdown requested by a client");
            shared.stop.store(true, Ordering::SeqCst);
            Response::ok(Vec::new())
        }
        Request::Insmod { path, params } => {
            let params = match parse_params(&params) {
                Ok(p) => p,
                Err(e) => return Response::err(ErrorKind::Usage, insert_message(&path, &e)),
            };
            tracing::info!(target: "rcumod", peer_pid = cred.pid, file = %path, "insmod");
            match host.load(Path::new(&path), &params) {
                Ok(info) => Response::ok(vec![Record::Module(module_record(&info))]),
                Err(e) => Response::err(ErrorKind::Load, insert_message(&path, &e)),
            }
        }
        Request::Rmmod { name, mode: m } => {
            tracing::info!(target: "rcumod", peer_pid = cred.pid, module = %name, mode = m.as_str(), "rmmod");
            match host.unload(&name, mode(m)) {
                Ok(report) => Response::ok(vec![Record::Unload(unload_record(&report))]),
                Err(e) => unload_error(&e),
            }
        }
        Request::Reload {
            name,
            path,
            mode: m,
            params,
        } => {
            let params = match parse_params(&params) {
                Ok(p) => p,
                Err(e) => return Response::err(ErrorKind::Usage, insert_message(&path, &e)),
            };
            tracing::info!(target: "rcumod", peer_pid = cred.pid, module = %name, file = %path, "reload");
            match host.reload(&name, Path::new(&path), &params, mode(m)) {
                Ok((info, report)) => Response::ok(vec![
                    Record::Module(module_record(&info)),
                    Record::Unload(unload_record(&report)),
                ]),
                Err(ReloadError::Unload(e)) => unload_error(&e),
                Err(ReloadError::Load(e)) => {
                    Response::err(ErrorKind::Reload, insert_message(&path, &e))
                }
                Err(e) => Response::err(ErrorKind::Reload, e.to_string()),
            }
        }
    }
}

/// The wire form of a module.
pub fn module_record(m: &ModuleInfo) -> ModuleRecord {
    let pinned_reason = match &m.state {
        ModuleState::Pinned { reason } => reason.clone(),
        _ => String::new(),
    };
    ModuleRecord {
        name: m.name.clone(),
        size: m.size as u64,
        state: m.state.to_string(),
        pinned_reason,
        used_by: m.used_by.clone(),
        version: m.version.clone().unwrap_or_default(),
        path: m.path.display().to_string(),
        posted: m.callbacks.posted,
        invoked: m.callbacks.invoked,
        pending: m.callbacks.pending(),
        late: m.callbacks.late,
    }
}

/// The name of an unload mode.
pub fn mode_name(m: UnloadMode) -> &'static str {
    match m {
        UnloadMode::Normal => "normal",
        UnloadMode::Expedited => "expedited",
        _ => "test-only",
    }
}

/// The wire form of an unload report.
pub fn unload_record(r: &UnloadReport) -> UnloadRecord {
    let (outcome, pinned_reason) = match &r.outcome {
        UnloadOutcome::Unloaded => ("unloaded", String::new()),
        UnloadOutcome::Pinned { reason } => ("pinned", reason.clone()),
    };
    UnloadRecord {
        name: r.name.clone(),
        mode: mode_name(r.mode).into(),
        outcome: outcome.into(),
        pinned_reason,
        total_ns: r.total.as_nanos() as u64,
        barrier_rounds: r.barrier_rounds,
        domains_barriered: r.domains_barriered,
        posted: r.callbacks.posted,
        invoked: r.callbacks.invoked,
        late: r.callbacks.late,
        refused_after_stop: r.callbacks.refused_after_stop,
        hooks: r.hooks_unpublished as u64,
        timers: r.timers_cancelled as u64,
        threads: r.threads_stopped as u64,
        steps: r
            .steps
            .iter()
            .map(|s| (format!("{:?}", s.step), s.duration.as_nanos() as u64))
            .collect(),
        expedite: r.expedite.map(|e| {
            [
                e.rounds.into(),
                e.grace_periods.into(),
                e.threads_forced.into(),
                e.threads_boosted.into(),
                e.boosts_denied.into(),
                e.callbacks_inline,
            ]
        }),
    }
}

/// A reader worker: until `stop`, call every published hook (each call inside the host's
/// read section, through `Host::call_hook`), refreshing the hook list every 64 passes;
/// successful calls are added to `calls`. Sleeps 1 ms when no hook is published, and `pause`
/// between passes.
pub fn hook_reader(host: &Host, stop: &AtomicBool, calls: &AtomicU64, pause: Duration) {
    // Readers are also where signal hooks run (the profiler's SIGPROF): the host's handler
    // enters the process domain with try_read_lock, which needs the thread registered.
    rcu_core::Rcu::global().register_thread();
    let mut names: Vec<String> = Vec::new();
    let (mut pass, mut local) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        if pass % 64 == 0 || names.is_empty() {
            names = host.hooks().into_iter().map(|(h, _)| h).collect();
        }
        pass += 1;
        if names.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        for h in &names {
            if host.call_hook(h, pass).is_some() {
                local += 1;
            }
        }
        if local >= 4096 {
            calls.fetch_add(local, Ordering::Relaxed);
            local = 0;
        }
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    calls.fetch_add(local, Ordering::Relaxed);
}

fn spawn_reader(shared: &Arc<Shared>, i: usize, pause: Duration) -> JoinHandle<()> {
    let sh = Arc::clone(shared);
    std::thread::Builder::new()
        .name(format!("rcumod-reader{i}"))
        .spawn(move || hook_reader(&sh.host, &sh.stop, &sh.reader_calls, pause))
        .expect("spawn a reader thread")
}

fn spawn_event_logger(shared: &Arc<Shared>) -> JoinHandle<()> {
    let sh = Arc::clone(shared);
    let rx = shared.host.subscribe();
    std::thread::Builder::new()
        .name("rcumod-events".into())
        .spawn(move || loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(HostEvent::LateCallback { name }) => {
                    tracing::error!(target: "rcumod", module = %name, "late callback: its module was already unmapped")
                }
                Ok(HostEvent::LoadFailed { path, error }) => {
                    tracing::warn!(target: "rcumod", file = %path.display(), "load failed: {error}")
                }
                Ok(HostEvent::Reloaded { name }) => {
                    tracing::info!(target: "rcumod", module = %name, "module reloaded")
                }
                Ok(_) => {}
                Err(_) if sh.events_stop.load(Ordering::Relaxed) => return,
                Err(_) => {}
            }
        })
        .expect("spawn the event thread")
}
