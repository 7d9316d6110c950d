//! What deploy/ ships for operators holds up: the Prometheus alert rules
//! pass `promtool check` and their unit tests, every dashboard query is
//! valid PromQL, and every modgate metric either names is one a running
//! modgate exports.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::gomod::{Behaviour, Mirror};
use common::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// promtool, unpacked by scripts/test-deps.sh.
async fn promtool(args: &[&str], dir: &Path) -> std::process::Output {
    let bin = root().join("target/test-tools/prometheus/usr/bin/promtool");
    let run = tokio::process::Command::new(bin)
        .args(args)
        .current_dir(dir)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("promtool in time")
        .expect("promtool (scripts/test-deps.sh unpacks it)")
}

fn said(out: &std::process::Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

/// The `modgate_*` names in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("modgate_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Every sample name a running modgate's /metrics can show, from its
/// `# TYPE` lines (a family without samples yet is listed too).
async fn exported() -> BTreeSet<String> {
    let work = tempfile::tempdir().unwrap();
    // A mirror with no modules (it answers 404) after one that refuses.
    let empty = Mirror::start(work.path().join("empty"), Behaviour::Serve).await;
    let proxy = Proxy::start(&format!(
        "[proxy]\nallow_clients = [\"127.0.0.0/8\"]\n[intercept]\nca_dir = {:?}\n\
         [gomod]\nmirrors = [\"http://127.0.0.1:9\", \"{}\"]\nverify = \"off\"\n",
        work.path().join("certs"),
        empty.url()
    ))
    .await;
    // A module request (one mirror fails, one answers) brings out the
    // families that have no sample before traffic.
    let module = format!("{}/example.com/m/@v/v1.0.0.mod", proxy.url());
    curl(&["-s", &module]).await;
    let admin = proxy.running.admin.unwrap();
    let out = curl(&["-sf", &format!("http://{admin}/metrics")]).await;
    let text = stdout(&out);
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(typed) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = typed.split_once(' ').unwrap();
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        for suffix in suffixes {
            names.insert(format!("{name}{suffix}"));
        }
    }
    assert!(names.contains("modgate_mirror_up"), "{text}");
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = root().join("deploy/prometheus");
    let out = promtool(&["check", "rules", "modgate-alerts.yml"], &dir).await;
    assert!(out.status.success(), "{}", said(&out));
    let out = promtool(&["test", "rules", "modgate-alerts.test.yml"], &dir).await;
    assert!(out.status.success(), "{}", said(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_are_valid_promql() {
    let text =
        std::fs::read_to_string(root().join("deploy/grafana/modgate-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| t["expr"].as_str().unwrap().replace("$instance", ".*"))
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    // Each query as a recording rule: promtool parses it as Prometheus would.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("dashboard.yml"), rules).unwrap();
    let out = promtool(&["check", "rules", "dashboard.yml"], work.path()).await;
    assert!(out.status.success(), "{}", said(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_names_only_metrics_modgate_exports() {
    let exported = exported().await;
    for file in [
        "deploy/prometheus/modgate-alerts.yml",
        "deploy/grafana/modgate-dashboard.json",
    ] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let unknown: Vec<String> = metric_names(&text)
            .into_iter()
            .filter(|n| !exported.contains(n))
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} names {unknown:?}; modgate exports {exported:?}"
        );
    }
}

#[test]
fn the_unit_reloads_with_sighup() {
    let unit = std::fs::read_to_string(root().join("deploy/modgate.service")).unwrap();
    assert!(
        unit.contains("ExecReload=/bin/kill -HUP $MAINPID"),
        "{unit}"
    );
}
