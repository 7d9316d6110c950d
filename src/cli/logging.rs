//! `run`'s logging: everything to stderr, the access log (target `access`)
//! with it or to `log.access_log`, in `log.format`. Lines are written by
//! tracing-appender's worker threads, so a request's task never waits on a
//! slow terminal or disk (when a writer falls 128 000 lines behind, new
//! lines are dropped rather than stall the proxy).

use anyhow::Context;
use modgate::access::file::{Reopen, Reopening};
use modgate::config::{LogConfig, LogFormat};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// Keeps the writers running; dropping it flushes them.
pub struct Logging {
    guards: std::sync::Mutex<Vec<WorkerGuard>>,
    access: Option<Reopen>,
}

impl Logging {
    /// Reopens the access log file (after logrotate moved it).
    pub fn reopen(&self) {
        if let Some(access) = &self.access {
            access.reopen();
        }
    }

    /// Writes out what is queued (before exiting at once).
    pub fn flush(&self) {
        let guards = std::mem::take(&mut *self.guards.lock().unwrap_or_else(|p| p.into_inner()));
        drop(guards);
    }
}

type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the global subscriber for `log`.
pub fn init(log: &LogConfig) -> anyhow::Result<Logging> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (stderr, stderr_guard) = tracing_appender::non_blocking(std::io::stderr());
    let mut guards = vec![stderr_guard];
    let to_file = log.access_log.is_some();
    let not_access = filter_fn(move |meta| !(to_file && meta.target() == modgate::access::TARGET));
    let mut layers: Vec<Boxed> = vec![formatted(log.format, stderr, ansi, filter.and(not_access))];
    let mut access = None;
    if let Some(path) = &log.access_log {
        let (file, reopen) = Reopening::open(path)
            .with_context(|| format!("log.access_log: cannot open {}", path.display()))?;
        let (writer, guard) = tracing_appender::non_blocking(file);
        guards.push(guard);
        let only_access = filter_fn(|meta| meta.target() == modgate::access::TARGET);
        layers.push(formatted(log.format, writer, false, only_access));
        access = Some(reopen);
    }
    tracing_subscriber::registry().with(layers).init();
    Ok(Logging {
        guards: std::sync::Mutex::new(guards),
        access,
    })
}

/// A formatting layer in `format` writing to `writer`, behind `filter`.
fn formatted<W, F>(format: LogFormat, writer: W, ansi: bool, filter: F) -> Boxed
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    F: tracing_subscriber::layer::Filter<Registry> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => layer.with_filter(filter).boxed(),
        LogFormat::Json => layer.json().with_filter(filter).boxed(),
    }
}
