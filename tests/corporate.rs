//! modgate behind a corporate network's way out: a parent proxy (Debian's
//! Squid) that wants a login, and a TLS-inspecting firewall that re-signs
//! every TLS connection with the company's own CA (here a mirror whose
//! certificate a "corporate" test CA signed).

mod common;

use common::gateway::{Work, download_all, get, tree};
use common::gomod::{Behaviour, CORP_CA, DEFAULT_GOPROXY, Mirror, SumDb};
use common::kerberos::{GATEWAY, REALM, Realm};
use common::squid::{HELPERS, PARENT_CA, Squid};
use common::{Origin, TlsOrigin, curl, stderr, stdout};

/// A mirror signed by the corporate CA is refused, naming that CA and the
/// key to set, until `upstream.ca_file` names the CA; then the go command
/// downloads the graph through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_resigned_by_the_firewall_is_trusted_through_upstream_ca_file() {
    let tree = tree();
    let work = Work::new();
    let ca = work.path("corp-ca.pem");
    let mirror = Mirror::start_tls(tree.path().to_path_buf(), Behaviour::Serve, &ca).await;

    // Without the CA: the start-up probe names the issuer and the key.
    let config = work.config_keyed(&[mirror.https_url()], &[mirror.https_url()], None, "");
    let gateway = work.gateway(&config).await;
    let summary = gateway.log_when(|log| log.contains("  mirrors ")).await;
    let line = summary
        .lines()
        .find(|l| l.contains("  mirrors "))
        .unwrap()
        .to_string();
    assert!(line.contains("UNREACHABLE"), "{line}");
    assert!(line.contains(CORP_CA), "the issuer is named: {line}");
    assert!(
        line.contains("upstream.ca_file"),
        "the key is named: {line}"
    );
    let endpoint = gateway.addr("explicit proxy");
    let (status, _, _) = get(endpoint, "/example.com/util/@v/v1.2.0.mod").await;
    assert_ne!(status, 200, "refused before the CA is trusted");
    assert!(
        mirror.requests().is_empty(),
        "no request reached the mirror"
    );
    // What `modgate doctor` shows clients: the mirror down, and why.
    let page = format!("http://{endpoint}/.well-known/modgate/mirrors");
    let said = stdout(&curl(&["-s", &page]).await);
    let line = said
        .lines()
        .find(|l| l.starts_with("module "))
        .unwrap_or_default();
    assert!(line.contains(" down ") && line.contains(CORP_CA), "{said}");
    assert!(line.contains("upstream.ca_file"), "{said}");
    gateway.kill().await;

    // With upstream.ca_file: the go command downloads the whole graph.
    let extra = format!("[upstream]\nca_file = {ca:?}\n");
    let config = work.config_keyed(&[mirror.https_url()], &[mirror.https_url()], None, &extra);
    let gateway = work.gateway(&config).await;
    let summary = gateway.log_when(|log| log.contains("  mirrors ")).await;
    assert!(summary.contains("(reachable,"), "{summary}");
    let go = work.go(
        "go",
        None,
        &format!("http://{}", gateway.addr("explicit proxy")),
        "off",
    );
    download_all(&go).await;
}

/// A gateway config whose way out is `upstream` (the parent and its
/// login): module files from `mirror`, verified against `sumdb`; loopback
/// origins allowed (they stand for the internet here), and CONNECT to
/// `tls`'s port.
fn behind_parent(
    work: &Work,
    (mirror, sumdb, tls): (&Mirror, &SumDb, &TlsOrigin),
    upstream: &str,
) -> std::path::PathBuf {
    let toml = format!(
        "[proxy]\nlisten = [\"127.0.0.1:0\"]\nallow_clients = [\"127.0.0.0/8\"]\ndeny_destinations = []\n\
         connect_ports = [443, {}]\n\
         [upstream]\nno_proxy = \"\"\n{upstream}\n\
         [intercept]\nca_dir = {:?}\n\
         [gomod]\nmirrors = [{:?}]\nsumdb_mirrors = [{:?}]\nsumdb_key = {:?}\n\
         [cache]\ndir = {:?}\n",
        tls.addr.port(),
        work.path("certs"),
        mirror.url(),
        sumdb.url(),
        sumdb.key,
        work.cache(),
    );
    let file = work.path("modgate.toml");
    std::fs::write(&file, toml).unwrap();
    file
}

/// A credentials file only its owner may read.
fn credentials_file(work: &Work, user: &str, password: &str) -> std::path::PathBuf {
    let file = work.path("parent-credentials.toml");
    std::fs::write(&file, format!("user = {user:?}\npassword = {password:?}\n")).unwrap();
    let mut permissions = std::fs::metadata(&file).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o600);
    std::fs::set_permissions(&file, permissions).unwrap();
    file
}

/// Everything a client does through the gateway, with the parent as the
/// only way out: the go command intercepted and through the GOPROXY
/// endpoint (the mirror and the checksum database reached by CONNECT
/// through the parent), curl to an http:// origin (forwarded through the
/// parent) and to an https:// one (a tunnel through it).
async fn everything_through(
    work: &Work,
    gateway: &common::netns::Modgate,
    (sumdb, tls): (&SumDb, &TlsOrigin),
) {
    let addr = gateway.addr("explicit proxy");
    download_all(&work.go("intercepted", Some(addr), DEFAULT_GOPROXY, &sumdb.key)).await;
    let endpoint = format!("http://{addr}");
    download_all(&work.go("endpoint", None, &endpoint, &sumdb.key)).await;
    let origin = Origin::start("127.0.0.1").await;
    let out = curl(&["-x", &endpoint, &origin.url("/bytes/5")]).await;

    assert_eq!(
        out.stdout.len(),
        5,
        "http:// through the parent: {}",
        stderr(&out)
    );
    let out = curl(&["-x", &endpoint, &origin.url("/bytes/7")]).await;
    assert_eq!(
        out.stdout.len(),
        7,
        "again, on a logged-in connection: {}",
        stderr(&out)
    );
    let url = format!("https://127.0.0.1:{}/", tls.addr.port());
    let cacert = tls.cert_pem.display().to_string();
    let out = curl(&["-x", &endpoint, "--cacert", &cacert, &url]).await;
    assert_eq!(
        stdout(&out),
        "tls-origin-ok",
        "https:// through the parent: {}",
        stderr(&out)
    );
}

/// Acceptance 1: Squid asking for NTLM (its ntlm_fake_auth helper runs a
/// real handshake): every request reaches it logged in as CORP\alice, and
/// the password is in no log of modgate's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ntlm_parent_sees_every_request_logged_in() {
    let squid = Squid::start(
        &format!("auth_param ntlm program {HELPERS}/ntlm_fake_auth\nauth_param ntlm children 2"),
        "",
    );
    let tree = tree();
    let sumdb = SumDb::start(tree.path(), "sum.golang.org").await;
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let work = Work::new();
    const PASSWORD: &str = "n0t-in-any-log";
    let secrets = credentials_file(&work, "CORP\\alice", PASSWORD);
    let upstream = format!("proxy = {:?}\ncredentials_file = {secrets:?}", squid.url());
    let tls = TlsOrigin::start().await;
    let config = behind_parent(&work, (&mirror, &sumdb, &tls), &upstream);
    let gateway = work.gateway(&config).await;
    everything_through(&work, &gateway, (&sumdb, &tls)).await;

    let gateway_log = gateway.log();
    gateway.kill().await;
    every_request_logged_in(&squid, (&mirror, &tls), "CORP\\\\alice").await;
    assert!(!gateway_log.contains(PASSWORD));
    assert!(!gateway_log.contains("refused"), "{gateway_log}");
}

/// Squid's access log, once the gateway is gone: every request (the go
/// command's tunnels to the mirror, curl's tunnel to `tls` and forwarded
/// GET) logged in as `user` (as Squid writes it).
async fn every_request_logged_in(squid: &Squid, (mirror, tls): (&Mirror, &TlsOrigin), user: &str) {
    // Squid logs a tunnel when it closes: the gateway's pooled ones close
    // with it.
    let tunnel = format!(" CONNECT 127.0.0.1:{} ", tls.addr.port());
    let mut log = squid.access_log();
    for _ in 0..100 {
        if log.contains(&tunnel) && log.matches("TCP_TUNNEL/200").count() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        log = squid.access_log();
    }
    // Requests only: not the 407s of logins, nor connections closed
    // before any request (Squid logs those as errors).
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains(" TCP_DENIED/407 "))
        .filter(|l| !l.contains(" error:transaction-end-before-headers "))
        .collect();
    assert!(lines.len() >= 6, "{log}");
    for line in &lines {
        let logged = line.split_whitespace().nth(7).unwrap_or_default();
        assert_eq!(logged, user, "every request logged in: {line}");
    }
    assert!(lines.iter().any(|l| l.contains(&tunnel)), "{log}");
    let mirror_tunnel = format!(" CONNECT {} ", mirror.url().trim_start_matches("http://"));
    assert!(lines.iter().any(|l| l.contains(&mirror_tunnel)), "{log}");
    assert!(
        lines.iter().any(|l| l.contains(" GET http://127.0.0.1:")),
        "{log}"
    );
}

/// Squid asking for Negotiate, its helper checking tickets against the
/// keytab of `HTTP/localhost` in a realm of the test's own.
fn kerberos_parent(realm: &Realm) -> Squid {
    let mut env = realm.env();
    env.push((
        "KRB5_KTNAME",
        realm.path("http.keytab").display().to_string(),
    ));
    Squid::start_env(
        &format!(
            "auth_param negotiate program {HELPERS}/negotiate_kerberos_auth -s HTTP/localhost@{REALM}
\
             auth_param negotiate children 2\nauth_param negotiate keep_alive on"
        ),
        &env,
    )
}

/// Acceptance 2: Squid asking for Negotiate (a real KDC, Squid's
/// negotiate_kerberos_auth): the gateway, holding only its own keytab,
/// logs in on every connection as its principal, for the go command
/// (intercepted and through the endpoint) and curl (http:// and https://).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kerberos_parent_sees_every_request_logged_in() {
    let realm = Realm::start("localhost");
    let squid = kerberos_parent(&realm);
    let tree = tree();
    let sumdb = SumDb::start(tree.path(), "sum.golang.org").await;
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let tls = TlsOrigin::start().await;
    let work = Work::new();
    let upstream = format!(
        "proxy = \"http://localhost:{}\"\nkeytab = {:?}",
        squid.addr.port(),
        realm.path("modgate.keytab")
    );
    let config = behind_parent(&work, (&mirror, &sumdb, &tls), &upstream);
    let gateway = work.gateway_env(&config, &realm.env()).await;
    everything_through(&work, &gateway, (&sumdb, &tls)).await;
    let gateway_log = gateway.log();
    gateway.kill().await;
    let principal = format!("{GATEWAY}@{REALM}");
    every_request_logged_in(&squid, (&mirror, &tls), &principal).await;
    assert!(!gateway_log.contains("login failed"), "{gateway_log}");
    // Tickets are kept: the KDC is asked once, not at each login.
    let kdc = realm.log();
    assert_eq!(kdc.matches(" for krbtgt/").count(), 1, "{kdc}");
    assert_eq!(kdc.matches(" for HTTP/localhost@").count(), 1, "{kdc}");
}

/// A gateway that only forwards, its way out `upstream`, with `env` added
/// to its environment.
async fn forwarding_gateway(
    work: &Work,
    upstream: &str,
    env: &[(&str, String)],
) -> common::netns::Modgate {
    let toml = format!(
        "[proxy]\nlisten = [\"127.0.0.1:0\"]\ndeny_destinations = []\n\
         [upstream]\nno_proxy = \"\"\n{upstream}\n\
         [gomod]\nmirrors = []\nsumdb_mirrors = []\nverify = \"off\"\n[cache]\ndir = {:?}\n",
        work.cache()
    );
    let config = work.path("modgate.toml");
    std::fs::write(&config, toml).unwrap();
    work.gateway_env(&config, env).await
}

/// With `auth = "negotiate"` and no keytab, the tickets of the user
/// running modgate (here `kinit` into the cache `KRB5CCNAME` names).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_users_tickets_log_in_without_a_keytab() {
    let realm = Realm::start("localhost");
    let squid = kerberos_parent(&realm);
    let mut env = realm.env();
    env.push((
        "KRB5CCNAME",
        format!("FILE:{}", realm.path("ccache").display()),
    ));
    let keytab = realm.path("modgate.keytab").display().to_string();
    let kinit = std::process::Command::new("kinit")
        .args(["-k", "-t", &keytab, GATEWAY])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("kinit (apt-get install krb5-user; scripts/test-deps.sh does)");
    assert!(
        kinit.status.success(),
        "{}",
        String::from_utf8_lossy(&kinit.stderr)
    );
    let work = Work::new();
    let upstream = format!(
        "proxy = \"http://localhost:{}\"\nauth = \"negotiate\"",
        squid.addr.port()
    );
    let gateway = forwarding_gateway(&work, &upstream, &env).await;
    let endpoint = format!("http://{}", gateway.addr("explicit proxy"));
    let origin = Origin::start("127.0.0.1").await;
    let out = curl(&["-x", &endpoint, &origin.url("/bytes/5")]).await;
    assert_eq!(out.stdout.len(), 5, "{}", stderr(&out));
    let log = squid.access_log();
    let line = log.lines().find(|l| l.contains(" GET http://127.0.0.1:"));
    let user = line.and_then(|l| l.split_whitespace().nth(7));
    assert_eq!(user, Some(format!("{GATEWAY}@{REALM}").as_str()), "{log}");
}

/// A keytab whose key the KDC no longer has: each client gets a 502 that
/// names the parent and Kerberos, the log says it once, and nothing is
/// retried in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_keytab_is_named_once() {
    let realm = Realm::start("localhost");
    let squid = kerberos_parent(&realm);
    let work = Work::new();
    let upstream = format!(
        "proxy = \"http://localhost:{}\"\nauth = \"negotiate\"\nkeytab = {:?}",
        squid.addr.port(),
        realm.path("stale.keytab")
    );
    let gateway = forwarding_gateway(&work, &upstream, &realm.env()).await;
    let endpoint = format!("http://{}", gateway.addr("explicit proxy"));
    let origin = Origin::start("127.0.0.1").await;
    let parent = format!("parent proxy localhost:{}", squid.addr.port());
    for _ in 0..3 {
        let out = curl(&["-i", "-x", &endpoint, &origin.url("/bytes/5")]).await;
        let answer = stdout(&out);
        assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
        assert!(
            answer.contains(&parent)
                && answer.contains("Kerberos")
                && answer.contains("export the keytab again"),
            "{answer}"
        );
    }
    assert_eq!(origin.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    let log = gateway.log();
    assert_eq!(log.matches("parent proxy login failed").count(), 1, "{log}");
    assert!(!squid.access_log().contains(" GET http://127.0.0.1:"));
}

/// A parent that refuses the credentials (Squid checking a password
/// file): each client gets a 502 naming the parent and the user, the log
/// says it once, and modgate does not retry in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_named_once_and_not_retried() {
    let work = Work::new();
    let passwords = work.path("squid-passwords");
    let hashed = std::process::Command::new("openssl")
        .args(["passwd", "-apr1", "the-right-one"])
        .output()
        .unwrap();
    let line = format!("alice:{}", String::from_utf8_lossy(&hashed.stdout));
    std::fs::write(&passwords, line).unwrap();
    std::fs::set_permissions(
        &passwords,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let squid = Squid::start(
        &format!(
            "auth_param basic program {HELPERS}/basic_ncsa_auth {}",
            passwords.display()
        ),
        "",
    );
    let tree = tree();
    let sumdb = SumDb::start(tree.path(), "sum.golang.org").await;
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let tls = TlsOrigin::start().await;
    let secrets = credentials_file(&work, "alice", "a-wrong-one");
    let upstream = format!("proxy = {:?}\ncredentials_file = {secrets:?}", squid.url());
    let config = behind_parent(&work, (&mirror, &sumdb, &tls), &upstream);
    let gateway = work.gateway(&config).await;
    let endpoint = format!("http://{}", gateway.addr("explicit proxy"));
    let origin = Origin::start("127.0.0.1").await;
    for _ in 0..3 {
        let out = curl(&["-i", "-x", &endpoint, &origin.url("/bytes/5")]).await;
        let answer = stdout(&out);
        assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
        assert!(
            answer.contains(&format!(
                "parent proxy {} refused the credentials of alice (Basic login)",
                squid.addr
            )),
            "{answer}"
        );
    }
    assert_eq!(origin.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    let log = gateway.log();
    assert_eq!(log.matches("parent proxy login failed").count(), 1, "{log}");
    assert!(!log.contains("a-wrong-one"));
    // Three requests: a handful of tries, not a loop.
    let denied = squid.access_log().matches("TCP_DENIED/407").count();
    assert!(
        (3..=8).contains(&denied),
        "{denied} refusals:\n{}",
        squid.access_log()
    );
}

/// Acceptance 3: Squid's https_port as an HTTPS parent (NTLM inside the
/// TLS), its certificate from a test CA given as upstream.ca_file: the go
/// command and curl through it as through a plain parent; without the CA,
/// clients get a 502 that names the parent's certificate and the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_parent_is_verified_against_upstream_ca_file() {
    let squid = Squid::start_tls(&format!(
        "auth_param ntlm program {HELPERS}/ntlm_fake_auth\nauth_param ntlm children 2"
    ));
    let tls_parent = squid.tls_addr.unwrap();
    let tree = tree();
    let sumdb = SumDb::start(tree.path(), "sum.golang.org").await;
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let tls = TlsOrigin::start().await;
    let work = Work::new();
    let secrets = credentials_file(&work, "CORP\\alice", "pw");
    let ca = squid.path("ca.pem");
    let upstream = format!(
        "proxy = \"https://{tls_parent}\"\ncredentials_file = {secrets:?}\nca_file = {ca:?}"
    );
    let config = behind_parent(&work, (&mirror, &sumdb, &tls), &upstream);
    let gateway = work.gateway(&config).await;
    everything_through(&work, &gateway, (&sumdb, &tls)).await;
    gateway.kill().await;
    let mut log = squid.access_log();
    for _ in 0..100 {
        if log.matches("TCP_TUNNEL/200").count() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        log = squid.access_log();
    }
    assert!(
        log.contains(" GET http://127.0.0.1:") && log.contains(" CONNECT 127.0.0.1:"),
        "{log}"
    );

    // Without the CA: refused, naming the parent's certificate.
    let work = Work::new();
    let secrets = credentials_file(&work, "CORP\\alice", "pw");
    let upstream = format!("proxy = \"https://{tls_parent}\"\ncredentials_file = {secrets:?}");
    let config = behind_parent(&work, (&mirror, &sumdb, &tls), &upstream);
    let gateway = work.gateway(&config).await;
    let endpoint = format!("http://{}", gateway.addr("explicit proxy"));
    let origin = Origin::start("127.0.0.1").await;
    let out = curl(&["-i", "-x", &endpoint, &origin.url("/bytes/5")]).await;
    let answer = stdout(&out);
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(
        answer.contains(&format!("TLS with parent proxy {tls_parent}")),
        "{answer}"
    );
    assert!(
        answer.contains(PARENT_CA) && answer.contains("upstream.ca_file"),
        "{answer}"
    );
    let url = format!("https://127.0.0.1:{}/", tls.addr.port());
    let out = curl(&["-x", &endpoint, "--insecure", &url]).await;
    assert!(!out.status.success(), "a tunnel is refused too");
}

/// A gateway in `work` whose way out is `upstream` (a PAC file among it),
/// once it has loaded the PAC file; and its config file.
async fn pac_gateway(work: &Work, upstream: &str) -> (std::path::PathBuf, common::netns::Modgate) {
    let config = work.path("modgate.toml");
    let text = common::base_config("listen = [\"127.0.0.1:0\"]", upstream);
    std::fs::write(&config, text).unwrap();
    let gateway = work.gateway(&config).await;
    gateway
        .log_when(|l| l.contains("upstream.pac: loaded"))
        .await;
    (config, gateway)
}

/// Acceptance 5: the office PAC file, served by a local HTTP server, sends
/// *.corp.example and one origin DIRECT, one test host to parent A and the
/// rest to parent B; a PAC that throws or never returns costs its time
/// limit and falls back to upstream.proxy (B here), said once; a changed
/// PAC is used after a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_office_pac_file_picks_the_parent() {
    let a = common::Proxy::start(&common::base_config("", "")).await;
    let b = common::Proxy::start(&common::base_config("", "")).await;
    let wpad = tempfile::tempdir().unwrap();
    let pac = |body: &str| std::fs::write(wpad.path().join("wpad.dat"), body).unwrap();
    pac(&format!(
        "function FindProxyForURL(url, host) {{\n\
         if (dnsDomainIs(host, \".corp.example\") || host == \"127.0.0.3\") return \"DIRECT\";\n\
         if (shExpMatch(host, \"127.0.0.2\")) return \"PROXY {}\";\n\
         return \"PROXY {}; DIRECT\";\n}}\n",
        a.addr, b.addr
    ));
    let server = Mirror::start(wpad.path().to_path_buf(), Behaviour::Serve).await;
    let work = Work::new();
    let upstream = format!(
        "no_proxy = \"\"\nproxy = \"http://{}\"\npac = \"{}/wpad.dat\"",
        b.addr,
        server.url()
    );
    let (config, gateway) = pac_gateway(&work, &upstream).await;
    let proxy = format!("http://{}", gateway.addr("explicit proxy"));
    let get = |origin: String| {
        let proxy = proxy.clone();
        async move { curl(&["-x", &proxy, &origin]).await.stdout.len() }
    };
    let (one, two, three) = (
        Origin::start("127.0.0.1").await,
        Origin::start("127.0.0.2").await,
        Origin::start("127.0.0.3").await,
    );
    assert_eq!(get(two.url("/bytes/2")).await, 2);
    assert_eq!(get(one.url("/bytes/1")).await, 1);
    assert_eq!(get(three.url("/bytes/3")).await, 3);
    assert_eq!(a.running.stats.forwarded.get(), 1, "127.0.0.2 through A");
    assert_eq!(b.running.stats.forwarded.get(), 1, "the rest through B");
    let hits = |o: &Origin| o.hits.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        (hits(&one), hits(&two), hits(&three)),
        (1, 1, 1),
        "127.0.0.3 direct"
    );
    let explained = common::run_modgate(&[
        "explain",
        "--config",
        config.to_str().unwrap(),
        "https://git.corp.example/x",
    ])
    .await;
    let said = stdout(&explained);
    assert!(
        said.contains("decision: direct") && said.contains("returned \"DIRECT\""),
        "{said}"
    );

    // A PAC that never returns: its time limit, then upstream.proxy (B).
    pac("function FindProxyForURL(url, host) { while (true) {} }");
    gateway.signal(libc::SIGHUP);
    gateway
        .log_when(|l| l.matches("upstream.pac: loaded").count() >= 2)
        .await;
    let four = Origin::start("127.0.0.2").await;
    assert_eq!(get(four.url("/bytes/4")).await, 4);
    assert_eq!(
        a.running.stats.forwarded.get(),
        1,
        "not to A: the PAC gave no answer"
    );
    assert_eq!(b.running.stats.forwarded.get(), 2);
    let log = gateway
        .log_when(|l| l.contains("upstream.pac failed"))
        .await;
    assert!(log.contains("took longer than"), "{log}");

    // A changed PAC, used after the reload: everything to A.
    pac(&format!(
        "function FindProxyForURL(url, host) {{ return \"PROXY {}\"; }}",
        a.addr
    ));
    gateway.signal(libc::SIGHUP);
    gateway
        .log_when(|l| l.matches("upstream.pac: loaded").count() >= 3)
        .await;
    let five = Origin::start("127.0.0.1").await;
    assert_eq!(get(five.url("/bytes/5")).await, 5);
    assert_eq!(a.running.stats.forwarded.get(), 2);
}

/// A changed PAC file is fetched again after upstream.pac_ttl, with no
/// reload: requests move from parent A to parent B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pac_file_is_fetched_again_after_its_ttl() {
    let a = common::Proxy::start(&common::base_config("", "")).await;
    let b = common::Proxy::start(&common::base_config("", "")).await;
    let wpad = tempfile::tempdir().unwrap();
    let file = wpad.path().join("wpad.dat");
    let to = |parent: std::net::SocketAddr| {
        format!("function FindProxyForURL(url, host) {{ return \"PROXY {parent}\"; }}")
    };
    std::fs::write(&file, to(a.addr)).unwrap();
    let work = Work::new();
    let upstream = format!("no_proxy = \"\"\npac = {file:?}\npac_ttl = \"1s\"");
    let (_, gateway) = pac_gateway(&work, &upstream).await;
    let proxy = format!("http://{}", gateway.addr("explicit proxy"));
    let origin = Origin::start("127.0.0.1").await;
    let out = curl(&["-x", &proxy, &origin.url("/bytes/1")]).await;
    assert_eq!(out.stdout.len(), 1, "{}", stderr(&out));
    assert_eq!(a.running.stats.forwarded.get(), 1);
    std::fs::write(&file, to(b.addr)).unwrap();
    // Each try on a new origin (a new connection); bounded: 10 s.
    for _ in 0..50 {
        let origin = Origin::start("127.0.0.1").await;
        let out = curl(&["-x", &proxy, &origin.url("/bytes/2")]).await;
        assert_eq!(out.stdout.len(), 2, "{}", stderr(&out));
        if b.running.stats.forwarded.get() > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("the changed PAC file was never used:\n{}", gateway.log());
}

/// The PAC file decides for the gateway's own mirror traffic too: a PAC
/// that names parent A for the mirror's host sends the module downloads
/// through A (CONNECT tunnels), with no upstream.proxy at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pac_file_picks_the_parent_for_mirrors_too() {
    let tree = tree();
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let port = mirror.url().rsplit(':').next().unwrap().to_string();
    let a = common::Proxy::start(&common::base_config(
        &format!("connect_ports = [{port}]"),
        "",
    ))
    .await;
    let work = Work::new();
    let pac = work.path("office.pac");
    let script = format!(
        "function FindProxyForURL(url, host) {{ return \"PROXY {}\"; }}",
        a.addr
    );
    std::fs::write(&pac, script).unwrap();
    let extra = format!("[upstream]\nno_proxy = \"\"\npac = {pac:?}\n");
    let config = work.config_keyed(&[mirror.url()], &[mirror.url()], None, &extra);
    let gateway = work.gateway(&config).await;
    gateway
        .log_when(|l| l.contains("upstream.pac: loaded"))
        .await;
    let endpoint = format!("http://{}", gateway.addr("explicit proxy"));
    download_all(&work.go("go", None, &endpoint, "off")).await;
    assert!(
        a.running.stats.tunnels.get() >= 1,
        "the mirror was reached through A"
    );
}
