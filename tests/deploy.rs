//! What deploy/ ships for operators holds up: the Prometheus alert rules
//! pass `promtool check` and their unit tests, every dashboard query is
//! valid PromQL, every modgate metric either names is one a running
//! modgate exports, and the Dockerfile builds from what it copies.

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

/// The Dockerfile's instructions (continuation lines joined), by stage.
fn dockerfile_stages() -> Vec<Vec<(String, String)>> {
    let text = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    let mut pending = String::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(line);
        let whole = std::mem::take(&mut pending);
        let Some((keyword, rest)) = whole.trim().split_once(' ') else {
            continue;
        };
        if keyword == "FROM" {
            stages.push(Vec::new());
        }
        let stage = stages.last_mut().expect("FROM comes first");
        stage.push((keyword.to_string(), rest.trim().to_string()));
    }
    stages
}

/// Copies `from` (a file or a directory, in the checkout) to `to`.
fn copy_in(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_in(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
}

/// The build stage's context: exactly the files its COPY lines name, in
/// target/docker-context (its own target/ kept, so a rebuild is quick).
fn build_context(build: &[(String, String)]) -> PathBuf {
    let context = root().join("target/docker-context");
    if let Ok(entries) = std::fs::read_dir(&context) {
        for entry in entries.flatten().filter(|e| e.file_name() != "target") {
            let path = entry.path();
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
    }
    for (_, rest) in build.iter().filter(|(k, _)| k == "COPY") {
        let words: Vec<&str> = rest.split_whitespace().collect();
        let (dest, sources) = words.split_last().unwrap();
        for source in sources {
            let dest = if *dest == "./" || *dest == "." {
                context.join(source)
            } else {
                context.join(dest)
            };
            copy_in(&root().join(source), &dest);
        }
    }
    context
}

/// The image builds: its build stage's commands, run on exactly the files
/// that stage copies (so a file the build needs and the Dockerfile leaves
/// out fails here), give a release binary; .dockerignore keeps the build
/// output and history out of the context; and the image's HEALTHCHECK
/// command passes against that binary running the image's config, and
/// fails once it stops. Docker itself is not needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_builds_from_what_the_dockerfile_copies() {
    common::netns::require_root();
    let ignored = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    for needed in ["target", ".git"] {
        assert!(ignored.lines().any(|l| l.trim() == needed), "{ignored}");
    }
    let stages = dockerfile_stages();
    let (build, image) = (&stages[0], &stages[1]);
    let context = build_context(build);
    for (_, command) in build.iter().filter(|(k, _)| k == "RUN") {
        let run = tokio::process::Command::new("sh")
            .args(["-c", command])
            .current_dir(&context)
            .env("CARGO_NET_OFFLINE", "true")
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(std::time::Duration::from_secs(900), run)
            .await
            .expect("the build stage in 15 minutes")
            .unwrap();
        assert!(out.status.success(), "RUN {command}:\n{}", said(&out));
    }
    let binary = context.join("target/release/modgate");
    healthcheck_follows_the_binary(&binary, image).await;
}

/// Runs `binary` as the image would (its config, paths under a temporary
/// /var/lib/modgate) in a network namespace of its own, where the image's
/// fixed ports are free; the HEALTHCHECK command passes while it runs and
/// fails once it has stopped.
async fn healthcheck_follows_the_binary(binary: &Path, image: &[(String, String)]) {
    let copied = |dest: &str| {
        image
            .iter()
            .filter(|(k, _)| k == "COPY")
            .find_map(|(_, rest)| rest.strip_suffix(dest).map(|s| s.trim().to_string()))
            .unwrap_or_else(|| panic!("the image copies nothing to {dest}"))
    };
    let state = tempfile::tempdir().unwrap();
    let config_text = std::fs::read_to_string(root().join(copied("/etc/modgate/modgate.toml")))
        .unwrap()
        .replace("/var/lib/modgate", state.path().to_str().unwrap());
    let config = state.path().join("modgate.toml");
    std::fs::write(&config, config_text).unwrap();
    let check = image
        .iter()
        .find(|(k, _)| k == "HEALTHCHECK")
        .map(|(_, rest)| rest.split_once("CMD ").expect("HEALTHCHECK ... CMD [..]").1)
        .expect("the image has a HEALTHCHECK");
    let check: Vec<String> = serde_json::from_str(check).expect("CMD in exec (JSON) form");
    let ns = common::netns::Netns::new("image");
    let healthy = || {
        std::process::Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .args(&check)
            .output()
            .unwrap()
            .status
            .success()
    };
    let mut modgate = tokio::process::Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(binary)
        .args(["run", "--config", config.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !healthy() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the HEALTHCHECK never passed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    modgate.kill().await.unwrap();
    let _ = modgate.wait().await;
    assert!(!healthy(), "the HEALTHCHECK passes with modgate stopped");
}
