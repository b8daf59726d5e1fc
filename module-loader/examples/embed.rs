//! An application embedding the rcumod host: it loads a plugin, calls its hook from worker
//! threads under RCU while hot-reloading it, and unloads it by the protocol, printing what each
//! step did. Only `module-loader` is linked, none of the CLI's crates.
//!
//! ```sh
//! cargo build -p rcu_list && cargo run -p module-loader --example embed -- target/debug/librcu_list.so
//! ```

use module_loader::{Host, HostEvent, UnloadMode, UnloadOutcome};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let plugin: PathBuf = std::env::args_os()
        .nth(1)
        .map(Into::into)
        .ok_or("usage: embed PATH/TO/librcu_list.so")?;

    let host = Arc::new(Host::builder().build()?);
    let events = host.subscribe();

    // What the file is, without running any of it.
    let info = host.inspect(&plugin)?;
    println!(
        "{} {} ({} bytes, abi {}.{})",
        info.modinfo.name,
        info.modinfo.version.as_deref().unwrap_or("?"),
        info.size,
        info.modinfo.abi.0,
        info.modinfo.abi.1
    );

    let m = host.load(&plugin, &[("count".into(), "16".into())])?;
    println!("loaded {} ({}), {} bytes mapped", m.name, m.state, m.size);

    // Application threads call the plugin's hook under RCU: no lock, never blocked by reloads.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (host, stop, calls) = (host.clone(), stop.clone(), calls.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if host.call_hook("rcu_list.len", 0).is_some() {
                        calls.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(50));
    let (new, old) = host.reload(
        "rcu_list",
        &plugin,
        &[("count".into(), "32".into())],
        UnloadMode::Expedited,
    )?;
    println!(
        "reloaded: new version {}, old version {} in {:?}",
        new.state, old.outcome, old.total
    );
    std::thread::sleep(Duration::from_millis(50));

    let report = host.unload("rcu_list", UnloadMode::Normal)?;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    for s in &report.steps {
        println!("  {:?}: {:?}", s.step, s.duration);
    }
    println!(
        "callbacks posted {}, invoked {}; {} hook calls by the application",
        report.callbacks.posted,
        report.callbacks.invoked,
        calls.load(Ordering::Relaxed)
    );
    match report.outcome {
        UnloadOutcome::Unloaded => println!("unloaded: verified unmapped"),
        UnloadOutcome::Pinned { reason } => println!("pinned: {reason}"),
    }
    for e in events.try_iter() {
        if let HostEvent::LoadFailed { path, error } = e {
            eprintln!("{}: {error}", path.display());
        }
    }
    Ok(())
}
