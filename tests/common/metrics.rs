//! `/metrics` as a real Prometheus text-format parser reads it (PyPI's
//! prometheus_client, installed by scripts/test-deps.sh).

use std::collections::HashMap;
use std::path::PathBuf;

use super::{curl, stderr};

/// `name -> value` of every sample, parsed by prometheus_client.
pub async fn scrape(admin: std::net::SocketAddr, token: Option<&str>) -> HashMap<String, f64> {
    let url = format!("http://{admin}/metrics");
    let header = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut args = vec!["-sf", url.as_str()];
    if let Some(header) = &header {
        args.extend(["-H", header.as_str()]);
    }
    let out = curl(&args).await;
    assert!(out.status.success(), "scrape: {}", stderr(&out));
    let python =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/venv/bin/python");
    let parse = "import sys\n\
                 from prometheus_client.parser import text_string_to_metric_families\n\
                 for family in text_string_to_metric_families(sys.stdin.read()):\n\
                 \x20   for s in family.samples:\n\
                 \x20       labels = ','.join(f'{k}={v}' for k, v in sorted(s.labels.items()))\n\
                 \x20       print(s.name + '{' + labels + '}', s.value)\n";
    let mut child = tokio::process::Command::new(python)
        .args(["-c", parse])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the test venv's python (scripts/test-deps.sh)");
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&out.stdout).await.unwrap();
    drop(stdin);
    let parsed = child.wait_with_output().await.unwrap();
    assert!(
        parsed.status.success(),
        "not the Prometheus text format: {}\n{}",
        String::from_utf8_lossy(&parsed.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(parsed.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(name, value)| (name.to_string(), value.parse().unwrap()))
        .collect()
}

/// How much `key` grew from `before` to `after` (absent: 0).
pub fn moved(before: &HashMap<String, f64>, after: &HashMap<String, f64>, key: &str) -> f64 {
    after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
}

/// Waits until no module download is in flight
/// (`modgate_cache_downloads_in_flight` is 0), so a file fetched before
/// is read from the cache, not joined to its own download. Bounded: it
/// panics after 30 s.
pub async fn downloads_landed(admin: std::net::SocketAddr, token: Option<&str>) {
    let key = "modgate_cache_downloads_in_flight{}";
    for _ in 0..600 {
        if scrape(admin, token).await.get(key) == Some(&0.0) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{key} never fell to 0");
}
