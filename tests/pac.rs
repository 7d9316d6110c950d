//! The PAC file, fetched from the explicit listener with curl and evaluated
//! by a real PAC engine (npm's pac-resolver, installed by
//! scripts/test-deps.sh): DIRECT exactly where modgate's own NO_PROXY
//! matcher says `upstream.no_proxy` matches, the proxy everywhere else.

mod common;

use std::path::PathBuf;

use common::{Proxy, curl};
use modgate::rules::NoProxy;

/// Every NO_PROXY form of design.md, and the traps beside them.
const NO_PROXY: &str = "corp.example, .dot.example *.star.example, 10.0.0.0/8, 127.0.0.0/8, \
     192.168.1.7, ::1, [fd00::5], fd12::/16, internal.example:8080, Upper.Example.";

/// `(url, what the engine passes as host when not derived from the url)`.
const CASES: &[&str] = &[
    "http://corp.example/",
    "http://a.b.corp.example/x",
    "http://badcorp.example/",
    "http://corp.example.evil.test/",
    "http://dot.example/",
    "http://x.dot.example/",
    "http://star.example/",
    "http://y.star.example/",
    "http://notstar.example/",
    "http://10.1.2.3/",
    "https://10.255.0.1:8443/",
    "http://11.0.0.1/",
    "http://127.0.0.1:3128/",
    "http://localhost/",
    "http://192.168.1.7:8443/",
    "http://192.168.1.8/",
    "http://[::1]/",
    "http://[fd00::5]:81/",
    "http://[fd00::6]/",
    "http://[fd12:1::1]/",
    "http://[fd13::1]/",
    "http://internal.example:8080/",
    "http://internal.example/",
    "https://internal.example/",
    "http://upper.example/",
    "http://UPPER.EXAMPLE./",
    "http://sub.upper.example/",
    "http://example.com/",
];

fn pac_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/pac/node_modules")
}

/// Evaluates `pac` for each url with pac-resolver; the answers in order.
async fn evaluate(pac: &str, urls: &[&str]) -> Vec<String> {
    let work = tempfile::tempdir().unwrap();
    let modules = pac_dir();
    let script = format!(
        "import {{ createPacResolver }} from '{}/pac-resolver/dist/index.js';\n\
         import {{ QuickJS }} from '{}/quickjs-wasi/dist/index.js';\n\
         import {{ readFileSync }} from 'fs';\n\
         const qjs = await QuickJS.create();\n\
         const find = createPacResolver(qjs, readFileSync(process.argv[2], 'utf8'));\n\
         for (const url of JSON.parse(process.argv[3])) console.log(await find(url));\n",
        modules.display(),
        modules.display()
    );
    let script_file = work.path().join("evaluate.mjs");
    std::fs::write(&script_file, script).unwrap();
    let pac_file = work.path().join("proxy.pac");
    std::fs::write(&pac_file, pac).unwrap();
    let out = tokio::process::Command::new("node")
        .arg(&script_file)
        .arg(&pac_file)
        .arg(serde_json::to_string(urls).unwrap())
        .output()
        .await
        .expect("node runs (scripts/test-deps.sh installs it)");
    assert!(
        out.status.success(),
        "pac-resolver: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// modgate's own decision for a url: DIRECT when `no_proxy` matches.
fn expected(no_proxy: &NoProxy, url: &str, proxy: &str) -> String {
    let parsed = url::Url::parse(url).unwrap();
    let host = parsed
        .host_str()
        .unwrap()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = parsed.port_or_known_default().unwrap();
    if no_proxy.matches(host, port) {
        "DIRECT".into()
    } else {
        format!("PROXY {proxy}")
    }
}

async fn fetch_pac(proxy: &Proxy, host: Option<&str>) -> (String, String) {
    let url = format!("{}/proxy.pac", proxy.url());
    let mut args = vec!["-s", "-D", "-", &url];
    let header;
    if let Some(host) = host {
        header = format!("Host: {host}");
        args.extend(["-H", &header]);
    }
    let out = curl(&args).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pac_file_matches_no_proxy_exactly() {
    let toml = format!("[intercept]\nenabled = false\n[upstream]\nno_proxy = {NO_PROXY:?}\n");
    let proxy = Proxy::start(&toml).await;
    let (head, pac) = fetch_pac(&proxy, Some("Gateway.Corp.Example:3128")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/x-ns-proxy-autoconfig"),
        "{head}"
    );
    let answers = evaluate(&pac, CASES).await;
    let no_proxy = NoProxy::parse(NO_PROXY).unwrap();
    let mut directs = 0;
    for (url, answer) in CASES.iter().zip(&answers) {
        let want = expected(&no_proxy, url, "gateway.corp.example:3128");
        assert_eq!(answer, &want, "{url}\n{pac}");
        directs += usize::from(want == "DIRECT");
    }
    assert_eq!(answers.len(), CASES.len());
    // Both answers occur, and the names a CIDR cannot match stay proxied.
    assert!(directs > 10 && directs < CASES.len(), "{answers:?}");
    let localhost = CASES
        .iter()
        .position(|u| *u == "http://localhost/")
        .unwrap();
    assert_eq!(answers[localhost], "PROXY gateway.corp.example:3128");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_direct_and_the_public_name() {
    let proxy = Proxy::start(
        "[proxy]\npublic_name = \"gw.corp.example:8080\"\n[intercept]\nenabled = false\n\
         [upstream]\nno_proxy = \"*\"\n",
    )
    .await;
    let (_, pac) = fetch_pac(&proxy, None).await;
    assert!(pac.contains("gw.corp.example:8080"), "{pac}");
    let answers = evaluate(
        &pac,
        &["http://anything.example/", "https://[2001:db8::1]/"],
    )
    .await;
    assert_eq!(answers, ["DIRECT", "DIRECT"]);

    let proxy = Proxy::start("[intercept]\nenabled = false\n").await;
    let (_, pac) = fetch_pac(&proxy, None).await;
    let answers = evaluate(&pac, &["http://example.com/"]).await;
    assert_eq!(answers, [format!("PROXY {}", proxy.addr)]);
    let (head, _) = fetch_pac(&proxy, Some("evil\";alert(1);\"")).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
}
