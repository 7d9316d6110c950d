//! Wiring: turns a [`Config`] and bound listeners into a running proxy,
//! swaps in a new config on reload (listeners that changed re-bound, new
//! connections under the new config, open ones untouched), and drains it on
//! shutdown (stop accepting, let requests and tunnels finish for
//! `proxy.shutdown_grace`, then cut what is left).

mod build;
mod preflight;
mod summary;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use build::{Process, generation};
pub use build::{cache_settings, egress, policy, standalone_cache};
pub use preflight::preflight;
pub use summary::{Started, rows as summary_rows, summary};

use crate::admin::Admin;
use crate::config::Config;
use crate::gomod::GomodError;
use crate::listener::{self, Entry};
use crate::proxy::{AuthFileError, Shared};
use crate::stats::Stats;
use crate::tls::CaError;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    AuthFile(#[from] AuthFileError),
    #[error("local CA: {0}")]
    Ca(#[from] CaError),
    #[error(
        "intercept.ca_dir changed to {0}, which holds no CA: a reload would mint a new CA that no client trusts yet. Make it first with `modgate reload --new-ca` (or `modgate ca init`), have clients trust it, then reload"
    )]
    NewCa(std::path::PathBuf),
    #[error(transparent)]
    Gomod(#[from] GomodError),
    #[error("the cache is not enabled")]
    NoCache,
    #[error("pypi, npm: {0}")]
    Packages(crate::indexed::FrontError),
    #[error("cannot make TLS session tickets: {0}")]
    Tickets(#[from] rustls::Error),
    #[error(transparent)]
    Sys(#[from] crate::sys::SysError),
}

/// A listener bound for a config entry.
pub struct Bound {
    pub entry: Entry,
    /// The address the config names (port 0 stays 0): what a reload compares.
    pub configured: SocketAddr,
    pub listener: TcpListener,
}

/// A listener being served, and how to stop it.
struct Listening {
    entry: Entry,
    configured: SocketAddr,
    addr: SocketAddr,
    stop: CancellationToken,
}

/// A started proxy.
pub struct Running {
    /// The explicit proxy's addresses bound at start (port 0 resolved).
    pub addrs: Vec<SocketAddr>,
    /// Every listener bound at start, explicit and transparent, with what it serves.
    pub bound: Vec<(Entry, SocketAddr)>,
    /// The admin listener's address at start, when there is one.
    pub admin: Option<SocketAddr>,
    pub stats: Arc<Stats>,
    process: Process,
    /// The config's state new connections get.
    current: Arc<ArcSwap<Shared>>,
    /// What the admin listener serves from.
    admin_view: Arc<ArcSwap<Admin>>,
    /// Listeners now, for the status page.
    listeners: Arc<ArcSwap<Vec<(Entry, SocketAddr)>>>,
    registry: Arc<prometheus_client::registry::Registry>,
    /// The config in use and its listeners; one reload at a time.
    state: Mutex<State>,
}

struct State {
    config: Config,
    listening: Vec<Listening>,
    admin: Option<Listening>,
}

/// The listeners `config` asks for: `(entry, address, IPv6-only)`.
fn wanted(config: &Config) -> Vec<(Entry, SocketAddr, bool)> {
    let transparent = [
        (Entry::TransparentHttp, config.transparent.http),
        (Entry::TransparentTls, config.transparent.https),
    ];
    let explicit = config
        .proxy
        .listen
        .iter()
        .map(|&a| (Entry::Explicit, Some(a)));
    let wanted: Vec<(Entry, SocketAddr)> = explicit
        .chain(transparent)
        .filter_map(|(entry, addr)| addr.map(|a| (entry, a)))
        .collect();
    // `[::]:P` beside `0.0.0.0:P` must be IPv6-only; alone it is dual-stack.
    let v4_ports: Vec<u16> = wanted
        .iter()
        .filter(|(_, a)| a.is_ipv4() && a.port() != 0)
        .map(|(_, a)| a.port())
        .collect();
    wanted
        .into_iter()
        .map(|(entry, addr)| (entry, addr, v4_ports.contains(&addr.port())))
        .collect()
}

fn bind_one(entry: Entry, addr: SocketAddr, v6_only: bool) -> Result<Bound, StartError> {
    let listener =
        listener::bind(addr, v6_only).map_err(|source| StartError::Bind { addr, source })?;
    Ok(Bound {
        entry,
        configured: addr,
        listener,
    })
}

/// Binds every `proxy.listen` address and the transparent listeners.
pub fn bind_all(config: &Config) -> Result<Vec<Bound>, StartError> {
    wanted(config)
        .into_iter()
        .map(|(entry, addr, v6_only)| bind_one(entry, addr, v6_only))
        .collect()
}

fn local(bound: &Bound) -> Result<SocketAddr, StartError> {
    bound
        .listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: bound.configured,
            source,
        })
}

/// Starts serving on already-bound listeners (tests bind `127.0.0.1:0`).
pub fn start(config: &Config, listeners: Vec<Bound>) -> Result<Running, StartError> {
    let stats = Arc::new(Stats::default());
    let process = Process {
        stats: stats.clone(),
        tasks: TaskTracker::new(),
        shutdown: CancellationToken::new(),
        force_stop: CancellationToken::new(),
    };
    let admin_bound = bind_admin(config.admin.listen)?;
    let own = own_listeners(listeners.iter().chain(&admin_bound))?;
    let shared = generation(config, &own, &process, None)?;
    let current = Arc::new(ArcSwap::from_pointee(shared));
    let mut registry = prometheus_client::registry::Registry::with_prefix("modgate");
    stats.register(&mut registry);
    registry.register_collector(Box::new(build::mirror_health(&current)));
    registry.register_collector(Box::new(build::parent_health(&current)));
    let registry = Arc::new(registry);
    let listeners_now = Arc::new(ArcSwap::from_pointee(Vec::new()));
    let admin = build::admin(config, registry.clone(), &current, &listeners_now);
    let running = Running {
        addrs: Vec::new(),
        bound: Vec::new(),
        admin: None,
        stats,
        process,
        current,
        admin_view: Arc::new(ArcSwap::from_pointee(admin)),
        listeners: listeners_now,
        registry,
        state: Mutex::new(State {
            config: config.clone(),
            listening: Vec::new(),
            admin: None,
        }),
    };
    running.finish_start(listeners, admin_bound)
}

/// Every address modgate listens on, the admin listener's included: the
/// one list every egress check refuses to dial (a request to one of them
/// is a loop, or a client reaching what only the host should).
fn own_listeners<'a>(
    bound: impl IntoIterator<Item = &'a Bound>,
) -> Result<Vec<SocketAddr>, StartError> {
    bound.into_iter().map(local).collect()
}

/// The listening addresses `config` names (the admin listener's included),
/// as configured: what `explain` checks, before anything is bound.
pub fn configured_listeners(config: &Config) -> Vec<SocketAddr> {
    wanted(config)
        .into_iter()
        .map(|(_, addr, _)| addr)
        .chain(config.admin.listen)
        .collect()
}

/// Binds the admin listener, if `addr` names one.
fn bind_admin(addr: Option<SocketAddr>) -> Result<Option<Bound>, StartError> {
    addr.map(|addr| {
        let listener =
            listener::bind(addr, false).map_err(|source| StartError::Bind { addr, source })?;
        Ok(Bound {
            entry: Entry::Explicit,
            configured: addr,
            listener,
        })
    })
    .transpose()
}

impl Running {
    /// Serves the bound listeners and the admin listener; fills in what was bound.
    fn finish_start(
        mut self,
        listeners: Vec<Bound>,
        admin: Option<Bound>,
    ) -> Result<Running, StartError> {
        let admin = match admin {
            Some(bound) => {
                let addr = local(&bound)?;
                Some(self.serve_admin(bound, addr))
            }
            None => None,
        };
        let mut listening = Vec::new();
        for bound in listeners {
            let addr = local(&bound)?;
            listening.push(self.serve(bound, addr));
        }
        let now: Vec<(Entry, SocketAddr)> = listening.iter().map(|l| (l.entry, l.addr)).collect();
        self.addrs = now
            .iter()
            .filter(|(entry, _)| *entry == Entry::Explicit)
            .map(|(_, addr)| *addr)
            .collect();
        self.bound.clone_from(&now);
        self.admin = admin.as_ref().map(|l| l.addr);
        self.listeners.store(Arc::new(now));
        let mut state = crate::cache::lock(&self.state);
        state.listening = listening;
        state.admin = admin;
        drop(state);
        Ok(self)
    }

    /// Starts accepting on `bound`, at `addr` (under the current config at
    /// each accept).
    fn serve(&self, bound: Bound, addr: SocketAddr) -> Listening {
        let stop = self.process.shutdown.child_token();
        let serve = listener::serve(
            bound.listener,
            bound.entry,
            self.current.clone(),
            stop.clone(),
        );
        self.process.tasks.spawn(serve);
        Listening {
            entry: bound.entry,
            configured: bound.configured,
            addr,
            stop,
        }
    }

    /// Starts the admin listener. It is not drained with the proxy: it keeps
    /// answering (`/readyz` says 503) until the drain is over.
    fn serve_admin(&self, bound: Bound, addr: SocketAddr) -> Listening {
        let stop = CancellationToken::new();
        tokio::spawn(crate::admin::serve(
            bound.listener,
            self.admin_view.clone(),
            stop.clone(),
        ));
        Listening {
            entry: bound.entry,
            configured: bound.configured,
            addr,
            stop,
        }
    }

    /// The first health probe of every mirror (nothing sent), when
    /// intercepting; runs on its own, holding no borrow of `self`.
    pub fn probe_mirrors(&self) -> impl Future<Output = Vec<crate::gomod::Probe>> + Send + 'static {
        let shared = self.current.load_full();
        async move {
            match &shared.policy.intercept {
                Some(intercept) => intercept.with.gomod.probe_mirrors().await,
                None => Vec::new(),
            }
        }
    }

    /// The shared tier's first probe, when there is one.
    pub fn probe_shared(&self) -> impl Future<Output = Option<String>> + Send + 'static {
        let shared = self.current.load_full();
        async move {
            match &shared.policy.intercept {
                Some(intercept) => intercept.with.gomod.probe_shared().await,
                None => None,
            }
        }
    }

    /// The CA in use (path, fingerprint, expiry), when intercepting.
    pub fn ca(&self) -> Option<String> {
        let shared = self.current.load();
        let intercept = shared.policy.intercept.as_ref()?;
        Some(intercept.with.leaves.ca().summary())
    }

    /// The listeners served now, with what they serve.
    pub fn listening(&self) -> Vec<(Entry, SocketAddr)> {
        self.listeners.load().as_ref().clone()
    }

    /// `proxy.shutdown_grace` of the config in use.
    pub fn shutdown_grace(&self) -> Duration {
        crate::cache::lock(&self.state).config.proxy.shutdown_grace
    }

    /// Stops accepting, waits up to the grace period for requests and
    /// tunnels, then cuts the rest.
    pub async fn shutdown(self) {
        let grace = self.shutdown_grace();
        let admin = crate::cache::lock(&self.state).admin.take();
        let process = self.process;
        process.shutdown.cancel();
        process.tasks.close();
        if tokio::time::timeout(grace, process.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = process.tasks.len(),
                "shutdown grace period over; closing remaining connections"
            );
            process.force_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), process.tasks.wait()).await;
        }
        if let Some(admin) = admin {
            admin.stop.cancel();
        }
    }
}

mod reload;
pub use reload::Reloaded;
