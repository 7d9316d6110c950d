//! Reloading the modgate binary's config (SIGHUP, and `modgate reload`
//! through proxy.pid_file): transfers in flight finish byte-exact under
//! the old config, new connections follow the new bypass rules and
//! mirrors, and an invalid config is refused while the old one serves on.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::gateway::{get, get_counting, tree};
use common::gomod::{Behaviour, Mirror};
use common::metrics::scrape;
use common::netns::Modgate;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The gateway's config: listening on `listen` (an address on loopback),
/// modules from `mirror` (on 127.0.0.1, never via the parent), CONNECT to
/// `echo` (on 127.0.0.2) through `parent` unless `no_proxy` says otherwise.
fn write_config(
    path: &Path,
    work: &Path,
    echo: u16,
    parent: &str,
    listen: &str,
    no_proxy: &str,
    mirror: &str,
) {
    let toml = format!(
        "[proxy]\nlisten = [\"{listen}:0\"]\nallow_clients = [\"127.0.0.0/8\"]\n\
         deny_destinations = []\nconnect_ports = [{echo}]\npid_file = {:?}\n\
         [upstream]\nproxy = \"http://{parent}\"\nno_proxy = \"{no_proxy}\"\n\
         [intercept]\nca_dir = {:?}\n\
         [gomod]\nmirrors = [\"{mirror}\"]\nsumdb_mirrors = [\"{mirror}\"]\nverify = \"off\"\n\
         [cache]\ndir = {:?}\n",
        work.join("modgate.pid"),
        work.join("certs"),
        work.join("cache"),
    );
    // Written whole, then renamed: the reload never reads half a file.
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, toml).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// Streams 4 MiB through `stream` in 16 KiB pieces, one every 5 ms, and
/// checks every byte comes back.
async fn continuous(mut stream: tokio::net::TcpStream, moved: Arc<AtomicU64>) -> bool {
    let (mut read, mut write) = stream.split();
    let send = async {
        for i in 0..256u32 {
            let piece: Vec<u8> = (0..16384u32).map(|j| (i * 7 + j) as u8).collect();
            write.write_all(&piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let check = async {
        let mut back = vec![0u8; 16384];
        for i in 0..256u32 {
            read.read_exact(&mut back).await.unwrap();
            let piece: Vec<u8> = (0..16384u32).map(|j| (i * 7 + j) as u8).collect();
            if back != piece {
                return false;
            }
            moved.fetch_add(16384, Ordering::Relaxed);
        }
        true
    };
    let (_, exact) = tokio::join!(send, check);
    exact
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_rules_and_mirrors_while_transfers_go_on() {
    let echo = echo_server_on("127.0.0.2").await;
    let parent = Proxy::start(&base_config(
        &format!("connect_ports = [{}]", echo.port()),
        "",
    ))
    .await;
    let modules = tree();
    // The old mirror sends the 11 MiB zip slowly; the new one is quick.
    let old = Mirror::start(modules.path().to_path_buf(), Behaviour::Throttled(4 << 20)).await;
    let new = Mirror::start(modules.path().to_path_buf(), Behaviour::Serve).await;
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("modgate.toml");
    let parent_addr = parent.addr.to_string();
    write_config(
        &config,
        work.path(),
        echo.port(),
        &parent_addr,
        "127.0.0.1",
        "127.0.0.1",
        &old.url(),
    );
    let args = ["run", "--config", config.to_str().unwrap()];
    let modgate = Modgate::spawn(None, &args, None, 1).await;
    let proxy = modgate.addr("explicit proxy");

    // In flight: a tunnel (through the parent) and a large module download.
    let stream = open_tunnel(proxy, echo).await;
    assert_eq!(parent.running.stats.requests.get(), 1);
    let streamed = Arc::new(AtomicU64::new(0));
    let tunnel = tokio::spawn(continuous(stream, streamed.clone()));
    let zip = "/example.com/big/@v/v1.0.0.zip";
    let received = Arc::new(AtomicU64::new(0));
    let counting = received.clone();
    let download = tokio::spawn(async move { get_counting(proxy, zip, &counting).await });
    for _ in 0..1500 {
        if received.load(Ordering::Relaxed) > 0 && streamed.load(Ordering::Relaxed) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        received.load(Ordering::Relaxed) > 0,
        "the download is under way"
    );

    // New bypass rules (the echo server no longer via the parent) and mirror.
    write_config(
        &config,
        work.path(),
        echo.port(),
        &parent_addr,
        "127.0.0.1",
        "127.0.0.1,127.0.0.2",
        &new.url(),
    );
    modgate.signal(libc::SIGHUP);
    let log = modgate.log_when(|l| l.contains("config reloaded")).await;
    assert!(log.contains("config reloaded"), "{log}");
    let zip_size = std::fs::metadata(modules.path().join("example.com/big/@v/v1.0.0.zip"))
        .unwrap()
        .len();
    assert!(
        received.load(Ordering::Relaxed) < zip_size,
        "the reload came while the download was in flight"
    );

    // New connections follow the new config.
    let mut fresh = open_tunnel(proxy, echo).await;
    round_trip(&mut fresh, b"direct now").await;
    assert_eq!(
        parent.running.stats.requests.get(),
        1,
        "not via the parent any more"
    );
    let (status, _, _) = get(proxy, "/example.com/util/@v/v1.2.0.mod").await;
    assert_eq!(status, 200, "{}", modgate.log());
    assert_eq!(new.count("/example.com/util/@v/v1.2.0.mod"), 1);
    assert_eq!(old.count("/example.com/util/@v/v1.2.0.mod"), 0);

    // Both transfers in flight complete, byte-exact.
    assert!(
        tunnel.await.unwrap(),
        "the tunnel's stream came back changed"
    );
    let (status, body, _) = download.await.unwrap();
    assert_eq!(status, 200);
    let on_disk = std::fs::read(modules.path().join("example.com/big/@v/v1.0.0.zip")).unwrap();
    assert!(body == on_disk, "the download is not byte-exact");
    assert_eq!(old.count(zip), 1);

    // An invalid config is refused, every error logged; the old one serves on.
    std::fs::write(&config, "[proxy]\nlisten = \"nowhere\"\nbogus = 1\n").unwrap();
    let reload = common::run_modgate(&["reload", "--config", config.to_str().unwrap()]).await;
    assert!(
        !reload.status.success(),
        "no pid_file in an unreadable config"
    );
    modgate.signal(libc::SIGHUP);
    let log = modgate.log_when(|l| l.contains("reload refused")).await;
    assert!(log.contains("reload refused: 2 error(s)"), "{log}");
    assert!(log.contains("bogus"), "{log}");
    let mut after = open_tunnel(proxy, echo).await;
    round_trip(&mut after, b"still serving").await;
    let admin = modgate.admin_addr().await;
    let metrics = scrape(admin, None).await;
    assert_eq!(metrics["modgate_reloads_total{result=ok}"], 1.0);
    assert_eq!(metrics["modgate_reloads_total{result=invalid}"], 1.0);

    // `modgate reload` finds the process through proxy.pid_file; the
    // listener moves: the new address is bound, the old one stops taking
    // clients, and a tunnel accepted on it carries on.
    write_config(
        &config,
        work.path(),
        echo.port(),
        &parent_addr,
        "127.0.0.3",
        "127.0.0.1",
        &new.url(),
    );
    let reload = common::run_modgate(&["reload", "--config", config.to_str().unwrap()]).await;
    assert!(reload.status.success(), "{}", stderr(&reload));
    let mut count = 0.0;
    for _ in 0..600 {
        count = scrape(admin, None).await["modgate_reloads_total{result=ok}"];
        if count == 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count, 2.0);
    let log = modgate.log_when(|l| l.contains("stopped listening")).await;
    let moved: SocketAddr = log
        .split("modgate listening (explicit proxy) addr=")
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .find(|addr: &SocketAddr| addr.ip().to_string() == "127.0.0.3")
        .unwrap_or_else(|| panic!("no new listener: {log}"));
    assert!(
        log.contains(&format!(
            "stopped listening (explicit proxy); its connections carry on addr={proxy}"
        )),
        "{log}"
    );
    assert!(
        tokio::net::TcpStream::connect(proxy).await.is_err(),
        "the old listener still takes clients"
    );
    round_trip(&mut after, b"accepted before the move").await;
    let mut via_parent = open_tunnel(moved, echo).await;
    round_trip(&mut via_parent, b"via the parent again").await;
    assert_eq!(parent.running.stats.requests.get(), 2);
}
