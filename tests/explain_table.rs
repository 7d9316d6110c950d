//! `modgate explain` and a running modgate make the same decision, by the
//! same rule, for every kind of rule: a table of targets is explained, then
//! sent through the real binary (JSON log), and the two are compared.

mod common;

use std::path::Path;
use std::process::Command;

use common::curl;
use common::netns::Modgate;

/// (client, target): `http://…` is forwarded, `https://…` is a CONNECT.
const TABLE: &[(&str, &str)] = &[
    ("127.0.0.1", "http://a.example/"),
    ("127.0.0.1", "https://a.example/"),
    ("127.0.0.1", "https://a.example:8443/"),
    ("127.0.0.1", "https://a.example:22/"),
    ("127.0.0.1", "http://a.example:25/"),
    ("127.0.0.1", "http://a.example:1023/"),
    ("127.0.0.1", "http://b.example:443/"),
    ("127.0.0.1", "http://x.corp.example/"),
    ("127.0.0.1", "https://x.corp.example/"),
    ("127.0.0.1", "http://192.168.1.5:8080/"),
    ("127.0.0.1", "https://direct.example:8443/"),
    ("127.0.0.1", "https://direct.example/"),
    ("127.0.0.1", "http://10.66.1.1/"),
    ("127.0.0.1", "https://10.66.0.1/"),
    ("127.0.0.1", "http://169.254.169.254/latest"),
    ("127.0.0.1", "http://[::1]:8080/"),
    ("127.0.0.1", "http://[::ffff:169.254.1.1]/"),
    ("127.0.0.1", "http://localhost:8080/"),
    ("127.0.0.1", "http://127.0.0.5:8080/"),
    (
        "127.0.0.1",
        "https://proxy.golang.org/github.com/x/y/@v/list",
    ),
    (
        "127.0.0.1",
        "https://proxy.golang.org/git.corp.example/team/m/@v/list",
    ),
    (
        "127.0.0.1",
        "https://sum.golang.org/lookup/git.corp.example/a/b@v1.0.0",
    ),
    (
        "127.0.0.1",
        "https://sum.golang.org/lookup/github.com/x/y@v1.0.0",
    ),
    (
        "127.0.0.1",
        "https://proxy.golang.org/sumdb/sum.golang.org/supported",
    ),
    (
        "127.0.0.1",
        "https://proxy.golang.org/sumdb/other.example/supported",
    ),
    (
        "127.0.0.1",
        "https://proxy.golang.org/github.com/x%zz/y/@v/list",
    ),
    (
        "127.0.0.1",
        "https://goproxy.corp.example/github.com/x/y/@v/list",
    ),
    (
        "127.0.0.3",
        "https://proxy.golang.org/github.com/x/y/@v/list",
    ),
    ("127.0.0.3", "http://a.example/"),
    ("127.0.0.4", "http://a.example/"),
    (
        "127.0.0.4",
        "https://proxy.golang.org/github.com/x/y/@v/list",
    ),
    ("127.0.0.1", "http://proxy.golang.org/x"),
    ("127.0.0.1", "http://user:secret@a.example/"),
];

fn explain(config: &Path, client: &str, target: &str) -> Decision {
    let out = Command::new(env!("CARGO_BIN_EXE_modgate"))
        .args(["explain", "--config", config.to_str().unwrap(), target])
        .args(["--client", client])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{target}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    // modgate's own answer to a module request ("answer:   403 from modgate").
    let status = field("answer:").and_then(|a| a.split_whitespace().next().map(str::to_string));
    (
        field("decision:").unwrap(),
        field("rule:").unwrap(),
        field("plan:"),
        status,
    )
}

/// Decision, rule, module plan, and the status of modgate's own answer to
/// a module request.
type Decision = (String, String, Option<String>, Option<String>);

/// The decision, rule and plan the running modgate logged for one request,
/// and its module answer's status.
fn logged(lines: &[serde_json::Value]) -> Decision {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
    let access = |kind: &str| {
        lines
            .iter()
            .find(move |l| l["target"] == "access" && l["fields"]["message"] == kind)
    };
    let decided = access("tunnel")
        .or_else(|| access("request"))
        .unwrap_or_else(|| panic!("no decision logged in {lines:#?}"));
    let fields = &decided["fields"];
    // A module request's access line names the module plan as its rule.
    let module = access("module");
    let plan = module.and_then(|l| text(&l["fields"]["rule"]));
    // Compared where explain says modgate answers itself (not the mirrors).
    let own = ["private", "invalid", "supported", "not_served"];
    let status = module
        .filter(|_| plan.as_deref().is_some_and(|p| own.contains(&p)))
        .map(|l| l["fields"]["status"].to_string());
    (
        text(&fields["decision"]).unwrap(),
        text(&fields["rule"]).unwrap(),
        plan,
        status,
    )
}

async fn through(proxy: &str, ca: &Path, client: &str, target: &str) {
    let ca = ca.to_str().unwrap();
    let mut args = vec![
        "--interface",
        client,
        "-x",
        proxy,
        "--cacert",
        ca,
        "-o",
        "/dev/null",
    ];
    args.extend(["--max-time", "5", target]);
    if target.starts_with("https://") {
        args.push("-p");
    }
    curl(&args).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_and_run_decide_alike() {
    let work = tempfile::tempdir().unwrap();
    // The parent: a second modgate that takes anything.
    let parent_config = work.path().join("parent.toml");
    std::fs::write(
        &parent_config,
        "[proxy]\nlisten = [\"127.0.0.1:0\"]\nallow_clients = [\"127.0.0.0/8\"]\ndeny_destinations = []\nconnect_ports = [443, 8443, 22]\n[upstream]\nconnect_timeout = \"1s\"\n[intercept]\nenabled = false\n",
    )
    .unwrap();
    let parent_args = ["run", "--config", parent_config.to_str().unwrap()];
    let parent = Modgate::spawn(None, &parent_args, None, 1).await;
    let ca_dir = work.path().join("ca");
    let config = work.path().join("modgate.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = [\"127.0.0.1:0\"]\nallow_clients = [\"127.0.0.1/32\", \"127.0.0.3/32\"]\nconnect_ports = [443, 8443]\ndeny_destinations = [\"10.66.0.0/16\", \"169.254.0.0/16\", \"127.0.0.0/8\", \"::1/128\"]\n\
             [upstream]\nproxy = \"http://{}\"\nno_proxy = \".corp.example, 192.168.0.0/16, direct.example:8443\"\nconnect_timeout = \"1s\"\n\
             [intercept]\nca_dir = {ca_dir:?}\nbypass = \"goproxy.corp.example\"\nbypass_clients = [\"127.0.0.3/32\"]\n\
             [gomod]\nproxy_hosts = [\"proxy.golang.org\", \"goproxy.corp.example\"]\nmirrors = [\"http://127.0.0.1:9\"]\nsumdb_mirrors = [\"http://127.0.0.1:9\"]\nprivate = \"git.corp.example/*\"\nmirror_timeout = \"1s\"\n\
             [log]\nformat = \"json\"\n",
            parent.addr("explicit proxy")
        ),
    )
    .unwrap();
    let args = ["run", "--config", config.to_str().unwrap()];
    let modgate = Modgate::spawn(None, &args, None, 1).await;
    let proxy = format!("http://{}", modgate.addr("explicit proxy"));
    let ca = ca_dir.join("modgate-ca.pem");

    let mut kinds = std::collections::BTreeSet::new();
    for (client, target) in TABLE {
        let expected = explain(&config, client, target);
        let seen_before = modgate.log().lines().count();
        through(&proxy, &ca, client, target).await;
        let wanted = |log: &str| {
            let new: Vec<&str> = log.lines().skip(seen_before).collect();
            new.iter().any(|l| {
                l.contains("\"message\":\"tunnel\"") || l.contains("\"message\":\"request\"")
            }) && (expected.2.is_none() || new.iter().any(|l| l.contains("\"message\":\"module\"")))
        };
        let log = modgate.log_when(wanted).await;
        let lines: Vec<serde_json::Value> = log
            .lines()
            .skip(seen_before)
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert_eq!(logged(&lines), expected, "{client} -> {target}");
        eprintln!("{client} {target}: {expected:?}");
        kinds.insert(format!(
            "{} / {}",
            expected.0,
            expected.2.unwrap_or_default()
        ));
    }
    let log = modgate.log();
    assert!(!log.contains("secret"), "credentials in the log:\n{log}");
    // Every kind of outcome was exercised.
    for kind in [
        "deny / ",
        "direct / ",
        "parent / ",
        "intercept / private",
        "intercept / proxy_mirrors",
        "intercept / sumdb_mirrors",
        "intercept / supported",
    ] {
        assert!(kinds.contains(kind), "{kind} not in {kinds:?}");
    }
}
