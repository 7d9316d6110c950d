//! Findings of an attack run, each shown against the real binary or the
//! in-process server with real clients: what a hostile client must never
//! get past modgate.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::gomod::{Behaviour, Mirror, build_goproxy_dir};
use common::netns::{Modgate, Netns, require_root};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The status curl saw for `url`, sent byte for byte (`--path-as-is`);
/// `extra` goes before the URL (a proxy, a CA).
async fn status_as_is(url: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "-s",
        "--path-as-is",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
    ];
    args.extend(extra);
    args.push(url);
    stdout(&curl(&args).await)
}

/// Module and checksum database paths are parsed into their typed form
/// and refused (400) when they are not one: nothing reaches the mirror
/// outside its base path, no private module's name reaches it, and no
/// query string is passed through, by the GOPROXY endpoint and by
/// interception alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_paths_reach_mirrors_only_in_their_typed_form() {
    let root = tempfile::tempdir().unwrap();
    let base = root.path().join("base");
    build_goproxy_dir(&base, "");
    std::fs::write(root.path().join("secret.txt"), "outside the base path").unwrap();
    let private = base.join("corp.example.com/secret/@v");
    std::fs::create_dir_all(&private).unwrap();
    std::fs::write(private.join("list"), "v1.0.0\n").unwrap();
    let mirror = Mirror::start(root.path().to_path_buf(), Behaviour::Serve).await;
    let proxy = Proxy::start(&format!(
        "[proxy]\nallow_clients = [\"127.0.0.0/8\"]\n[gomod]\nmirrors = [\"{0}/base\"]\n\
         sumdb_mirrors = [\"{0}/base/sumdb/sum.golang.org\"]\nverify = \"off\"\n\
         private = \"corp.example.com\"\n",
        mirror.url()
    ))
    .await;
    let refused = [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "//x/@v/list",
        "/./x/@v/list",
        "/x/../corp.example.com/secret/@v/list",
        "/x/%2e%2e/corp.example.com/secret/@v/list",
        "/example.com/util/@v/list?../../secret.txt",
        "/example.com/util/@v/v1.2.0.mod?x=1",
        "/sumdb/sum.golang.org/../../../secret.txt",
        "/sumdb/sum.golang.org/lookup/../../../secret.txt",
        "/sumdb/sum.golang.org/latest?x",
    ];
    for path in refused {
        let url = format!("{}{path}", proxy.url());
        assert_eq!(status_as_is(&url, &[]).await, "400", "{path}");
    }
    let ca = proxy
        .cache_dir
        .as_ref()
        .unwrap()
        .path()
        .join("certs/modgate-ca.pem");
    let (endpoint, ca) = (proxy.url(), ca.to_str().unwrap().to_string());
    let through = ["-x", endpoint.as_str(), "--cacert", ca.as_str()];
    for path in refused {
        let url = format!("https://proxy.golang.org{path}");
        assert_eq!(status_as_is(&url, &through).await, "400", "{path}");
    }
    let url = "https://sum.golang.org/../secret.txt";
    assert_eq!(status_as_is(url, &through).await, "400");
    // The private module, asked for properly, is refused without a word to the mirror.
    let url = format!("{}/corp.example.com/secret/@v/list", proxy.url());
    assert_eq!(status_as_is(&url, &[]).await, "403");
    // A well-formed request still goes through, under the base path.
    let url = format!("{}/example.com/util/@v/v1.2.0.mod", proxy.url());
    assert_eq!(status_as_is(&url, &[]).await, "200");
    let asked = mirror.requests();
    assert_eq!(
        asked,
        ["/base/example.com/util/@v/v1.2.0.mod"],
        "{asked:#?}"
    );
}

/// The admin listener is one of modgate's own: a client asking the proxy
/// for it (forwarded or tunnelled) is refused, even with nothing in
/// `deny_destinations`, and `explain` says so too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_is_not_reachable_through_the_proxy() {
    let proxy = Proxy::start(&base_config("", "")).await;
    let admin = proxy.running.admin.expect("an admin listener");
    let metrics = format!("http://{admin}/metrics");
    let answer = forward_status(&proxy.url(), &metrics, 403).await;
    assert!(answer.contains("own listener"), "{answer}");
    let config = base_config(&format!("connect_ports = [{}]", admin.port()), "");
    let proxy = Proxy::start(&config).await;
    let admin = proxy.running.admin.expect("an admin listener");
    tunnel_status(&proxy.url(), &format!("http://{admin}/"), 403).await;

    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("modgate.toml");
    std::fs::write(
        &file,
        format!(
            "{}[admin]\nlisten = \"10.0.0.1:9700\"\n",
            base_config("", "")
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let out = run_modgate(&["explain", "--config", file, "http://10.0.0.1:9700/metrics"]).await;
    let said = stdout(&out);
    assert!(said.contains("decision: deny"), "{said}");
    assert!(said.contains("own listener"), "{said}");
}

/// A parent inside `ns` that counts the connections it gets and answers
/// CONNECT 200.
fn counting_parent(ns: &Netns) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = ns.listener("127.0.0.1:0");
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
            });
        }
    });
    (addr, count)
}

/// curl inside `ns` through `proxy`: the CONNECT answer's status for
/// `https://` URLs, the response's for `http://` ones.
async fn status_in(ns: &Netns, proxy: SocketAddr, url: &str) -> String {
    let write = if url.starts_with("https://") {
        "%{http_connect}"
    } else {
        "%{http_code}"
    };
    let out = command_in(Some(&ns.name), "curl")
        .args([
            "-s",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            write,
            "-x",
        ])
        .arg(format!("http://{proxy}"))
        .arg(url)
        .output()
        .await
        .unwrap();
    stdout(&out)
}

/// With a parent proxy, names are resolved and checked against
/// `deny_destinations` before they are handed to it: `lo.test` (127.0.0.1)
/// and `meta.test` (169.254.169.254) are refused for CONNECT and forwarding
/// alike and the parent never hears of them; with `resolve_for_parent =
/// false` names go to the parent unchecked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_checked_before_they_go_to_the_parent() {
    require_root();
    let ns = Netns::new("parent");
    ns.hosts("127.0.0.1 localhost lo.test\n169.254.169.254 meta.test\n");
    let (parent, reached) = counting_parent(&ns);
    let work = tempfile::tempdir().unwrap();
    let config = |extra: &str| {
        let file = work.path().join("modgate.toml");
        std::fs::write(
            &file,
            format!(
                "[proxy]\nlisten = [\"127.0.0.1:0\"]\nallow_clients = [\"127.0.0.0/8\"]\n\
                 [upstream]\nproxy = \"http://{parent}\"\nno_proxy = \"\"\n{extra}\n\
                 [intercept]\nenabled = false\n"
            ),
        )
        .unwrap();
        file
    };
    let modgate = Modgate::start(&ns, &config(""), 1).await;
    let proxy = modgate.addr("explicit proxy");
    for url in [
        "https://lo.test/",
        "https://meta.test/",
        "http://lo.test/",
        "http://meta.test/latest/meta-data/",
    ] {
        assert_eq!(status_in(&ns, proxy, url).await, "403", "{url}");
    }
    assert_eq!(reached.load(Ordering::SeqCst), 0, "the parent was asked");
    let log = modgate.log_when(|l| l.contains("169.254.169.254")).await;
    assert!(log.contains("is in proxy.deny_destinations"), "{log}");
    drop(modgate);

    let modgate = Modgate::start(&ns, &config("resolve_for_parent = false"), 1).await;
    let proxy = modgate.addr("explicit proxy");
    assert_eq!(status_in(&ns, proxy, "https://lo.test/").await, "200");
    assert_eq!(reached.load(Ordering::SeqCst), 1);
}

/// Symbolic links planted in the cache directory are never served or
/// followed: a `.mod` linked to a secret is fetched afresh (the link is
/// replaced), a module directory linked outside the cache is never written
/// through (the file is served, not stored), and `cache verify` reports
/// every link as damage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_in_the_cache_are_never_followed() {
    use common::gateway::{Work, get, text, tree};
    use std::os::unix::fs::symlink;
    let modules = tree();
    let mirror = Mirror::start(modules.path().to_path_buf(), Behaviour::Serve).await;
    let work = Work::new();
    let config = work.config(&[mirror.url()], &[], "");
    let secret = work.path("secret.key");
    std::fs::write(&secret, "PRIVATE KEY").unwrap();
    let outside = work.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let util = work.cache().join("example.com/util/@v");
    std::fs::create_dir_all(&util).unwrap();
    symlink(&secret, util.join("v1.2.0.mod")).unwrap();
    symlink(&outside, work.cache().join("example.com/big")).unwrap();

    let verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_modgate"))
            .args(["cache", "verify", "--config", config.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let verified = verify();
    assert!(!verified.status.success(), "{}", text(&verified));
    for link in ["example.com/util/@v/v1.2.0.mod", "example.com/big"] {
        assert!(
            text(&verified).contains(link),
            "{link}: {}",
            text(&verified)
        );
    }
    assert!(
        text(&verified).contains("symbolic link"),
        "{}",
        text(&verified)
    );

    let gateway = work.gateway(&config).await;
    let addr = gateway.addr("explicit proxy");
    let (status, body, _) = get(addr, "/example.com/util/@v/v1.2.0.mod").await;
    let real = std::fs::read(modules.path().join("example.com/util/@v/v1.2.0.mod")).unwrap();
    assert_eq!((status, body), (200, real));
    let zip = "/example.com/big/@v/v1.0.0.zip";
    let (status, body, _) = get(addr, zip).await;
    let real = std::fs::read(modules.path().join(&zip[1..])).unwrap();
    assert!(status == 200 && body == real, "{status}");
    let log = gateway
        .log_when(|l| l.contains("cache: cannot store:"))
        .await;
    assert!(log.contains("symbolic link"), "{log}");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "written through the link"
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "PRIVATE KEY");
}

/// An origin that answers every request with a head promising 100 bytes,
/// sends 10, then holds the connection silent (60 s at most).
async fn stalling_origin() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789";
                let _ = stream.write_all(head).await;
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            });
        }
    });
    addr
}

/// A forwarded response that stalls mid-body is cut after
/// `proxy.idle_timeout`, as a silent tunnel is: curl sees a partial
/// transfer (exit 18), not its own 20 s limit (exit 28).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_body_that_stalls_is_cut_at_the_idle_timeout() {
    let origin = stalling_origin().await;
    let proxy = Proxy::start(&base_config("idle_timeout = \"1s\"", "")).await;
    let out = curl(&[
        "-o",
        "/dev/null",
        "-x",
        &proxy.url(),
        &format!("http://{origin}/"),
    ])
    .await;
    assert_eq!(out.status.code(), Some(18), "{}", stderr(&out));
}

/// A client that completes the intercepted TLS handshake and then sends
/// nothing is closed once `proxy.header_read_timeout` passes without a
/// request, whatever it negotiated (h2, http/1.1 or no ALPN), long before
/// `idle_timeout` (5 minutes; the read below gives up after 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_after_the_handshake_is_closed_at_the_header_timeout() {
    use common::handshake::{connector_offering, handshaken};
    // base_config: header_read_timeout = "2s"; intercepting.
    let config = base_config("", "").replace("enabled = false", "enabled = true");
    let proxy = Proxy::start(&config).await;
    let ca = proxy
        .cache_dir
        .as_ref()
        .unwrap()
        .path()
        .join("certs/modgate-ca.pem");
    for alpn in [&[&b"h2"[..]][..], &[b"http/1.1"], &[]] {
        let tls = connector_offering(&ca, false, alpn);
        let mut stream = handshaken(proxy.addr, &tls).await.unwrap();
        let mut buf = [0u8; 64];
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "{alpn:?}: still open: {read:?}"
        );
    }
}

/// A mirror dribbling bytes (20 bytes/s: never silent for long) is
/// abandoned once a whole `mirror_timeout` passed under the floor, and the
/// next mirror serves every client that had joined the download (the
/// module is verified, so none had a byte yet). The slow one is demoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dribbling_mirror_is_abandoned_for_the_next() {
    use common::gateway::{Work, get, tree};
    use common::gomod::SumDb;
    let modules = tree();
    let sumdb = SumDb::start(modules.path(), "sum.golang.org").await;
    let slow = Mirror::start(modules.path().to_path_buf(), Behaviour::Throttled(20)).await;
    let good = Mirror::start(modules.path().to_path_buf(), Behaviour::Serve).await;
    let work = Work::new();
    let mirrors = [slow.url(), good.url()];
    let config = work.config_keyed(&mirrors, &[sumdb.url()], Some(&sumdb.key), "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("mirror_timeout = \"10s\"", "mirror_timeout = \"2s\""),
    )
    .unwrap();
    let gateway = work.gateway(&config).await;
    let addr = gateway.addr("explicit proxy");
    // A few hundred bytes: over 2 s at 20 bytes/s.
    let path = "/example.com/util/@v/v1.2.0.zip";
    let clients: Vec<_> = (0..3).map(|_| tokio::spawn(get(addr, path))).collect();
    let real = std::fs::read(modules.path().join(&path[1..])).unwrap();
    for client in clients {
        let (status, body, _) = client.await.unwrap();
        assert_eq!((status, body.as_slice()), (200, real.as_slice()));
    }
    assert_eq!((slow.count(path), good.count(path)), (1, 1));
    let log = gateway.log_when(|l| l.contains("slower than")).await;
    assert!(log.contains("trying the next"), "{log}");
    assert!(
        log.contains(&format!("mirror demoted mirror={}", slow.url())),
        "{log}"
    );
    // A slow mirror is a failing one, not a security event.
    let metrics = common::metrics::scrape(gateway.admin_addr().await, None).await;
    assert_eq!(metrics["modgate_verification_failures_total{}"], 0.0);
}

/// One process writes a cache directory at a time: a second `modgate run`
/// or `cache prune` on the directory of a running gateway is refused with
/// the gateway's pid; `cache stats` and `cache verify` still run beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_of_a_cache_directory_is_refused() {
    use common::gateway::{Work, text};
    let work = Work::new();
    let config = work.config(&["http://127.0.0.1:9".to_string()], &[], "");
    let gateway = work.gateway(&config).await;
    let pid = gateway.pid().to_string();
    let modgate = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_modgate"))
            .args(args)
            .args(["--config", config.to_str().unwrap()])
            .output()
            .unwrap()
    };
    for args in [
        &["cache", "prune"][..],
        &["run", "--admin-listen", "127.0.0.1:0"],
    ] {
        let out = modgate(args);
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        let said = text(&out);
        assert!(
            said.contains(&format!("in use by another modgate (pid {pid})")),
            "{args:?}: {said}"
        );
    }
    for args in [&["cache", "stats"][..], &["cache", "verify"]] {
        let out = modgate(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }
    gateway.kill().await;
}

/// A full disk degrades to serving without storing: with the cache on a
/// 1 MiB tmpfs, a verified 3 MiB zip (checked from memory when its file
/// cannot be written) reaches its clients whole, no temporary file is
/// left, `/metrics` and the status page say storing fails (logged once),
/// and the next miss that fits is served and stored again. Root (mount).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_serves_verified_zips_without_storing() {
    use common::gateway::{Work, get};
    use common::gomod::{Module, SumDb, write_module};
    use common::metrics::scrape;
    require_root();
    let modules = tempfile::tempdir().unwrap();
    build_goproxy_dir(modules.path(), "");
    let roomy = Module {
        path: "example.com/roomy",
        version: "v1.0.0",
        package: "roomy",
        func: "Room",
        blob: 3 << 20,
    };
    write_module(modules.path(), &roomy, "");
    let sumdb = SumDb::start(modules.path(), "sum.golang.org").await;
    let mirror = Mirror::start(modules.path().to_path_buf(), Behaviour::Serve).await;
    let work = Work::new();
    let _unmount = common::gateway::tmpfs(&work.cache(), "1m");
    let config = work.config_keyed(&[mirror.url()], &[sumdb.url()], Some(&sumdb.key), "");
    let gateway = work.gateway(&config).await;
    let (addr, admin) = (gateway.addr("explicit proxy"), gateway.admin_addr().await);
    let zip = "/example.com/roomy/@v/v1.0.0.zip";
    let (status, body, _) = get(addr, zip).await;
    let real = std::fs::read(modules.path().join(&zip[1..])).unwrap();
    let log = gateway.log();
    let said = format!("{status}, {} of {} bytes\n{log}", body.len(), real.len());
    assert!(status == 200 && body == real, "{said}");
    common::metrics::downloads_landed(admin, None).await;
    assert_eq!(scrape(admin, None).await["modgate_cache_storing{}"], 0.0);
    let page = stdout(&curl(&["-s", &format!("http://{admin}/")]).await);
    assert!(page.contains("NOT STORING"), "{page}");
    let tmp = work.cache().join(".modgate/tmp");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "a .part was left"
    );

    let small = "/example.com/util/@v/v1.2.0.mod";
    assert_eq!(get(addr, small).await.0, 200);
    common::metrics::downloads_landed(admin, None).await;
    assert_eq!(scrape(admin, None).await["modgate_cache_storing{}"], 1.0);
    let log = gateway.log_when(|l| l.contains("storing again")).await;
    assert_eq!(log.matches("cache: cannot store:").count(), 1, "{log}");
    assert!(work.cache().join(&small[1..]).exists());
    gateway.kill().await;
}

/// With `gomod.private` not set, module paths under the office's own
/// domains (`upstream.no_proxy`) are private: refused with 403 and never
/// sent to a mirror; the start-up summary says so. `private = ""` turns
/// it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_office_domains_are_private_by_default() {
    use common::gateway::{Work, get, tree};
    let modules = tree();
    let mirror = Mirror::start(modules.path().to_path_buf(), Behaviour::Serve).await;
    let work = Work::new();
    let config = work.config(&[mirror.url()], &[], "");
    let text = std::fs::read_to_string(&config).unwrap();
    let office = "[upstream]\nno_proxy = \"localhost,127.0.0.0/8,.corp.example\"\n";
    std::fs::write(&config, format!("{office}{text}")).unwrap();
    let gateway = work.gateway(&config).await;
    let addr = gateway.addr("explicit proxy");
    let path = "/git.corp.example/team/m/@v/list";
    let (status, body, _) = get(addr, path).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(mirror.requests().is_empty(), "{:?}", mirror.requests());
    let log = gateway.log_when(|l| l.contains("  private")).await;
    assert!(
        log.contains("  private    corp.example, *.corp.example"),
        "{log}"
    );
    assert_eq!(get(addr, "/example.com/util/@v/list").await.0, 200);
}

/// `modgate check` runs beside the modgate it checks (the unit's
/// ExecStartPre on reload): listeners held by a running modgate are fine;
/// one held by another program is an error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_runs_beside_the_running_modgate() {
    use common::gateway::text;
    let work = tempfile::tempdir().unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let config = work.path().join("modgate.toml");
    let write = |port: u16| {
        let text = format!(
            "[proxy]\nlisten = [\"127.0.0.1:{port}\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [intercept]\nca_dir = {:?}\n[cache]\ndir = {:?}\n",
            work.path().join("certs"),
            work.path().join("cache")
        );
        std::fs::write(&config, text).unwrap();
    };
    write(port);
    let args = ["run", "--config", config.to_str().unwrap()];
    let modgate = Modgate::spawn(None, &args, None, 1).await;
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_modgate"))
            .args(["check", "--config", config.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = check();
    assert!(out.status.success(), "{}", text(&out));
    drop(modgate);

    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    write(other.local_addr().unwrap().port());
    let out = check();
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains(&format!("pid {}", std::process::id())),
        "{said}"
    );
}

/// The access log is made 0640 (readable by modgate's group, for log
/// shippers) even under the unit's `UMask=0077`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_is_readable_by_the_group_under_a_strict_umask() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("access.log");
    let config = work.path().join("modgate.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [intercept]\nenabled = false\n[gomod]\nverify = \"off\"\n[cache]\nenabled = false\n\
             [log]\naccess_log = {log:?}\n"
        ),
    )
    .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_modgate"));
    command
        .args(["run", "--config", config.to_str().unwrap()])
        .stderr(std::process::Stdio::null());
    // SAFETY: umask(2) only, between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    for _ in 0..600 {
        if log.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mode = std::fs::metadata(&log).map(|m| m.permissions().mode() & 0o777);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(mode.unwrap(), 0o640);
}

/// A reload of an empty config file (an editor in the middle of saving)
/// is refused: the gateway keeps its config and its listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_an_empty_config_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("modgate.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = [\"127.0.0.1:0\"]\n[intercept]\nca_dir = {:?}\n[cache]\ndir = {:?}\n",
            work.path().join("certs"),
            work.path().join("cache")
        ),
    )
    .unwrap();
    let args = ["run", "--config", config.to_str().unwrap()];
    let modgate = Modgate::spawn(None, &args, None, 1).await;
    let proxy = modgate.addr("explicit proxy");
    std::fs::write(&config, "").unwrap();
    modgate.signal(libc::SIGHUP);
    let log = modgate.log_when(|l| l.contains("reload refused")).await;
    assert!(log.contains("the config file is empty"), "{log}");
    assert!(!log.contains("config reloaded"), "{log}");
    let origin = Origin::start("127.0.0.1").await;
    let out = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-x",
        &format!("http://{proxy}"),
        &origin.url("/bytes/3"),
    ])
    .await;
    // Still the old config: the same listener answers (403: loopback is a
    // denied destination by default, as before the reload).
    assert_eq!(stdout(&out), "403");
}

/// With `log.format = "json"`, the start-up summary and the new CA's
/// trust instructions are structured fields, never text full of `\n`; on
/// a gateway (`public_name`), clients are sent to its `/ca` page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_summary_and_the_trust_page_as_fields() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("modgate.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = [\"127.0.0.1:0\"]\npublic_name = \"gw.corp.example:3128\"\n\
             [intercept]\nca_dir = {:?}\n[gomod]\nmirrors = [\"http://127.0.0.1:9\"]\n\
             sumdb_mirrors = [\"http://127.0.0.1:9\"]\n[cache]\ndir = {:?}\n[log]\nformat = \"json\"\n",
            work.path().join("certs"),
            work.path().join("cache")
        ),
    )
    .unwrap();
    let args = ["run", "--config", config.to_str().unwrap()];
    let modgate = Modgate::spawn(None, &args, None, 1).await;
    let log = modgate.log_when(|l| l.contains("\"what\":\"cache\"")).await;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for line in &lines {
        let message = line["fields"]["message"].as_str().unwrap_or_default();
        assert!(!message.contains('\n'), "{line}");
    }
    let created = lines
        .iter()
        .find(|l| l["fields"]["message"] == "created a new local CA")
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(
        created["fields"]["trust_page"],
        "http://gw.corp.example:3128/ca"
    );
    let rows: Vec<&str> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "start-up summary")
        .filter_map(|l| l["fields"]["what"].as_str())
        .collect();
    for row in ["config", "listening", "mirrors", "CA", "cache"] {
        assert!(rows.contains(&row), "{row} not in {rows:?}");
    }
}

/// The `/ca` page tells clients where to fetch the CA from: the proxy as
/// `public_name` says, else as the client reached it, never as the
/// request's `Host` claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_page_never_names_the_requests_host() {
    let config = base_config("", "").replace("enabled = false", "enabled = true");
    let proxy = Proxy::start(&config).await;
    let url = format!("{}/ca", proxy.url());
    let page = stdout(&curl(&["-s", "-H", "Host: evil.example:3128", &url]).await);
    assert!(!page.contains("evil.example"), "{page}");
    assert!(page.contains(&proxy.addr.to_string()), "{page}");
}

/// An open-file limit below what `proxy.max_connections` needs is said at
/// start (connections would otherwise fail later, one by one).
#[test]
fn a_low_open_file_limit_is_warned_of_at_start() {
    use std::os::unix::process::CommandExt;
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("modgate.toml");
    std::fs::write(
        &config,
        "[proxy]\nlisten = [\"127.0.0.1:0\"]\nmax_connections = 25000\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [intercept]\nenabled = false\n[gomod]\nverify = \"off\"\n[cache]\nenabled = false\n",
    )
    .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_modgate"));
    command
        .args(["run", "--config", config.to_str().unwrap()])
        .stderr(std::process::Stdio::piped());
    // SAFETY: setrlimit(2) only, between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 2048,
                rlim_max: 2048,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let seen = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .take(40)
            .find(|l| l.contains("open-file limit") || l.contains("modgate listening"))
    });
    let line = seen.join().unwrap().unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.contains("open-file limit is below") && line.contains("limit=2048"),
        "{line}"
    );
}

/// The admin listener serves 64 connections at once: a flood of silent
/// ones waits in the backlog instead of taking the process's descriptors;
/// once they go, it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_caps_its_connections() {
    let proxy = Proxy::start(&base_config("", "")).await;
    let admin = proxy.running.admin.unwrap();
    let health = format!("http://{admin}/healthz");
    let mut silent = Vec::new();
    for _ in 0..64 {
        silent.push(tokio::net::TcpStream::connect(admin).await.unwrap());
    }
    let waited = curl(&[
        "-s",
        "--max-time",
        "2",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &health,
    ])
    .await;
    assert_eq!(
        waited.status.code(),
        Some(28),
        "served past the cap: {}",
        stdout(&waited)
    );
    drop(silent);
    let out = curl(&["-s", "-o", "/dev/null", "-w", "%{http_code}", &health]).await;
    assert_eq!(stdout(&out), "200");
}

/// Serves "ok" over TLS on loopback with a leaf for `name` signed by the
/// modgate CA in `ca_dir` (its key read from disk, as a thief would).
async fn origin_signed_by(ca_dir: &std::path::Path, name: &str) -> SocketAddr {
    let ca_key = std::fs::read_to_string(ca_dir.join("modgate-ca.key")).unwrap();
    let ca_key = rcgen::KeyPair::from_pem(&ca_key).unwrap();
    let ca_cert = std::fs::read_to_string(ca_dir.join("modgate-ca.pem")).unwrap();
    let ca_der =
        <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::from_pem_slice(
            ca_cert.as_bytes(),
        )
        .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(&ca_der, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone(), ca_der], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    let mut head = [0u8; 1024];
                    let _ = tls.read(&mut head).await;
                    let reply =
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                    let _ = tls.write_all(reply).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

/// The CA's name constraints exclude every IP address: a leaf for
/// 127.0.0.1 signed with a leaked CA key is refused by curl, while one
/// for an intercepted host verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_cannot_sign_for_ip_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let config = dir.path().join("modgate.toml");
    std::fs::write(&config, format!("[intercept]\nca_dir = {ca_dir:?}\n")).unwrap();
    let config = config.to_str().unwrap();
    let made = run_modgate(&["ca", "init", "--config", config]).await;
    assert!(made.status.success(), "{}", stderr(&made));
    let cacert = ca_dir.join("modgate-ca.pem");
    let cacert = cacert.to_str().unwrap();

    let host = origin_signed_by(&ca_dir, "proxy.golang.org").await;
    let resolve = format!("proxy.golang.org:{}:127.0.0.1", host.port());
    let url = format!("https://proxy.golang.org:{}/", host.port());
    let out = curl(&["-s", "--cacert", cacert, "--resolve", &resolve, &url]).await;
    assert_eq!(stdout(&out), "ok", "a permitted name verifies: {out:?}");

    let addr = origin_signed_by(&ca_dir, "127.0.0.1").await;
    let url = format!("https://127.0.0.1:{}/", addr.port());
    let out = curl(&["-s", "--cacert", cacert, &url]).await;
    assert_eq!(
        out.status.code(),
        Some(60),
        "an address must not verify: {out:?}"
    );
    let shown = run_modgate(&["ca", "show", "--config", config]).await;
    assert!(
        stdout(&shown).contains("IP addresses: excluded"),
        "{}",
        stdout(&shown)
    );
}

/// A reload that moves `intercept.ca_dir` to a directory with no CA is
/// refused (it would mint a CA no client trusts); `reload --new-ca` makes
/// the CA there first and the reload then takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_never_mints_a_new_ca_unasked() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("modgate.toml");
    let write = |ca: &str| {
        let text = format!(
            "[proxy]\nlisten = [\"127.0.0.1:0\"]\npid_file = {:?}\n[intercept]\nca_dir = {:?}\n[cache]\ndir = {:?}\n",
            work.path().join("modgate.pid"),
            work.path().join(ca),
            work.path().join("cache")
        );
        std::fs::write(&config, text).unwrap();
    };
    write("first");
    let path = config.to_str().unwrap();
    let modgate = Modgate::spawn(None, &["run", "--config", path], None, 1).await;
    modgate.log_when(|l| l.contains("local CA")).await;
    write("second");
    let asked = run_modgate(&["reload", "--config", path]).await;
    assert!(asked.status.success(), "{}", stderr(&asked));
    let log = modgate.log_when(|l| l.contains("reload failed")).await;
    assert!(log.contains("holds no CA"), "{log}");
    assert!(!work.path().join("second/modgate-ca.pem").exists());

    let asked = run_modgate(&["reload", "--new-ca", "--config", path]).await;
    assert!(asked.status.success(), "{}", stderr(&asked));
    assert!(stdout(&asked).contains("a new CA"), "{}", stdout(&asked));
    let log = modgate.log_when(|l| l.contains("config reloaded")).await;
    let second = work.path().join("second/modgate-ca.pem");
    assert!(
        log.contains(&format!("local CA: {}", second.display())),
        "{log}"
    );
}

/// A request head of `size` bytes as sent: `line` (request line, CRLF
/// included), `fields` (header lines, CRLFs included), then an
/// `x-pad` line filling up to `size` and the blank line.
fn head_of(size: usize, line: &str, fields: &str) -> String {
    let fixed = line.len() + fields.len() + "x-pad: \r\n".len() + 2;
    format!("{line}{fields}x-pad: {}\r\n\r\n", "a".repeat(size - fixed))
}

/// The status an intercepted HTTP/2 request with an `x-pad` header of
/// `pad` bytes gets.
async fn h2_status(proxy: SocketAddr, ca: &std::path::Path, pad: usize) -> u16 {
    use common::handshake::{connector_offering, handshaken};
    let tls = connector_offering(ca, false, &[b"h2"]);
    let stream = handshaken(proxy, &tls).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("https://{}{SUPPORTED}", common::handshake::HOST))
        .header("x-pad", "a".repeat(pad))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    sender.send_request(req).await.unwrap().status().as_u16()
}

const SUPPORTED: &str = "/sumdb/sum.golang.org/supported";

/// `proxy.max_header_size` is exact and the same on every path: a head
/// of exactly the limit passes and one byte more gets 431, forwarded,
/// CONNECT and intercepted over HTTP/1.1; over HTTP/2 (measured as its
/// HTTP/1.1 form) likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_header_size_is_exact_on_every_path() {
    use common::handshake::{HOST, connector, handshaken};
    let max = 8192;
    let echo = echo_server().await;
    let extra = format!(
        "max_header_size = \"8KiB\"\nconnect_ports = [443, {}]",
        echo.port()
    );
    let config = base_config(&extra, "").replace("enabled = false", "enabled = true");
    let proxy = Proxy::start(&config).await;
    let ca = proxy
        .cache_dir
        .as_ref()
        .unwrap()
        .path()
        .join("certs/modgate-ca.pem");
    let origin = Origin::start("127.0.0.1").await;
    let limit = std::time::Duration::from_secs(10);
    for size in [max, max + 1] {
        let want = if size == max { "200" } else { "431" };
        let line = format!("GET {} HTTP/1.1\r\n", origin.url("/bytes/1"));
        let head = head_of(size, &line, "host: x\r\nconnection: close\r\n");
        let answer = raw_exchange(proxy.addr, head.as_bytes(), limit).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {want}")),
            "forward {size}: {answer}"
        );

        let line = format!("CONNECT {echo} HTTP/1.1\r\n");
        let head = head_of(size, &line, &format!("host: {echo}\r\n"));
        let answer = raw_exchange(
            proxy.addr,
            head.as_bytes(),
            std::time::Duration::from_secs(2),
        )
        .await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {want}")),
            "CONNECT {size}: {answer}"
        );

        let mut stream = handshaken(proxy.addr, &connector(&ca, false))
            .await
            .unwrap();
        let line = format!("GET {SUPPORTED} HTTP/1.1\r\n");
        let head = head_of(
            size,
            &line,
            &format!("host: {HOST}\r\nconnection: close\r\n"),
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {want}")),
            "intercepted {size}: {answer}"
        );
    }
    // Over HTTP/2 the head is measured as "GET https://host/path HTTP/1.1".
    let line = format!("GET https://{HOST}{SUPPORTED} HTTP/1.1\r\n");
    let pad = max - (line.len() + "x-pad: \r\n".len() + 2);
    assert_eq!(h2_status(proxy.addr, &ca, pad).await, 200);
    assert_eq!(h2_status(proxy.addr, &ca, pad + 1).await, 431);
}
