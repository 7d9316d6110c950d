//! `modgate cache stats|verify|prune --shared`: the shared tier's bucket
//! (`cache.shared`), read and pruned through the same storage the gateways
//! use.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use modgate::cache::storage::Storage;
use modgate::cache::storage::s3::S3Storage;
use modgate::config::Config;
use modgate::config::units::parse_duration;

/// Objects and bytes in the bucket, by kind.
pub fn stats(config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let bucket = bucket(config)?;
    let all = modgate::ecosystems::all();
    let totals = runtime()?.block_on(modgate::cache::bucket::stats(&bucket, &all))?;
    super::cache::print_totals(&bucket.describe(), &totals);
    Ok(ExitCode::SUCCESS)
}

/// The shared tier's bucket of the config, for `--shared`.
fn bucket(config: Option<&Path>) -> anyhow::Result<S3Storage> {
    let config = Config::load(config)?;
    let Some(shared) = &config.cache.shared else {
        anyhow::bail!(
            "cache.shared is not set in {}: no bucket to look at",
            config.origin.file
        );
    };
    Ok(S3Storage::new(&shared.s3)?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Every .mod and .zip in the bucket against its lookup; exit 1 on damage.
pub fn verify(config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let bucket = bucket(config)?;
    let report = runtime()?.block_on(modgate::gomod::audit::bucket(&bucket))?;
    for (file, problem) in &report.damaged {
        println!("DAMAGED {file}: {problem}");
    }
    println!(
        "{}: {} checked against the checksum database, {} damaged, {} without a lookup to check against",
        bucket.describe(),
        report.checked,
        report.damaged.len(),
        report.unchecked
    );
    Ok(if report.damaged.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Removes what was written longer than `age` ago.
pub fn prune(config: Option<&Path>, age: &str) -> anyhow::Result<ExitCode> {
    let older_than = parse_duration(age).map_err(|e| anyhow::anyhow!("--older-than: {e}"))?;
    let bucket = bucket(config)?;
    let all = modgate::ecosystems::all();
    let pruned = modgate::cache::bucket::prune_older(&bucket, &all, older_than);
    let (files, bytes) = runtime()?.block_on(pruned)?;
    println!(
        "{}: removed {files} files, {bytes} bytes written more than {age} ago",
        bucket.describe()
    );
    Ok(ExitCode::SUCCESS)
}
