//! What one config builds for serving: the [`Shared`] state every
//! connection accepted under it uses (policy, dialer, clients, MITM, limits),
//! and the admin listener's view. Built the same way at start and on reload.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::StartError;
use crate::admin::{Admin, Readiness, Snapshot, status::Status};
use crate::config::Config;
use crate::gomod::Gomod;
use crate::limits::ClientCounts;
use crate::listener::{ConnLimits, Entry};
use crate::proxy::{Auth, Mitm, Shared, Timeouts};
use crate::rules::{Egress, Intercept, Policy, Via};
use crate::stats::Stats;
use crate::tls::{Ca, Leaves};
use crate::upstream::{Dialer, new_client};

/// What lives as long as the process, whatever config is in use.
#[derive(Clone)]
pub struct Process {
    pub stats: Arc<Stats>,
    pub tasks: TaskTracker,
    /// Stops accepting and starts draining.
    pub shutdown: CancellationToken,
    /// Cuts whatever is still running after the grace period.
    pub force_stop: CancellationToken,
}

/// Builds the state for `config`, with `own` the listeners bound for it.
/// `previous` is the config being replaced: its module cache and, when the
/// limits did not change, its connection counts are kept.
pub fn generation(
    config: &Config,
    own: &[SocketAddr],
    process: &Process,
    previous: Option<&Shared>,
) -> Result<Shared, StartError> {
    let egress = egress(config, own);
    let dialer = Arc::new(Dialer::new(config, Arc::new(egress.clone())));
    dialer.check_mark()?;
    transparent_notes(config)?;
    let auth = config
        .proxy
        .auth_file
        .as_deref()
        .map(Auth::load)
        .transpose()?;
    let running_cache = previous
        .and_then(|p| p.policy.intercept.as_ref())
        .and_then(|i| i.with.gomod.cache());
    let mitm = if config.intercept.enabled {
        let mitm = mitm(config, dialer.clone(), &process.stats, running_cache)?;
        Some(Arc::new(mitm))
    } else {
        None
    };
    let ca_expiry = mitm.as_ref().and_then(|m| m.leaves.ca().expires());
    process.stats.ca_expiry.set(ca_expiry.unwrap_or(0));
    let retire = process.shutdown.child_token();
    if let Some(mitm) = &mitm {
        process
            .tasks
            .spawn(mitm.leaves.clone().renew_until(retire.clone()));
    }
    if let Some(pac) = dialer.pac() {
        let fresh = pac.keep_fresh(config.upstream.pac_ttl, retire.clone());
        process.tasks.spawn(fresh);
    }
    let mut policy = policy(config, egress, mitm);
    policy.via.pac = dialer.pac();
    Ok(Shared {
        policy: Arc::new(policy),
        direct: new_client(dialer.clone(), false),
        via_parent: new_client(dialer.clone(), true),
        dialer,
        auth,
        timeouts: Timeouts {
            header_read: config.proxy.header_read_timeout,
            idle: config.proxy.idle_timeout,
            response: config.upstream.response_timeout,
        },
        stats: process.stats.clone(),
        tasks: process.tasks.clone(),
        shutdown: process.shutdown.clone(),
        force_stop: process.force_stop.clone(),
        public_name: config.proxy.public_name.clone(),
        limits: limits(config, previous.map(|p| &p.limits), &process.stats),
        retire,
    })
}

/// The connection limits for `config`: the running ones when unchanged, so
/// connections open across a reload keep counting.
fn limits(config: &Config, running: Option<&ConnLimits>, stats: &Stats) -> ConnLimits {
    let proxy = &config.proxy;
    let max = i64::try_from(proxy.max_connections).unwrap_or(i64::MAX);
    stats.connections_max.set(max);
    let (permits, per_client) = match running {
        Some(l)
            if l.max_connections == proxy.max_connections
                && l.per_client.max() == proxy.max_connections_per_client =>
        {
            (l.permits.clone(), l.per_client.clone())
        }
        _ => (
            Arc::new(Semaphore::new(proxy.max_connections)),
            ClientCounts::new(proxy.max_connections_per_client),
        ),
    };
    ConnLimits {
        max_header_size: proxy.max_header_size,
        permits,
        max_connections: proxy.max_connections,
        per_client,
    }
}

/// The admin listener's view of `current`, with `config`'s token. Ready
/// means: not draining, listeners bound and CA loaded (true once started),
/// and at least one module mirror not failing repeatedly (see
/// `mirrors::READY_WINDOW`: no single request decides it).
pub fn admin(
    config: &Config,
    registry: Arc<prometheus_client::registry::Registry>,
    current: &Arc<ArcSwap<Shared>>,
    listeners: &Arc<ArcSwap<Vec<(Entry, SocketAddr)>>>,
) -> Admin {
    let watched = current.clone();
    let readiness: Readiness = Arc::new(move || {
        let shared = watched.load();
        if shared.shutdown.is_cancelled() {
            return Err("shutting down".into());
        }
        match &shared.policy.intercept {
            Some(intercept) => match intercept.with.gomod.ready_mirrors() {
                (0, all) if all > 0 => Err(format!(
                    "every module mirror ({all}) failed {} times with no success in the last {}s",
                    crate::mirrors::READY_FAILURES,
                    crate::mirrors::READY_WINDOW.as_secs()
                )),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    });
    Admin {
        registry,
        token: config.admin.token.clone(),
        readiness,
        status: status_of(current.clone(), listeners.clone()),
    }
}

/// `modgate_mirror_up`, from the config in use at each scrape.
pub fn mirror_health(
    current: &Arc<ArcSwap<Shared>>,
) -> crate::admin::health::UpGauges<crate::admin::health::MirrorLabels> {
    use crate::admin::health::{MirrorLabels, UpGauges};
    let current = current.clone();
    let read = Arc::new(move || {
        let shared = current.load();
        let Some(intercept) = &shared.policy.intercept else {
            return Vec::new();
        };
        let mirrors = intercept.with.gomod.mirror_health();
        let up = |(kind, health): (&'static str, crate::mirrors::Health)| {
            let up = health.demoted_for.is_none();
            let mirror = health.mirror;
            (MirrorLabels { kind, mirror }, up)
        };
        mirrors.into_iter().map(up).collect()
    });
    UpGauges {
        name: "mirror_up",
        help: "1 while a mirror is healthy, 0 while it is demoted",
        read,
    }
}

/// `modgate_parent_up`, from the config in use at each scrape.
pub fn parent_health(
    current: &Arc<ArcSwap<Shared>>,
) -> crate::admin::health::UpGauges<crate::admin::health::ParentLabels> {
    use crate::admin::health::{ParentLabels, UpGauges};
    let current = current.clone();
    let read = Arc::new(move || {
        let shared = current.load();
        let parents = shared.dialer.parent_health().into_iter();
        parents
            .map(|(parent, up)| (ParentLabels { parent }, up))
            .collect()
    });
    UpGauges {
        name: "parent_up",
        help: "1 while a parent proxy is reachable, 0 while it is skipped (upstream.down_for)",
        read,
    }
}

/// The status page's snapshot, taken when it is asked for.
fn status_of(
    current: Arc<ArcSwap<Shared>>,
    listeners: Arc<ArcSwap<Vec<(Entry, SocketAddr)>>>,
) -> Snapshot {
    Arc::new(move || {
        let shared = current.load();
        let gomod = shared.policy.intercept.as_ref().map(|i| &i.with.gomod);
        let stats = &shared.stats;
        Status {
            uptime: stats.started.0.elapsed(),
            listeners: listeners
                .load()
                .iter()
                .map(|(entry, addr)| (entry.serves().to_string(), *addr))
                .collect(),
            mirrors: gomod
                .map(|g| g.mirror_health().into_iter().map(|(_, h)| h).collect())
                .unwrap_or_default(),
            parents: shared.dialer.parent_health(),
            cache: gomod
                .and_then(|g| g.cache())
                .map(|c| (c.totals().entries, c.totals().bytes)),
            storing: stats.cache_storing.get() != 0,
            shared: gomod.and_then(|g| g.shared_state()),
            module_hits: stats.module_hits(),
            requests: stats.requests.get(),
            tunnels: stats.tunnels.get(),
            tunnels_open: stats.tunnels_open.get(),
            forwarded: stats.forwarded.get(),
            last_reload: crate::cache::lock(&stats.last_reload).clone(),
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

/// Loads (or creates) the CA, mints the leaves, builds the gomod handler
/// (over `running_cache`, on a reload).
fn mitm(
    config: &Config,
    dialer: Arc<Dialer>,
    stats: &Arc<Stats>,
    running_cache: Option<&crate::cache::Cache>,
) -> Result<Mitm, StartError> {
    let hosts = config.intercepted_hosts();
    let (ca, created) = Ca::load_or_init(&config.intercept.ca_dir, &hosts)?;
    if created {
        announce_ca(config, &ca.cert_path);
    }
    tracing::info!("local CA: {}", ca.summary());
    if !ca.excludes_addresses() {
        tracing::warn!(
            "the CA's name constraints do not exclude IP addresses (a CA from an older modgate): its key could sign for any address; recreate it with `modgate ca init --force` and have clients trust the new one"
        );
    }
    let uncovered = ca.uncovered(&hosts);
    if !uncovered.is_empty() {
        tracing::warn!(
            hosts = ?uncovered,
            "the CA's name constraints do not cover these intercepted hosts; they will fail TLS (recreate the CA with `modgate ca init --force`)"
        );
    }
    let leaves = Arc::new(Leaves::new(ca, &hosts, stats.leaves_minted.clone())?);
    let gomod = Gomod::new(
        &config.gomod,
        cache_settings(config),
        dialer.clone(),
        via(config, &dialer),
        stats.clone(),
        running_cache,
    )?;
    let (pypi, npm) = match gomod.cache() {
        Some(cache) => packages(config, cache, &dialer, stats)?,
        None => (None, None),
    };
    Ok(Mitm {
        tls: crate::tls::leaves::server_config(leaves.clone())?,
        leaves,
        gomod: Arc::new(gomod),
        pypi,
        npm,
    })
}

/// The PyPI and npm handlers `config` enables, their mirrors and checks
/// wired into `cache`.
#[allow(clippy::type_complexity)]
fn packages(
    config: &Config,
    cache: &crate::cache::Cache,
    dialer: &Arc<Dialer>,
    stats: &Arc<Stats>,
) -> Result<(Option<Arc<crate::pypi::Pypi>>, Option<Arc<crate::npm::Npm>>), StartError> {
    let ca_files = config.gomod.ca_files();
    let setup = crate::indexed::Setup {
        ca_files: &ca_files,
        cache,
        way_out: (dialer.clone(), via(config, dialer)),
        stats: stats.clone(),
        timeouts: (config.gomod.mirror_timeout, config.gomod.demote_for),
    };
    let pypi = (config.pypi.enabled)
        .then(|| crate::pypi::Pypi::new(&config.pypi, &setup).map(Arc::new))
        .transpose();
    let npm = (config.npm.enabled)
        .then(|| crate::npm::Npm::new(&config.npm, &setup).map(Arc::new))
        .transpose();
    let packages = |e| StartError::Packages(e);
    Ok((pypi.map_err(packages)?, npm.map_err(packages)?))
}

/// Says a new CA was made and how clients come to trust it: on a
/// gateway (a `public_name`), its `/ca` page, which is where clients go;
/// on a workstation, the commands for this machine. As fields when the
/// log is JSON.
fn announce_ca(config: &Config, cert: &std::path::Path) {
    let page = config
        .proxy
        .public_name
        .as_ref()
        .map(|name| format!("http://{name}/ca"));
    let json = config.log.format == crate::config::LogFormat::Json;
    match (page, json) {
        (Some(page), true) => {
            tracing::warn!(ca = %cert.display(), trust_page = %page, "created a new local CA")
        }
        (Some(page), false) => tracing::warn!(
            "created a new local CA at {}\nClients trust it from {page} (the page shows how, per system).",
            cert.display()
        ),
        (None, true) => tracing::warn!(
            ca = %cert.display(), how = "modgate ca show", "created a new local CA"
        ),
        (None, false) => tracing::warn!(
            "created a new local CA at {}\n{}",
            cert.display(),
            crate::tls::trust_hint(cert)
        ),
    }
}

/// The cache fed by the config's mirrors, outside a running gateway
/// (`modgate cache warm`): the same egress rules and parent, no listeners,
/// never offline.
pub fn standalone_cache(config: &Config) -> Result<crate::cache::Cache, StartError> {
    let dialer = Arc::new(Dialer::new(config, Arc::new(egress(config, &[]))));
    let mut enabled = config.clone();
    enabled.cache.enabled = true;
    enabled.cache.offline = false;
    let stats = Arc::new(Stats::default());
    let gomod = Gomod::new(
        &config.gomod,
        cache_settings(&enabled),
        dialer.clone(),
        via(config, &dialer),
        stats.clone(),
        None,
    )?;
    let cache = gomod.cache().cloned().ok_or(StartError::NoCache)?;
    // PyPI's and npm's mirrors and checks, wired into the cache.
    packages(config, &cache, &dialer, &stats)?;
    Ok(cache)
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
        shared: cache.shared.clone(),
        public_name: config.proxy.public_name.clone(),
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

/// The way out for `config`, with the PAC file `dialer` holds (if any).
fn via(config: &Config, dialer: &Dialer) -> Via {
    Via {
        parent: config.upstream.parents_shown(),
        no_proxy: config.upstream.no_proxy.clone(),
        pac: dialer.pac(),
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
        via: Via {
            parent: config.upstream.parents_shown(),
            no_proxy: config.upstream.no_proxy.clone(),
            pac: None,
        },
        intercept: with.map(|with| Intercept {
            hosts: config.intercepted_hosts(),
            bypass: config.intercept.bypass.clone(),
            bypass_clients: config.intercept.bypass_clients.clone(),
            with,
        }),
    }
}
