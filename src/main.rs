//! modgate's command line: parse arguments, load the config, set up logging,
//! and run. The binary (this file and `cli/`) is the only place that uses `anyhow`.

mod cli;

use cli::{logging, pid, reload};

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use modgate::config::{Config, LoadError};

#[derive(Parser)]
#[command(
    name = "modgate",
    version,
    about = "Forward HTTP/HTTPS proxy with Go module mirroring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start serving (foreground; logs to stderr).
    Run {
        #[arg(long, help = CONFIG_HELP)]
        config: Option<PathBuf>,
        /// Listen address, replacing proxy.listen (repeatable).
        #[arg(long)]
        listen: Vec<SocketAddr>,
        /// The admin listener's address, replacing admin.listen.
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
    },
    /// Ask the running modgate (proxy.pid_file) to reload its config: the
    /// same as SIGHUP.
    Reload {
        #[arg(long, help = CONFIG_HELP)]
        config: Option<PathBuf>,
        /// Allow an intercept.ca_dir change that needs a new CA: make it
        /// there first (owned by modgate's user), then reload.
        #[arg(long)]
        new_ca: bool,
    },
    /// Validate the config; print every error with file:line.
    Check {
        #[arg(long, help = CONFIG_HELP)]
        config: Option<PathBuf>,
    },
    /// Manage the local CA used to intercept the Go module hosts.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Look after the module cache (the config's cache.dir).
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Shell lines that point this machine's tools at modgate: both cases of
    /// HTTP(S)_PROXY, NO_PROXY, and the CA bundle (eval "$(modgate env)").
    Env {
        #[arg(long, help = CONFIG_HELP)]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "sh")]
        shell: cli::env::Shell,
    },
    /// Check this machine's setup for the gateway: proxy variables, the
    /// proxy answering, the go command trusting the CA, a module request,
    /// the gateway's mirrors. Each failure names its fix.
    Doctor {
        /// The proxy (default: HTTPS_PROXY).
        #[arg(long)]
        proxy: Option<String>,
    },
    /// Print the routing decision for a URL or HOST[:PORT], and the rule behind it.
    Explain {
        #[arg(long, help = CONFIG_HELP)]
        config: Option<PathBuf>,
        /// http://…, https://… or HOST[:PORT] (a CONNECT, port 443 by default).
        target: String,
        /// The client address to decide for.
        #[arg(long, default_value = "127.0.0.1")]
        client: IpAddr,
    },
}

/// What `--config` defaults to, for every command's help.
const CONFIG_HELP: &str = "Config file [default: $MODGATE_CONFIG, else ~/.config/modgate/modgate.toml, else /etc/modgate/modgate.toml, else the embedded default]";

#[derive(Subcommand)]
enum CacheCommand {
    /// Entries and bytes, in all and per kind.
    Stats {
        #[arg(long, help = CONFIG_HELP)]
        config: Option<PathBuf>,
        /// The shared tier's bucket (cache.shared) instead of the directory.
        #[arg(long)]
        shared: bool,
    },
    /// Re-hash every immutable entry against its recorded SHA-256; exit 1 on damage.
    Verify {
        #[arg(long, help = CONFIG_HELP)]
        config: Option<PathBuf>,
        /// Re-check every .mod and .zip in the shared tier's bucket against
        /// the checksum database lookups it holds instead.
        #[arg(long)]
        shared: bool,
    },
    /// Remove least recently used entries down to --to (default: cache.max_size).
    Prune {
        #[arg(long, help = CONFIG_HELP)]
        config: Option<PathBuf>,
        /// A size such as "5GiB".
        #[arg(long)]
        to: Option<String>,
        /// Prune the shared tier's bucket instead (with --older-than).
        #[arg(long)]
        shared: bool,
        /// With --shared: remove files written longer ago than this ("180d").
        #[arg(long)]
        older_than: Option<String>,
    },
    /// Fetch every .mod and .zip a go.sum (hashes checked) or vendor/modules.txt names.
    Warm {
        #[arg(long, help = CONFIG_HELP)]
        config: Option<PathBuf>,
        /// A go.sum or modules.txt file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create the CA in the config's intercept.ca_dir (key file mode 0600),
    /// constrained to its intercepted hosts.
    Init {
        #[arg(long, help = CONFIG_HELP)]
        config: Option<PathBuf>,
        /// Replace an existing CA.
        #[arg(long)]
        force: bool,
    },
    /// Subject, fingerprint, validity, permitted names, and how to trust it.
    Show {
        #[arg(long, help = CONFIG_HELP)]
        config: Option<PathBuf>,
        /// Print the certificate (PEM) only.
        #[arg(long)]
        pem: bool,
    },
    /// Write this system's roots plus modgate's CA to one file (for
    /// SSL_CERT_FILE, REQUESTS_CA_BUNDLE, GIT_SSL_CAINFO).
    Bundle {
        #[arg(long, help = CONFIG_HELP)]
        config: Option<PathBuf>,
        /// The file to write (mode 0644, replaced whole).
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        modgate::sys::exit_quietly_on_closed_stdout();
    }
    if let Some(config) = config_read(&cli.command) {
        let shown = Config::chosen(config).map_or_else(
            || "the embedded default".into(),
            |p| p.display().to_string(),
        );
        eprintln!("modgate: config {shown}");
    }
    let result = match cli.command {
        Command::Run {
            config,
            listen,
            admin_listen,
        } => run(Source {
            path: config,
            listen,
            admin_listen,
        }),
        Command::Reload { config, new_ca } => reload_command(config, new_ca),
        Command::Env { config, shell } => cli::env::env(config.as_deref(), shell),
        Command::Check { config } => return check(config),
        Command::Doctor { proxy } => {
            return cli::doctor::doctor(proxy).unwrap_or_else(|err| {
                eprintln!("modgate: {}", report(&err));
                ExitCode::FAILURE
            });
        }
        Command::Ca { command } => ca(command),
        Command::Cache { command } => return cache_command(command),
        Command::Explain {
            config,
            target,
            client,
        } => explain(config, &target, client),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("modgate: {}", report(&err));
            ExitCode::FAILURE
        }
    }
}

/// The `--config` of a command that reads a config and does not say
/// which in its own output (`run` and `check` do).
fn config_read(command: &Command) -> Option<Option<&Path>> {
    let config = match command {
        Command::Reload { config, .. } | Command::Env { config, .. } => config,
        Command::Explain { config, .. } => config,
        Command::Ca { command } => match command {
            CaCommand::Init { config, .. }
            | CaCommand::Show { config, .. }
            | CaCommand::Bundle { config, .. } => config,
        },
        Command::Cache { command } => match command {
            CacheCommand::Stats { config, .. }
            | CacheCommand::Verify { config, .. }
            | CacheCommand::Prune { config, .. }
            | CacheCommand::Warm { config, .. } => config,
        },
        Command::Run { .. } | Command::Check { .. } | Command::Doctor { .. } => return None,
    };
    Some(config.as_deref())
}

/// The error and its causes on one line, none said twice.
fn report(err: &anyhow::Error) -> String {
    modgate::message::causes(err.chain().map(ToString::to_string))
}

/// Validates the config, then what `run` would need beyond it (files,
/// directories, capabilities, free listeners); every error with its place.
fn check(path: Option<PathBuf>) -> ExitCode {
    let config = match Config::load(path.as_deref()) {
        Ok(config) => config,
        Err(LoadError::Invalid(errors)) => return refused(&errors),
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let problems = match runtime {
        Ok(runtime) => runtime.block_on(async { modgate::server::preflight(&config) }),
        Err(e) => {
            eprintln!("modgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !problems.is_empty() {
        return refused(&problems);
    }
    println!("config OK: {}", config.origin.file);
    ExitCode::SUCCESS
}

fn refused(errors: &[modgate::config::ConfigError]) -> ExitCode {
    for error in errors {
        eprintln!("{error}");
    }
    eprintln!("{} error(s)", errors.len());
    ExitCode::FAILURE
}

fn ca(command: CaCommand) -> anyhow::Result<()> {
    match command {
        CaCommand::Init { config, force } => cli::ca::init(config.as_deref(), force),
        CaCommand::Show { config, pem } => cli::ca::show(config.as_deref(), pem),
        CaCommand::Bundle { config, out } => cli::ca::bundle(config.as_deref(), &out),
    }
}

fn cache_command(command: CacheCommand) -> ExitCode {
    let result = match command {
        CacheCommand::Stats { config, shared } => cli::cache::stats_command(config, shared),
        CacheCommand::Verify { config, shared } => cli::cache::verify_command(config, shared),
        CacheCommand::Prune {
            config,
            to,
            shared,
            older_than,
        } => cli::cache::prune_command(config, to, (shared, older_than)),
        CacheCommand::Warm { config, file } => cli::cache::warm_command(config, &file),
    };
    result.unwrap_or_else(|err| {
        eprintln!("modgate: {}", report(&err));
        ExitCode::FAILURE
    })
}

fn reload_command(path: Option<PathBuf>, new_ca: bool) -> anyhow::Result<()> {
    let config = Config::load(path.as_deref())?;
    let pid = pid::running(config.proxy.pid_file.as_deref())?;
    if new_ca {
        cli::ca::make_for_reload(&config, pid)?;
    }
    pid::signal_reload(pid)?;
    println!("asked modgate (pid {pid}) to reload; its log says how it went");
    Ok(())
}

fn explain(path: Option<PathBuf>, target: &str, client: IpAddr) -> anyhow::Result<()> {
    let config = Config::load(path.as_deref())?;
    print!("{}", modgate::explain::explain(&config, target, client)?);
    Ok(())
}

/// Where `run`'s config comes from: read again, the same way, on reload.
struct Source {
    path: Option<PathBuf>,
    /// `--listen`, replacing proxy.listen.
    listen: Vec<SocketAddr>,
    /// `--admin-listen`, replacing admin.listen.
    admin_listen: Option<SocketAddr>,
}

impl Source {
    fn load(&self) -> Result<Config, LoadError> {
        let mut config = Config::load(self.path.as_deref())?;
        if !self.listen.is_empty() {
            config.proxy.listen.clone_from(&self.listen);
        }
        if self.admin_listen.is_some() {
            config.admin.listen = self.admin_listen;
        }
        Ok(config)
    }
}

fn run(source: Source) -> anyhow::Result<()> {
    let config = source.load()?;
    let logging = logging::init(&config.log)?;
    raise_fd_limit(config.proxy.max_connections);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Cache writes and file opens run on blocking threads: keep them
        // between bursts of requests rather than make new ones each time.
        .thread_keep_alive(std::time::Duration::from_secs(600))
        .build()
        .context("cannot start the async runtime")?;
    let served = runtime.block_on(serve(config, &source, &logging));
    drop(logging);
    served
}

async fn serve(config: Config, source: &Source, logging: &logging::Logging) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Watch the signals before saying we listen: a supervisor may send one at once.
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let listeners = modgate::server::bind_all(&config)?;
    let running = modgate::server::start(&config, listeners)?;
    for (entry, addr) in &running.bound {
        tracing::info!(%addr, "modgate listening ({})", entry.serves());
    }
    if let Some(addr) = running.admin {
        tracing::info!(%addr, "admin listening: / /healthz /readyz /metrics");
    }
    tokio::spawn(summarise(config.clone(), &running));
    let pid_file = pid::PidFile::write(config.proxy.pid_file.as_deref())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                logging.reopen();
                reload::reload(&running, source);
            }
        }
    }
    let grace = running.shutdown_grace();
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: no new connections, draining (a second SIGTERM or SIGINT exits at once)"
    );
    tokio::select! {
        () = running.shutdown() => {}
        _ = term.recv() => exit_now(logging),
        _ = int.recv() => exit_now(logging),
    }
    drop(pid_file);
    Ok(())
}

/// Logs the start-up summary once every mirror has had its first probe
/// (at most `gomod.mirror_timeout`; serving has begun meanwhile).
fn summarise(
    config: Config,
    running: &modgate::server::Running,
) -> impl Future<Output = ()> + Send + 'static {
    let probing = running.probe_mirrors();
    let shared = running.probe_shared();
    let (bound, admin, ca) = (running.bound.clone(), running.admin, running.ca());
    async move {
        let (probes, shared) = tokio::join!(probing, shared);
        let started = modgate::server::Started {
            bound: &bound,
            admin,
            ca: ca.as_deref(),
            probes: &probes,
            shared: shared.as_deref(),
        };
        if config.log.format == modgate::config::LogFormat::Json {
            // One event a row, each a field: no text full of newlines.
            for (what, value) in modgate::server::summary_rows(&config, &started) {
                tracing::info!(what, value = %value, "start-up summary");
            }
        } else {
            tracing::info!("{}", modgate::server::summary(&config, &started));
        }
    }
}

/// A second stop signal while draining: cut everything, exit 1.
fn exit_now(logging: &logging::Logging) -> ! {
    tracing::warn!("second stop signal: exiting now, cutting what is still running");
    logging.flush();
    std::process::exit(1)
}

/// Tunnels need descriptors: lift the soft limit to the hard one.
/// Raises the open-file limit to its hard limit, and warns when even that
/// is below what `proxy.max_connections` needs (two descriptors a
/// connection: the client's and the upstream's, and some to spare).
fn raise_fd_limit(max_connections: usize) {
    let Ok((_, hard)) = rlimit::Resource::NOFILE.get() else {
        return;
    };
    let _ = rlimit::Resource::NOFILE.set(hard, hard);
    let needed = (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(1024);
    if hard < needed {
        tracing::warn!(
            limit = hard,
            needed,
            max_connections,
            "the open-file limit is below what proxy.max_connections needs: connections will fail with 'too many open files' first (raise LimitNOFILE, or lower max_connections)"
        );
    }
}
