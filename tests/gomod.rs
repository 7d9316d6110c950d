//! Go module interception end to end, with the real go command: the client
//! sets only HTTPS_PROXY and SSL_CERT_FILE; modgate intercepts
//! proxy.golang.org and serves it from a local test mirror.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex, OnceLock};

use common::gomod::*;
use common::*;

/// Logs of every in-process modgate of this test binary, for assertions.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .try_init();
        buffer
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

/// Everything one scenario needs: the module tree, modgate, a go environment.
struct Setup {
    work: tempfile::TempDir,
    proxy: Proxy,
    go: GoEnv,
}

async fn setup(mirrors: &[String], gomod_extra: &str, goproxy: &str) -> Setup {
    setup_with_sumdb(mirrors, mirrors, "off", gomod_extra, goproxy).await
}

/// `sumdb_mirrors` serve the checksum database that `gosumdb` names.
async fn setup_with_sumdb(
    mirrors: &[String],
    sumdb_mirrors: &[String],
    gosumdb: &str,
    gomod_extra: &str,
    goproxy: &str,
) -> Setup {
    logs();
    let work = tempfile::tempdir().unwrap();
    let ca_dir = work.path().join("certs");
    let quoted = |urls: &[String]| {
        let list: Vec<String> = urls.iter().map(|m| format!("{m:?}")).collect();
        list.join(", ")
    };
    // modgate verifies against the test database the go command uses; with
    // none, it does not verify (and never asks a real one).
    let verification = match gosumdb.split_whitespace().next() {
        _ if gomod_extra.contains("verify") => String::new(),
        Some("off") | None => "verify = \"off\"\n".to_string(),
        Some(key) => format!("sumdb_key = {key:?}\n"),
    };
    let config = format!(
        "[proxy]\nallow_clients = [\"127.0.0.0/8\"]\ndeny_destinations = []\n[intercept]\nca_dir = {ca_dir:?}\n[gomod]\nmirrors = [{}]\nsumdb_mirrors = [{}]\nmirror_timeout = \"1s\"\n{verification}{gomod_extra}\n",
        quoted(mirrors),
        quoted(sumdb_mirrors)
    );
    let proxy = Proxy::start(&config).await;
    let bundle = cert_bundle(
        &ca_dir.join("modgate-ca.pem"),
        &work.path().join("bundle.pem"),
    );
    let go = GoEnv {
        proxy: Some(proxy.addr),
        netns: None,
        work: work.path().to_path_buf(),
        cert_bundle: bundle,
        goproxy: goproxy.to_string(),
        gosumdb: gosumdb.to_string(),
    };
    Setup { work, proxy, go }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    build_goproxy_dir(dir.path(), "");
    dir
}

async fn download_and_build(s: &Setup) -> std::path::PathBuf {
    let app = s.work.path().join("app");
    build_app(&app);
    let out = s.go.run(&app, &["mod", "download", "all"]).await;
    assert!(
        out.status.success(),
        "go mod download all failed:\n{}",
        text(&out)
    );
    let out = s.go.run(&app, &["build", "-o", "app", "."]).await;
    assert!(out.status.success(), "go build failed:\n{}", text(&out));
    let run = std::process::Command::new(app.join("app"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout), "42\n".repeat(4));
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_mod_download_and_build_are_served_by_the_mirror() {
    let tree = tree();
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let s = setup(&[mirror.url()], "", DEFAULT_GOPROXY).await;
    let app = download_and_build(&s).await;
    // The go command sends `!` as %21; the path bytes reach the mirror unchanged.
    let seen: Vec<String> = mirror
        .requests()
        .iter()
        .map(|p| p.replace("%21", "!"))
        .collect();
    for expected in [
        "/example.com/!acme/!lib/@v/v1.0.0.mod",
        "/example.com/!acme/!lib/@v/v1.0.0.zip",
        "/example.com/shapes/v2/@v/v2.1.0.zip",
        "/example.com/big/@v/v1.0.0.zip",
        "/example.com/util/@v/v1.2.0.zip",
    ] {
        assert!(
            seen.iter().any(|p| p == expected),
            "mirror never saw {expected}: {seen:#?}"
        );
    }
    assert!(s.proxy.running.stats.tunnels.get() >= 1);

    // A mirror serving a tampered zip: the go command's own check fails (go.sum from the first run).
    let lying_tree = tempfile::tempdir().unwrap();
    build_goproxy_dir(lying_tree.path(), " (tampered)");
    let bad = Mirror::start(lying_tree.path().to_path_buf(), Behaviour::Serve).await;
    let s2 = setup(&[bad.url()], "", DEFAULT_GOPROXY).await;
    let out = s2.go.run(&app, &["mod", "download", "all"]).await;
    assert!(
        !out.status.success(),
        "tampered zip accepted:\n{}",
        text(&out)
    );
    assert!(text(&out).contains("checksum mismatch"), "{}", text(&out));
}

/// GOSUMDB names sum.golang.org with the test database's key: every module is
/// verified through modgate, once via `/sumdb/sum.golang.org/` on the proxy
/// host and once with an explicit URL (a CONNECT to sum.golang.org itself,
/// intercepted). A mirror serving tampered zips is then caught by modgate's
/// own check against the database, with no go.sum to help.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_database_verifies_every_module_through_modgate() {
    let tree = tree();
    let sumdb = SumDb::start(tree.path(), "sum.golang.org").await;
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let forms = [
        (
            sumdb.key.clone(),
            "proxy.golang.org",
            "/sumdb/sum.golang.org/lookup/",
        ),
        (
            format!("{} https://sum.golang.org", sumdb.key),
            "sum.golang.org",
            "/lookup/",
        ),
    ];
    for (gosumdb, host, prefix) in forms {
        let before = sumdb.requests().len();
        let s = setup_with_sumdb(
            &[mirror.url()],
            &[sumdb.url()],
            &gosumdb,
            "",
            DEFAULT_GOPROXY,
        )
        .await;
        let app = download_and_build(&s).await;
        let asked = sumdb.requests()[before..].to_vec();
        for m in MODULES {
            let lookup = format!("/lookup/{}@{}", escape(m.path), m.version);
            assert!(
                asked.contains(&lookup),
                "{gosumdb}: no {lookup} in {asked:#?}"
            );
        }
        assert!(asked.iter().any(|p| p.starts_with("/tile/")), "{asked:#?}");
        let sums = std::fs::read_to_string(app.join("go.sum")).unwrap();
        assert_eq!(sums.lines().count(), 2 * MODULES.len(), "{sums}");
        // modgate served the lookups for the host this form of GOSUMDB names.
        let served = format!("{prefix}example.com/util@v1.2.0");
        let logs = log_text();
        assert!(
            logs.lines().any(|l| l.contains(&served)
                && l.contains(host)
                && (host == "proxy.golang.org" || !l.contains("proxy.golang.org"))),
            "{gosumdb}: no {host} {served} in the logs:\n{logs}"
        );
    }

    let lying_tree = tempfile::tempdir().unwrap();
    build_goproxy_dir(lying_tree.path(), " (tampered)");
    let bad = Mirror::start(lying_tree.path().to_path_buf(), Behaviour::Serve).await;
    let s = setup_with_sumdb(
        &[bad.url()],
        &[sumdb.url()],
        &sumdb.key,
        "",
        DEFAULT_GOPROXY,
    )
    .await;
    let app = s.work.path().join("app");
    build_app(&app);
    let out = s.go.run(&app, &["mod", "download", "all"]).await;
    let said = text(&out);
    assert!(!out.status.success(), "tampered zip accepted:\n{said}");
    // modgate checks the mirror's bytes against the database itself: the
    // client never has a whole tampered file to check.
    let logs = log_text();
    assert!(
        logs.contains("verification failed") && logs.contains("hash mismatch"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_the_second_mirror() {
    let tree = tree();
    let good = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let broken = Mirror::start(tree.path().to_path_buf(), Behaviour::Status500).await;
    let hanging = Mirror::start(tree.path().to_path_buf(), Behaviour::Hang).await;
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    for first in [refused, broken.url(), hanging.url()] {
        let s = setup(
            &[first.clone(), good.url()],
            "demote_for = \"1m\"",
            DEFAULT_GOPROXY,
        )
        .await;
        download_and_build(&s).await;
        let logs = log_text();
        assert!(
            logs.lines()
                .any(|l| l.contains("mirror demoted") && l.contains(&first)),
            "no demotion of {first} in the logs:\n{logs}"
        );
    }
    assert!(good.requests().iter().any(|p| p.ends_with(".zip")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_mirrors_down_gives_the_configured_status_and_reason() {
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    for (setting, status) in [
        ("bad_gateway", "502 Bad Gateway"),
        ("not_found", "404 Not Found"),
    ] {
        let extra = format!("on_mirror_failure = \"{setting}\"");
        let s = setup(
            std::slice::from_ref(&refused),
            &extra,
            "https://proxy.golang.org",
        )
        .await;
        let app = s.work.path().join("app");
        build_app(&app);
        let out =
            s.go.run(&app, &["mod", "download", "example.com/util@v1.2.0"])
                .await;
        let shown = text(&out);
        assert!(!out.status.success(), "{shown}");
        assert!(shown.contains(status), "{setting}: {shown}");
        assert!(shown.contains("every mirror failed"), "{setting}: {shown}");
    }
}

/// With the go command's default GOPROXY (`…,direct`), modgate's reason
/// reaches the user when every mirror is down and for a private module:
/// its answers (502, 403) stop the go command instead of sending it on to
/// `direct`, whose error would be all it showed. Whatever modgate does not
/// intercept goes to a parent proxy that refuses, so nothing could leave
/// the machine even if the go command went direct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasons_reach_the_go_command_with_the_default_goproxy() {
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let extra = "private = \"git.corp.example/*\"\n\
                 [upstream]\nproxy = \"http://127.0.0.1:9\"\nno_proxy = \"127.0.0.1\"";
    let s = setup(
        std::slice::from_ref(&refused),
        extra,
        "https://proxy.golang.org,direct",
    )
    .await;
    let app = s.work.path().join("app");
    build_app(&app);
    let out =
        s.go.run(&app, &["mod", "download", "example.com/util@v1.2.0"])
            .await;
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(shown.contains("502 Bad Gateway"), "{shown}");
    assert!(shown.contains("modgate: every mirror failed"), "{shown}");
    assert_eq!(
        shown.matches("Connection refused").count(),
        shown.matches("modgate:").count(),
        "a cause repeated: {shown}"
    );
    let out =
        s.go.run(
            &app,
            &["mod", "download", "git.corp.example/team/secret@v1.0.0"],
        )
        .await;
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(shown.contains("403 Forbidden"), "{shown}");
    assert!(
        shown.contains("modgate: git.corp.example/team/secret is private")
            && shown.contains("set GOPRIVATE=git.corp.example/*"),
        "{shown}"
    );
    assert_eq!(
        s.proxy.running.stats.via_parent.get(),
        0,
        "the go command went direct"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_modules_never_reach_a_mirror() {
    let tree = tree();
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let s = setup(
        &[mirror.url()],
        "private = \"git.corp.example/*\"",
        "https://proxy.golang.org",
    )
    .await;
    let app = s.work.path().join("app");
    build_app(&app);
    let out =
        s.go.run(
            &app,
            &["mod", "download", "git.corp.example/team/secret@v1.0.0"],
        )
        .await;
    let shown = text(&out);
    assert!(!out.status.success(), "{shown}");
    assert!(
        shown.contains("403 Forbidden") && shown.contains("is private (gomod.private"),
        "{shown}"
    );
    // Also the case-encoded and %21 spellings, and sumdb lookups, via curl.
    let ca = s.work.path().join("bundle.pem").display().to_string();
    for url in [
        "https://proxy.golang.org/git.corp.example/!team/x/@v/list",
        "https://proxy.golang.org/git.corp.example/%21team/x/@latest",
        "https://proxy.golang.org/sumdb/sum.golang.org/lookup/git.corp.example/team/x@v1.0.0",
        "https://sum.golang.org/lookup/git.corp.example/team/x@v1.0.0",
    ] {
        let out = curl(&["-i", "-x", &s.proxy.url(), "--cacert", &ca, url]).await;
        assert!(stdout(&out).starts_with("HTTP/"), "{url}: {}", stderr(&out));
        assert!(stdout(&out).contains(" 403"), "{url}: {}", stdout(&out));
    }
    let seen = mirror.requests();
    assert!(
        seen.iter().all(|p| !p.contains("git.corp.example")),
        "a private path reached the mirror: {seen:#?}"
    );
    // Non-private modules are still served.
    let out =
        s.go.run(&app, &["mod", "download", "example.com/util@v1.2.0"])
            .await;
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sumdb_supported_is_answered_by_modgate() {
    let tree = tree();
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let s = setup(&[mirror.url()], "", DEFAULT_GOPROXY).await;
    let ca = s.work.path().join("bundle.pem").display().to_string();
    let out = curl(&[
        "-i",
        "-x",
        &s.proxy.url(),
        "--cacert",
        &ca,
        "https://proxy.golang.org/sumdb/sum.golang.org/supported",
    ])
    .await;
    // First the CONNECT answer, then (HTTP/2, as the go command negotiates) modgate's own 200.
    assert!(stdout(&out).contains("\r\nHTTP/2 200"), "{}", stdout(&out));
    assert!(mirror.requests().is_empty());
}

fn write_check_program(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("go.mod"), "module check\n\ngo 1.21\n").unwrap();
    std::fs::write(
        dir.join("main.go"),
        "package main\n\nimport (\n\t\"crypto/tls\"\n\t\"fmt\"\n\t\"os\"\n)\n\nfunc main() {\n\tc, err := tls.Dial(\"tcp\", os.Args[1], &tls.Config{ServerName: os.Args[2]})\n\tif err != nil {\n\t\tfmt.Println(\"REJECTED:\", err)\n\t\tos.Exit(1)\n\t}\n\tc.Close()\n\tfmt.Println(\"ACCEPTED\")\n}\n",
    )
    .unwrap();
}

/// Serves TLS on loopback with `chain` and `key` until the test ends.
async fn serve_tls(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> std::net::SocketAddr {
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(stream).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_is_name_constrained() {
    let work = tempfile::tempdir().unwrap();
    let hosts = vec!["proxy.golang.org".to_string(), "sum.golang.org".to_string()];
    modgate::tls::ca::init(work.path(), &hosts, false).unwrap();
    let cert = work.path().join("modgate-ca.pem");
    let key = work.path().join("modgate-ca.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        modgate::tls::ca::init(work.path(), &hosts, false).is_err(),
        "overwrote without --force"
    );

    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("X509v3 Name Constraints: critical")
            || shown.contains("X509v3 Name Constraints"),
        "{shown}"
    );
    assert!(
        shown.contains("DNS:proxy.golang.org") && shown.contains("DNS:sum.golang.org"),
        "{shown}"
    );

    // modgate never issues outside the constraints.
    let ca = modgate::tls::Ca::load(work.path()).unwrap();
    assert!(ca.mint("proxy.golang.org").is_ok());
    assert!(matches!(
        ca.mint("example.com"),
        Err(modgate::tls::CaError::NotPermitted(_))
    ));
    assert!(matches!(
        ca.mint("proxy.golang.org.evil.example"),
        Err(modgate::tls::CaError::NotPermitted(_))
    ));

    // Even a certificate signed with the CA key for another name is rejected by the go client.
    let key_pair = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&key).unwrap()).unwrap();
    let ca_der =
        rustls::pki_types::pem::PemObject::from_pem_slice(&std::fs::read(&cert).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(&ca_der, key_pair).unwrap();
    let bundle = cert_bundle(&cert, &work.path().join("bundle.pem"));
    let check = work.path().join("check");
    write_check_program(&check);
    let go = GoEnv {
        proxy: Some("127.0.0.1:9".parse().unwrap()),
        netns: None,
        work: work.path().to_path_buf(),
        cert_bundle: bundle,
        goproxy: "off".into(),
        gosumdb: "off".into(),
    };
    for (name, accepted) in [("proxy.golang.org", true), ("evil.example", false)] {
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let key_der = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
        let addr = serve_tls(vec![leaf.der().clone(), ca_der.clone()], key_der).await;
        let out = go.run(&check, &["run", ".", &addr.to_string(), name]).await;
        let shown = text(&out);
        if accepted {
            assert!(shown.contains("ACCEPTED"), "{name}: {shown}");
        } else {
            assert!(shown.contains("REJECTED"), "{name}: {shown}");
            assert!(
                shown.contains("not permitted") || shown.contains("constraint"),
                "{name}: {shown}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypassed_hosts_and_clients_are_tunnelled_untouched() {
    let origin = TlsOrigin::start().await;
    let port = origin.addr.port();
    let url = format!("https://localhost:{port}/");
    let cacert = origin.cert_pem.display().to_string();
    let work = tempfile::tempdir().unwrap();
    let base = format!(
        "[proxy]\nallow_clients = [\"127.0.0.0/8\"]\ndeny_destinations = []\nconnect_ports = [{port}]\n[gomod]\nproxy_hosts = [\"localhost\"]\nsumdb_hosts = []\nmirrors = [\"http://127.0.0.1:9\"]\n"
    );
    let ca_dir = |n: &str| work.path().join(n).display().to_string();

    // Host in intercept.bypass: the client sees the origin's own certificate.
    let proxy = Proxy::start(&format!(
        "{base}[intercept]\nca_dir = {:?}\nbypass = \"localhost\"\n",
        ca_dir("a")
    ))
    .await;
    let out = curl(&["-v", "-x", &proxy.url(), "--cacert", &cacert, &url]).await;
    assert_eq!(stdout(&out), "tls-origin-ok", "{}", stderr(&out));

    // Client in bypass_clients: untouched; another client is intercepted.
    let proxy = Proxy::start(&format!(
        "{base}[intercept]\nca_dir = {:?}\nbypass_clients = [\"127.0.0.3/32\"]\n",
        ca_dir("b")
    ))
    .await;
    let out = curl(&[
        "--interface",
        "127.0.0.3",
        "-x",
        &proxy.url(),
        "--cacert",
        &cacert,
        &url,
    ])
    .await;
    assert_eq!(stdout(&out), "tls-origin-ok", "{}", stderr(&out));
    let out = curl(&["-v", "-x", &proxy.url(), "--cacert", &cacert, &url]).await;
    assert!(
        !out.status.success(),
        "intercepted connection verified against the origin's cert"
    );
    let modgate_ca = work.path().join("b/modgate-ca.pem").display().to_string();
    let out = curl(&["-v", "-x", &proxy.url(), "--cacert", &modgate_ca, &url]).await;
    assert!(
        stderr(&out).contains("issuer: CN=modgate local CA"),
        "{}",
        stderr(&out)
    );
}

/// Intercepted hosts hand out session tickets: a client that keeps sessions
/// resumes on its next connection (no certificate sent, no signature made),
/// however many clients came since; one that does not gets a full
/// handshake each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_intercepted_connection_resumes_its_tls_session() {
    use common::handshake::{connector, once};
    use rustls::HandshakeKind::{Full, Resumed};
    let tree = tree();
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let s = setup(&[mirror.url()], "", DEFAULT_GOPROXY).await;
    let ca = s.work.path().join("certs/modgate-ca.pem");
    let keeps = connector(&ca, true);
    assert_eq!(once(s.proxy.addr, &keeps).await, Ok(Full));
    assert_eq!(once(s.proxy.addr, &keeps).await, Ok(Resumed));
    assert_eq!(once(s.proxy.addr, &keeps).await, Ok(Resumed));
    let forgets = connector(&ca, false);
    assert_eq!(once(s.proxy.addr, &forgets).await, Ok(Full));
    assert_eq!(once(s.proxy.addr, &forgets).await, Ok(Full));
    // Stateless tickets: after 300 other clients' sessions (more than a
    // server-side session cache would keep), the first still resumes.
    for _ in 0..300 {
        let other = connector(&ca, true);
        assert_eq!(once(s.proxy.addr, &other).await, Ok(Full));
    }
    assert_eq!(once(s.proxy.addr, &keeps).await, Ok(Resumed));
    assert!(mirror.requests().is_empty());
}
