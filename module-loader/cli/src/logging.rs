//! Logging setup: `tracing` events go to stderr through `tracing-subscriber`, filtered by
//! `RUST_LOG` (a default level per subcommand otherwise). While `rcumod stress` draws a
//! progress bar, log lines are written through the bar (`ProgressBar::suspend`) so that they
//! do not tear it (loader-anchors.md pitfall 15; console-rs/indicatif#92).

use indicatif::ProgressBar;
use std::io::Write;
use std::sync::{Arc, Mutex};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The filter: `RUST_LOG` if set and valid, else `default` (e.g. `"info"`).
fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
}

/// Install a plain stderr subscriber.
pub fn init_stderr(default: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(default))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Where log lines go while a progress bar may be on screen. Set the bar with
/// [`BarWriter::set`]; until then (and after it is cleared) lines go straight to stderr.
#[derive(Clone, Debug, Default)]
pub struct BarWriter {
    bar: Arc<Mutex<Option<ProgressBar>>>,
}

impl BarWriter {
    /// Route log lines through `bar` (or straight to stderr with `None`).
    pub fn set(&self, bar: Option<ProgressBar>) {
        *self.bar.lock().unwrap_or_else(|e| e.into_inner()) = bar;
    }

    /// Print one line to stderr without tearing the bar.
    pub fn line(&self, text: &str) {
        let mut w = self.make_writer();
        let _ = w.write_all(text.as_bytes());
        let _ = w.write_all(b"\n");
    }

    /// Install a subscriber that writes through this writer.
    pub fn init(&self, default: &str) {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter(default))
            .with_writer(self.clone())
            .try_init();
    }
}

/// One event's bytes, written in one piece when dropped.
#[derive(Debug)]
pub struct BarLine {
    bar: Option<ProgressBar>,
    buf: Vec<u8>,
}

impl Write for BarLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for BarLine {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let buf = std::mem::take(&mut self.buf);
        let emit = move || {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(&buf);
            let _ = e.flush();
        };
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.suspend(emit),
            _ => emit(),
        }
    }
}

impl<'a> MakeWriter<'a> for BarWriter {
    type Writer = BarLine;

    fn make_writer(&'a self) -> BarLine {
        BarLine {
            bar: self.bar.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            buf: Vec::new(),
        }
    }
}
