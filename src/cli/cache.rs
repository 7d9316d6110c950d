//! `modgate cache stats | verify | prune | warm`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use modgate::cache::Cache;
use modgate::cache::How;
use modgate::cache::flight::MakeCheck;
use modgate::cache::key::Key;
use modgate::cache::maintain::{prune, stats, verify};
use modgate::cache::store::Store;
use modgate::config::Config;
use modgate::config::units::parse_size;
use modgate::ecosystems;
use modgate::gomod::warm::{Want, check, parse_list};
use modgate::pypi::warm::Requirement;

/// Files fetched at once by `warm`.
const WARM_PARALLEL: usize = 8;

pub fn stats_command(config: Option<PathBuf>, shared: bool) -> anyhow::Result<ExitCode> {
    if shared {
        return super::bucket::stats(config.as_deref());
    }
    let store = open_read_only(config.as_deref())?;
    let totals = stats(&store, &ecosystems::all());
    print_totals(&store.root().display().to_string(), &totals);
    Ok(ExitCode::SUCCESS)
}

/// The `cache stats` table for `place`.
pub fn print_totals(place: &str, totals: &modgate::cache::index::Totals) {
    println!("cache {place}");
    println!("{:<14}{:>10}{:>16}  ecosystem", "kind", "entries", "bytes");
    for (kind, entries, bytes) in &totals.per_kind {
        let (name, ecosystem) = (kind.name(), kind.ecosystem);
        println!("{name:<14}{entries:>10}{bytes:>16}  {ecosystem}");
    }
    println!("{:<14}{:>10}{:>16}", "all", totals.entries, totals.bytes);
}

pub fn verify_command(config: Option<PathBuf>, shared: bool) -> anyhow::Result<ExitCode> {
    if shared {
        return super::bucket::verify(config.as_deref());
    }
    let store = open_read_only(config.as_deref())?;
    let mut report = verify(&store, &ecosystems::all());
    let go = modgate::gomod::audit::local(&store);
    report.damaged.extend(go.damaged);
    for (file, problem) in &report.damaged {
        println!("DAMAGED {file}: {problem}");
    }
    for file in &report.unrecorded {
        println!("unrecorded {file}: no stored hash to check against");
    }
    println!(
        "{} checked, {} damaged, {} unrecorded; {} checked against the checksum database",
        report.checked,
        report.damaged.len(),
        report.unrecorded.len(),
        go.checked
    );
    Ok(if report.damaged.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn prune_command(
    config: Option<PathBuf>,
    to: Option<String>,
    (shared, older_than): (bool, Option<String>),
) -> anyhow::Result<ExitCode> {
    match (shared, older_than) {
        (true, Some(age)) => return super::bucket::prune(config.as_deref(), &age),
        (true, None) => anyhow::bail!(
            "--shared needs --older-than (nothing limits the bucket's size; e.g. --older-than 180d)"
        ),
        (false, Some(_)) => anyhow::bail!("--older-than is for the bucket: add --shared"),
        (false, None) => {}
    }
    let (config, store) = open(config.as_deref())?;
    let to = match to {
        Some(text) => parse_size(&text).map_err(|e| anyhow::anyhow!("--to: {e}"))?,
        None => config.cache.max_size,
    };
    let (files, bytes) = prune(&store, &ecosystems::all(), to);
    println!("removed {files} entries, {bytes} bytes; the cache is now at most {to} bytes");
    Ok(ExitCode::SUCCESS)
}

pub fn warm_command(config: Option<PathBuf>, list: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(config.as_deref())?;
    same_owner(&config.cache.dir)?;
    let text =
        std::fs::read_to_string(list).with_context(|| format!("cannot read {}", list.display()))?;
    let (wanted, bad) = parse_any(list, &text)?;
    for line in &bad {
        eprintln!("{}:{line}: skipped", list.display());
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let failed = runtime.block_on(warm(&config, wanted))?;
    Ok(if failed == 0 && bad.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What a list names: Go modules (go.sum, modules.txt), pinned Python
/// requirements with hashes, or an npm lockfile's tarballs.
enum Wanted {
    Go(Vec<Want>),
    Pypi(Vec<Requirement>),
    Npm(Vec<Key>),
}

/// The list at `path` (its `text`), by what it is: a JSON file is an npm
/// lockfile, `--hash=sha256:` lines are pip's, anything else Go's.
fn parse_any(path: &Path, text: &str) -> anyhow::Result<(Wanted, Vec<String>)> {
    if path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{') {
        let (keys, bad) = modgate::npm::warm::parse_lock(text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        return Ok((Wanted::Npm(keys), bad));
    }
    if text.contains("--hash=sha256:") {
        let (requirements, bad) = modgate::pypi::warm::parse_requirements(text);
        let bad = bad
            .into_iter()
            .map(|b| format!("{b} (pip's name==version --hash=sha256: form is needed)"));
        return Ok((Wanted::Pypi(requirements), bad.collect()));
    }
    let (wants, bad) = parse_list(text);
    let bad = bad
        .into_iter()
        .map(|b| format!("{b} (not a go.sum or modules.txt line)"));
    Ok((Wanted::Go(wants), bad.collect()))
}

/// One file to fetch: how it is named, its key, and its check (none: the
/// one its ecosystem wired).
type Job = (String, Result<Key, String>, Option<MakeCheck>);

/// The files `wanted` names; a pip requirement is looked up on its
/// project's page (through the cache) for the files with its hashes.
async fn jobs(cache: &Cache, wanted: Wanted) -> Vec<Job> {
    match wanted {
        Wanted::Go(wants) => wants
            .iter()
            .map(|w| {
                let key = w
                    .key()
                    .ok_or_else(|| "not a module version the cache can hold".to_string());
                (w.describe(), key, Some(check(w)))
            })
            .collect(),
        Wanted::Npm(keys) => {
            // Each package's packument too, so installs resolve offline.
            let mut names: Vec<&str> = keys.iter().filter_map(npm_name).collect();
            names.sort_unstable();
            names.dedup();
            let packuments = names
                .iter()
                .filter_map(|n| modgate::npm::tree::packument_key(n))
                .map(|k| (k.file.clone(), Ok(k), None));
            let tarballs = keys.iter().map(|k| {
                let name = k.file.trim_start_matches("npm/tarballs/").to_string();
                (name, Ok(k.clone()), None)
            });
            packuments.chain(tarballs).collect()
        }
        Wanted::Pypi(requirements) => {
            let mut jobs = Vec::new();
            for r in requirements {
                let name = format!("{}=={}", r.project, r.version);
                match modgate::pypi::warm::keys(cache, &r).await {
                    Ok(keys) => jobs.extend(keys.into_iter().map(|k| (name.clone(), Ok(k), None))),
                    Err(why) => jobs.push((name, Err(why), None)),
                }
            }
            jobs
        }
    }
}

/// The package a tarball key is of.
fn npm_name(key: &Key) -> Option<&str> {
    let path = key.file.strip_prefix("npm/tarballs/")?;
    Some(modgate::npm::tree::split_tarball(path)?.0)
}

/// Fetches every wanted file, a few at a time; returns how many failed.
async fn warm(config: &Config, wanted: Wanted) -> anyhow::Result<usize> {
    let cache = modgate::server::standalone_cache(config)?;
    let jobs = jobs(&cache, wanted).await;
    let bar = ProgressBar::new(jobs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let permits = Arc::new(tokio::sync::Semaphore::new(WARM_PARALLEL));
    let mut tasks = tokio::task::JoinSet::new();
    for (name, key, check) in jobs {
        let cache = cache.clone();
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let outcome = match (key, check) {
                (Err(why), _) => Err(why),
                (Ok(key), Some(check)) => cache.fill(&key, check).await,
                (Ok(key), None) => cache.fill_wired(&key).await,
            };
            (name, outcome)
        });
    }
    let (mut fetched, mut present, mut failed) = (0, 0, 0);
    while let Some(joined) = tasks.join_next().await {
        let (name, outcome) = joined.context("a warm task failed")?;
        bar.inc(1);
        bar.set_message(name.clone());
        match outcome {
            Ok(How::Hit) => present += 1,
            Ok(_) => fetched += 1,
            Err(reason) => {
                failed += 1;
                bar.suspend(|| println!("FAILED {name}: {reason}"));
            }
        }
    }
    bar.finish_and_clear();
    // Stored files still on their way to the bucket (cache.shared) get
    // there before the command exits.
    cache.settled().await;
    println!("{fetched} fetched, {present} already cached, {failed} failed");
    Ok(failed)
}

/// The cache directory to read, beside a running modgate.
fn open_read_only(config: Option<&Path>) -> anyhow::Result<Store> {
    let config = Config::load(config)?;
    Store::open_read_only(&config.cache.dir)
        .with_context(|| format!("cache.dir {}", config.cache.dir.display()))
}

/// Refuses to write a cache directory another user owns (root warming
/// the service's cache left files the service could not append to),
/// naming the user to run as.
fn same_owner(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(dir) else {
        return Ok(()); // made now, by whoever runs this
    };
    // SAFETY: geteuid(2) reads the caller's id; it cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() == me {
        return Ok(());
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let owner = user_name(&passwd, meta.uid()).unwrap_or_else(|| format!("uid {}", meta.uid()));
    anyhow::bail!(
        "{} belongs to {owner}: run this as that user (sudo -u {owner} modgate …), so the files it writes stay theirs",
        dir.display()
    )
}

/// The name `/etc/passwd` (its text) gives `uid`.
fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.get(2)?.parse::<u32>().ok()? == uid).then(|| fields[0].to_string())
    })
}

fn open(config: Option<&Path>) -> anyhow::Result<(Config, Store)> {
    let config = Config::load(config)?;
    same_owner(&config.cache.dir)?;
    let store = Store::open(&config.cache.dir)
        .with_context(|| format!("cache.dir {}", config.cache.dir.display()))?;
    Ok((config, store))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_the_owner_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nmodgate:x:998:998::/var/lib/modgate:/usr/sbin/nologin\n";
        assert_eq!(super::user_name(passwd, 998).as_deref(), Some("modgate"));
        assert_eq!(super::user_name(passwd, 5), None);
    }
}
