//! Wiring: turns a [`Config`] and bound listeners into a running proxy, and
//! drains it on shutdown (stop accepting, let requests and tunnels finish
//! for `proxy.shutdown_grace`, then cut what is left).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::gomod::{Gomod, GomodError};
use crate::limits::ClientCounts;
use crate::listener::{self, ConnLimits, Entry};
use crate::proxy::{Auth, AuthFileError, Mitm, Shared, Timeouts};
use crate::rules::{Egress, Intercept, Policy, Via};
use crate::stats::Stats;
use crate::tls::{Ca, CaError, Leaves};
use crate::upstream::{Dialer, new_client};

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
    #[error(transparent)]
    Gomod(#[from] GomodError),
    #[error("the cache is not enabled")]
    NoCache,
    #[error(transparent)]
    Sys(#[from] crate::sys::SysError),
}

/// A started proxy.
pub struct Running {
    /// The explicit proxy's addresses actually bound (port 0 resolved).
    pub addrs: Vec<SocketAddr>,
    /// Every listener, explicit and transparent, with what it serves.
    pub bound: Vec<(Entry, SocketAddr)>,
    /// The admin listener's address, when there is one.
    pub admin: Option<SocketAddr>,
    pub stats: Arc<Stats>,
    /// Stops accepting and starts draining.
    shutdown: CancellationToken,
    /// Cuts whatever is still running after the grace period.
    force_stop: CancellationToken,
    tasks: TaskTracker,
    grace: Duration,
}

/// Binds every `proxy.listen` address and the transparent listeners.
pub fn bind_all(config: &Config) -> Result<Vec<(Entry, TcpListener)>, StartError> {
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
        .map(|(entry, addr)| {
            let v6_only = v4_ports.contains(&addr.port());
            let listener = listener::bind(addr, v6_only)
                .map_err(|source| StartError::Bind { addr, source })?;
            Ok((entry, listener))
        })
        .collect()
}

/// Starts serving on already-bound listeners (tests bind `127.0.0.1:0`).
pub fn start(config: &Config, listeners: Vec<(Entry, TcpListener)>) -> Result<Running, StartError> {
    let bound: Vec<(Entry, SocketAddr)> = listeners
        .iter()
        .filter_map(|(entry, l)| Some((*entry, l.local_addr().ok()?)))
        .collect();
    let own: Vec<SocketAddr> = bound.iter().map(|(_, addr)| *addr).collect();
    let addrs: Vec<SocketAddr> = bound
        .iter()
        .filter(|(entry, _)| *entry == Entry::Explicit)
        .map(|(_, addr)| *addr)
        .collect();
    let egress = egress(config, &own);
    let dialer = Arc::new(Dialer::new(
        Arc::new(egress.clone()),
        config.upstream.connect_timeout,
        config.upstream.proxy.clone(),
        config.transparent.outbound_mark,
    ));
    dialer.check_mark()?;
    transparent_notes(config)?;
    let auth = config
        .proxy
        .auth_file
        .as_deref()
        .map(Auth::load)
        .transpose()?;
    let stats = Arc::new(Stats::default());
    let mitm = if config.intercept.enabled {
        Some(Arc::new(mitm(config, dialer.clone(), stats.clone())?))
    } else {
        None
    };
    let tasks = TaskTracker::new();
    let shutdown = CancellationToken::new();
    if let Some(mitm) = &mitm {
        tasks.spawn(mitm.leaves.clone().renew_until(shutdown.clone()));
    }
    let force_stop = CancellationToken::new();
    let shared = Arc::new(Shared {
        policy: Arc::new(policy(config, egress, mitm)),
        direct: new_client(dialer.clone(), false),
        via_parent: new_client(dialer.clone(), true),
        dialer,
        auth,
        timeouts: Timeouts {
            header_read: config.proxy.header_read_timeout,
            idle: config.proxy.idle_timeout,
            response: config.upstream.response_timeout,
        },
        stats: stats.clone(),
        tasks: tasks.clone(),
        shutdown: shutdown.clone(),
        force_stop: force_stop.clone(),
        public_name: config.proxy.public_name.clone(),
    });
    let permits = Arc::new(Semaphore::new(config.proxy.max_connections));
    let limits = ConnLimits {
        max_header_size: config.proxy.max_header_size,
        per_client: ClientCounts::new(config.proxy.max_connections_per_client),
    };
    let admin = start_admin(config, &shared, &bound, (&tasks, &shutdown))?;
    for (entry, listener) in listeners {
        let serve = listener::serve(
            listener,
            entry,
            shared.clone(),
            permits.clone(),
            limits.clone(),
            shutdown.clone(),
        );
        tasks.spawn(serve);
    }
    Ok(Running {
        addrs,
        bound,
        admin,
        stats,
        shutdown,
        force_stop,
        tasks,
        grace: config.proxy.shutdown_grace,
    })
}

/// Binds and starts the admin listener (`admin.listen`), if any. Ready
/// means: listeners bound and CA loaded (true once started, or start
/// failed), and at least one module mirror not demoted.
fn start_admin(
    config: &Config,
    shared: &Arc<Shared>,
    listeners: &[(Entry, SocketAddr)],
    (tasks, shutdown): (&TaskTracker, &CancellationToken),
) -> Result<Option<SocketAddr>, StartError> {
    let Some(addr) = config.admin.listen else {
        return Ok(None);
    };
    let listener =
        listener::bind(addr, false).map_err(|source| StartError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let mut registry = prometheus_client::registry::Registry::with_prefix("modgate");
    shared.stats.register(&mut registry);
    let watched = shared.clone();
    let readiness = move || match &watched.policy.intercept {
        Some(intercept) => match intercept.with.gomod.healthy_mirrors() {
            (0, all) if all > 0 => Err(format!("every module mirror ({all}) is demoted")),
            _ => Ok(()),
        },
        None => Ok(()),
    };
    let admin = Arc::new(crate::admin::Admin {
        registry,
        token: config.admin.token.clone(),
        readiness: Box::new(readiness),
        status: status_of(shared.clone(), listeners.to_vec()),
    });
    tasks.spawn(crate::admin::serve(listener, admin, shutdown.clone()));
    Ok(Some(bound))
}

/// The status page's snapshot, taken when it is asked for.
fn status_of(
    shared: Arc<Shared>,
    listeners: Vec<(Entry, SocketAddr)>,
) -> Box<dyn Fn() -> crate::admin::status::Status + Send + Sync> {
    let started = std::time::Instant::now();
    Box::new(move || {
        let gomod = shared.policy.intercept.as_ref().map(|i| &i.with.gomod);
        let stats = &shared.stats;
        crate::admin::status::Status {
            uptime: started.elapsed(),
            listeners: listeners
                .iter()
                .map(|(entry, addr)| (entry.serves().to_string(), *addr))
                .collect(),
            mirrors: gomod.map(|g| g.mirror_health()).unwrap_or_default(),
            cache: gomod
                .and_then(|g| g.cache())
                .map(|c| (c.totals().entries, c.totals().bytes)),
            module_hits: stats.module_hits(),
            requests: stats.requests.get(),
            tunnels: stats.tunnels.get(),
            forwarded: stats.forwarded.get(),
            events: crate::cache::lock(&stats.events).iter().cloned().collect(),
        }
    })
}

fn transparent_notes(config: &Config) -> Result<(), StartError> {
    if config.transparent.enabled() {
        crate::sys::transparent_supported()?;
        if config.transparent.outbound_mark.is_none() {
            tracing::info!(
                "transparent listeners without transparent.outbound_mark: right for a gateway (PREROUTING rules); if this host's own traffic is redirected (OUTPUT rules), set outbound_mark and exclude it, or modgate's connections come back to it"
            );
        }
    }
    Ok(())
}

/// Loads (or creates) the CA, mints the leaves, builds the gomod handler.
fn mitm(config: &Config, dialer: Arc<Dialer>, stats: Arc<Stats>) -> Result<Mitm, StartError> {
    let hosts = config.gomod.hosts();
    let (ca, created) = Ca::load_or_init(&config.intercept.ca_dir, &hosts)?;
    if created {
        tracing::warn!(
            "created a new local CA at {}\n{}",
            ca.cert_path.display(),
            crate::tls::trust_hint(&ca.cert_path)
        );
    }
    let uncovered = ca.uncovered(&hosts);
    if !uncovered.is_empty() {
        tracing::warn!(
            hosts = ?uncovered,
            "the CA's name constraints do not cover these intercepted hosts; they will fail TLS (recreate the CA with `modgate ca init --force`)"
        );
    }
    let leaves = Arc::new(Leaves::new(ca, &hosts)?);
    let gomod = Gomod::new(
        &config.gomod,
        cache_settings(config),
        dialer,
        via(config),
        stats,
    )?;
    Ok(Mitm {
        tls: crate::tls::leaves::server_config(leaves.clone()),
        leaves,
        gomod: Arc::new(gomod),
    })
}

/// The cache fed by the config's mirrors, outside a running gateway
/// (`modgate cache warm`): the same egress rules and parent, no listeners,
/// never offline.
pub fn standalone_cache(config: &Config) -> Result<crate::cache::Cache, StartError> {
    let dialer = Arc::new(Dialer::new(
        Arc::new(egress(config, &[])),
        config.upstream.connect_timeout,
        config.upstream.proxy.clone(),
        config.transparent.outbound_mark,
    ));
    let mut enabled = config.clone();
    enabled.cache.enabled = true;
    enabled.cache.offline = false;
    let stats = Arc::new(Stats::default());
    let gomod = Gomod::new(
        &config.gomod,
        cache_settings(&enabled),
        dialer,
        via(config),
        stats,
    )?;
    gomod.cache().cloned().ok_or(StartError::NoCache)
}

/// `[cache]` as the cache takes it, when enabled.
pub fn cache_settings(config: &Config) -> Option<crate::cache::Settings> {
    let cache = &config.cache;
    cache.enabled.then(|| crate::cache::Settings {
        dir: cache.dir.clone(),
        max_size: cache.max_size,
        mutable_ttl: cache.mutable_ttl,
        negative_ttl: cache.negative_ttl,
        offline: cache.offline,
        read_timeout: config.gomod.mirror_timeout,
    })
}

/// The addresses never dialled, for this config and these bound listeners.
pub fn egress(config: &Config, own_listeners: &[SocketAddr]) -> Egress {
    Egress {
        deny_destinations: config.proxy.deny_destinations.clone(),
        own_listeners: own_listeners.to_vec(),
        local_addrs: crate::sys::local_addresses(),
    }
}

fn via(config: &Config) -> Via {
    Via {
        parent: config.upstream.proxy.as_ref().map(ToString::to_string),
        no_proxy: config.upstream.no_proxy.clone(),
    }
}

/// The routing policy for this config: `run` hands intercepted connections
/// to the MITM (`with` is present exactly when interception is enabled and
/// set up); `explain` passes `()`.
pub fn policy<I>(config: &Config, egress: Egress, with: Option<I>) -> Policy<I> {
    Policy {
        allow_clients: config.proxy.allow_clients.clone(),
        connect_ports: config.proxy.connect_ports.clone(),
        http_ports: config.proxy.http_ports.clone(),
        egress,
        via: via(config),
        intercept: with.map(|with| Intercept {
            hosts: config.gomod.hosts(),
            bypass: config.intercept.bypass.clone(),
            bypass_clients: config.intercept.bypass_clients.clone(),
            with,
        }),
    }
}

impl Running {
    /// Stops accepting, waits up to the grace period for requests and
    /// tunnels, then cuts the rest.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(self.grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.tasks.len(),
                "shutdown grace period over; closing remaining connections"
            );
            self.force_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), self.tasks.wait()).await;
        }
    }
}
