//! The office module cache, end to end: the real go command, real mirrors
//! (GOPROXY-layout directories served over HTTP, throttled or stopped at
//! will), the real checksum database, and the modgate binary (killed with
//! SIGKILL where a crash is the point).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use common::gateway::*;
use common::gomod::*;
use common::metrics::downloads_landed;

/// Point 1: a cold `go mod download all` fills the cache; with the mirror
/// and the checksum database stopped, fresh clients download the whole
/// graph (and verify it) from the cache alone: intercepted, through the
/// GOPROXY endpoint, and from `file://<cache dir>` with modgate stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graph_is_served_from_the_cache_alone() {
    let tree = tree();
    let sumdb = SumDb::start(tree.path(), "sum.golang.org").await;
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let work = Work::new();
    let key = sumdb.key.clone();
    let config = work.config_keyed(&[mirror.url()], &[sumdb.url()], Some(&key), "");
    let gateway = work.gateway(&config).await;
    let addr = gateway.addr("explicit proxy");

    download_all(&work.go("cold", Some(addr), DEFAULT_GOPROXY, &key)).await;
    // The go command can be done before the last files are stored.
    downloads_landed(gateway.admin_addr().await, None).await;
    assert!(work.cache().join("example.com/big/@v/v1.0.0.zip").exists());
    // modgate verified the graph itself and keeps the database's head.
    assert!(work.cache().join(".modgate/sum.golang.org.head").exists());
    assert!(!gateway.log().contains("verification failed"));
    assert!(work.cache().join("sumdb/sum.golang.org/supported").exists());
    assert_eq!(mirror.count("/example.com/big/@v/v1.0.0.zip"), 1);

    mirror.stop();
    drop(sumdb);
    let asked_before = mirror.requests().len();
    download_all(&work.go("intercepted", Some(addr), DEFAULT_GOPROXY, &key)).await;
    let endpoint = format!("http://{addr}");
    download_all(&work.go("endpoint", None, &endpoint, &key)).await;
    assert_eq!(
        mirror.requests().len(),
        asked_before,
        "the mirror is stopped"
    );
    let log = gateway.log_when(|l| l.contains("cache=\"hit\"")).await;
    assert!(log.contains("cache=\"hit\""), "{log}");

    gateway.kill().await;
    let file = format!("file://{}", work.cache().display());
    download_all(&work.go("file", None, &file, &key)).await;
}

/// Point 2: 16 clients at once, one slow 20 MiB download: one mirror
/// request, identical bytes, and every client's first bytes before the
/// mirror sent its last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_share_one_download_and_stream_it() {
    let root = tempfile::tempdir().unwrap();
    let data = huge(root.path());
    let mirror = Mirror::start(root.path().to_path_buf(), Behaviour::Throttled(8 << 20)).await;
    let work = Work::new();
    let gateway = work.gateway(&work.config(&[mirror.url()], &[], "")).await;
    let addr = gateway.addr("explicit proxy");
    let clients: Vec<_> = (0..16)
        .map(|_| tokio::spawn(async move { get(addr, HUGE).await }))
        .collect();
    let mut answers = Vec::new();
    for client in clients {
        answers.push(client.await.unwrap());
    }
    assert_eq!(mirror.count(HUGE), 1, "{:?}", mirror.requests());
    let done = mirror.finished_sending(HUGE).await;
    for (status, body, first) in answers {
        assert_eq!(status, 200);
        assert!(
            body == data,
            "a client got {} bytes that differ",
            body.len()
        );
        assert!(
            first.unwrap() < done,
            "first bytes only after the mirror was done"
        );
    }
}

/// Point 3: a `.mod` request makes the mirror serve that `.mod` alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mod_request_fetches_the_mod_alone() {
    let tree = tree();
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let work = Work::new();
    let gateway = work.gateway(&work.config(&[mirror.url()], &[], "")).await;
    let path = "/example.com/util/@v/v1.2.0.mod";
    let (status, body, _) = get(gateway.addr("explicit proxy"), path).await;
    assert_eq!(status, 200);
    assert_eq!(body, b"module example.com/util\n\ngo 1.21\n");
    assert_eq!(mirror.requests(), [path]);
}

fn modgate_cli(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_modgate"))
        .args(args)
        .output()
        .unwrap()
}

/// Point 4: SIGKILL mid-download leaves nothing that is served; the restart
/// removes the partial file, the next request fetches the file whole, and
/// `modgate cache verify` finds the cache clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_download_leaves_nothing_behind() {
    let root = tempfile::tempdir().unwrap();
    let data = huge(root.path());
    let mirror = Mirror::start(root.path().to_path_buf(), Behaviour::Throttled(4 << 20)).await;
    let work = Work::new();
    let config = work.config(&[mirror.url()], &[], "");
    let gateway = work.gateway(&config).await;
    let addr = gateway.addr("explicit proxy");
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let request = http::Request::get(HUGE)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let mut body = sender.send_request(request).await.unwrap().into_body();
        while let Some(Ok(frame)) = body.frame().await {
            let n = frame.data_ref().map_or(0, |d| d.len());
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    for _ in 0..1200 {
        if received.load(Ordering::Relaxed) >= 2 << 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        received.load(Ordering::Relaxed) >= 2 << 20,
        "download under way"
    );
    gateway.kill().await;
    let entry = work.cache().join(HUGE.trim_start_matches('/'));
    assert!(!entry.exists(), "a partial entry is in the tree");
    let temp_dir = work.cache().join(".modgate/tmp");
    assert_eq!(std::fs::read_dir(&temp_dir).unwrap().count(), 1);

    mirror.set_behaviour(Behaviour::Serve);
    let gateway = work.gateway(&config).await;
    gateway.log_when(|log| log.contains("cache ready")).await;
    assert_eq!(std::fs::read_dir(&temp_dir).unwrap().count(), 0);
    let (status, body, _) = get(gateway.addr("explicit proxy"), HUGE).await;
    assert_eq!(status, 200);
    assert!(body == data, "{} bytes served, not the file", body.len());
    assert_eq!(mirror.count(HUGE), 2);
    // The client can finish before the entry is stored, and its record
    // (its hash) is written in the background after that: verify when it
    // is there (bounded: 30 s).
    downloads_landed(gateway.admin_addr().await, None).await;
    let verify = || modgate_cli(&["cache", "verify", "--config", config.to_str().unwrap()]);
    let mut verified = verify();
    for _ in 0..300 {
        if !text(&verified).contains(" 1 unrecorded") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        verified = verify();
    }
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(
        text(&verified).contains("1 checked, 0 damaged"),
        "{}",
        text(&verified)
    );
}

/// Point 5: a new version on the mirror shows in `@v/list` once
/// `mutable_ttl` has passed; with the mirror down the stale list is still
/// served; offline, no mirror is dialled at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_revalidated_and_ride_out_outages() {
    let tree = tree();
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let work = Work::new();
    let ttl = "mutable_ttl = \"1s\"";
    let gateway = work.gateway(&work.config(&[mirror.url()], &[], ttl)).await;
    let addr = gateway.addr("explicit proxy");
    let list = "/example.com/util/@v/list";
    assert_eq!(get(addr, list).await.1, b"v1.2.0\n");

    let published = Instant::now();
    std::fs::write(tree.path().join(&list[1..]), "v1.2.0\nv1.3.0\n").unwrap();
    assert_eq!(get(addr, list).await.1, b"v1.2.0\n", "fresh for the TTL");
    // Requests that start once the TTL is surely over (it began before
    // `published`): the first gets the old list and starts the refresh,
    // every later one joins it or reads the new copy.
    let mut old_past_ttl = 0;
    let mut seen_at = None;
    for _ in 0..300 {
        let past_ttl = published.elapsed() > Duration::from_secs(1);
        if get(addr, list).await.1 == b"v1.2.0\nv1.3.0\n" {
            seen_at = Some(published.elapsed());
            break;
        }
        old_past_ttl += usize::from(past_ttl);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen_at = seen_at.expect("the new version shows");
    assert!(seen_at >= Duration::from_secs(1), "{seen_at:?}");
    assert!(old_past_ttl <= 1, "{old_past_ttl} old lists past the TTL");
    assert_eq!(mirror.count(list), 2, "fetched, then revalidated once");

    // With the mirror down, every answer is the last list, until it is
    // old enough to be refetched first and is served as stale.
    mirror.stop();
    let mut stale = false;
    for _ in 0..300 {
        let (status, body, _) = get(addr, list).await;
        assert_eq!((status, body.as_slice()), (200, &b"v1.2.0\nv1.3.0\n"[..]));
        if gateway.log().contains("cache=\"stale\"") {
            stale = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stale, "{}", gateway.log());
    gateway.kill().await;

    let counting = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let offline = work.config(&[counting.url()], &[], "offline = true");
    let gateway = work.gateway(&offline).await;
    let addr = gateway.addr("explicit proxy");
    assert_eq!(get(addr, list).await.0, 200);
    let (status, body, _) = get(addr, "/example.com/util/@v/v1.2.0.zip").await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("cache.offline"));
    assert!(counting.requests().is_empty(), "{:?}", counting.requests());
}

fn tree_bytes(dir: &Path) -> u64 {
    walk(dir)
        .iter()
        .filter(|p| !p.starts_with(dir.join(".modgate")))
        .filter(|p| !p.ends_with("supported"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Point 6: `max_size` below the graph: eviction keeps the cache under it,
/// and a later download still succeeds (from the mirror).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_the_cache_under_max_size() {
    let tree = tree();
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let work = Work::new();
    let config = work.config(&[mirror.url()], &[], "max_size = \"1KiB\"");
    let gateway = work.gateway(&config).await;
    let addr = gateway.addr("explicit proxy");
    download_all(&work.go("first", Some(addr), DEFAULT_GOPROXY, "off")).await;
    let log = gateway.log_when(|log| log.contains("evicted")).await;
    assert!(log.contains("cache: evicted"), "{log}");
    assert!(log.contains("larger than cache.max_size"), "{log}");
    let stored = tree_bytes(&work.cache());
    assert!(stored <= 1024, "{stored} bytes stored");
    let before = mirror.requests().len();
    download_all(&work.go("second", Some(addr), DEFAULT_GOPROXY, "off")).await;
    assert!(mirror.requests().len() > before);
}

/// Point 7: `modgate cache warm go.sum` fills the cache, each file checked
/// against its go.sum hash (made by the real go command); a wrong hash is
/// reported and that file is not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_fills_the_cache_from_a_go_sum() {
    let tree = tree();
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let work = Work::new();
    let straight = work.go("straight", None, &mirror.url(), "off");
    download_all(&straight).await;
    let go_sum = straight.work.join("app/go.sum");
    let config = work.config(&[mirror.url()], &[], "");
    let warm = modgate_cli(&[
        "cache",
        "warm",
        "--config",
        config.to_str().unwrap(),
        go_sum.to_str().unwrap(),
    ]);
    assert!(warm.status.success(), "{}", text(&warm));
    assert!(
        text(&warm).contains("8 fetched, 0 already cached, 0 failed"),
        "{}",
        text(&warm)
    );
    for m in MODULES {
        for ext in ["mod", "zip"] {
            let file = format!("{}/@v/{}.{ext}", escape(m.path), m.version);
            assert!(work.cache().join(&file).exists(), "{file}");
        }
    }

    std::fs::remove_dir_all(work.cache()).unwrap();
    let original = std::fs::read_to_string(&go_sum).unwrap();
    let tampered: String = original
        .lines()
        .map(|line| {
            if line.starts_with("example.com/util v1.2.0 h1:") {
                "example.com/util v1.2.0 h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
                    .to_string()
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let tampered_file = work.path("tampered.sum");
    std::fs::write(&tampered_file, tampered).unwrap();
    let warm = modgate_cli(&[
        "cache",
        "warm",
        "--config",
        config.to_str().unwrap(),
        tampered_file.to_str().unwrap(),
    ]);
    assert!(!warm.status.success(), "{}", text(&warm));
    assert!(
        text(&warm).contains("FAILED example.com/util@v1.2.0.zip: hash mismatch"),
        "{}",
        text(&warm)
    );
    assert!(!work.cache().join("example.com/util/@v/v1.2.0.zip").exists());
    assert!(work.cache().join("example.com/util/@v/v1.2.0.mod").exists());
    assert!(work.cache().join("example.com/big/@v/v1.0.0.zip").exists());
}

/// A mirror that sends a go.mod larger than the go command accepts (16 MiB)
/// is cut there: the client's response ends with an error, not a file, and
/// nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_sending_too_much_is_cut_and_nothing_is_stored() {
    let root = tempfile::tempdir().unwrap();
    let path = "/example.com/bloated/@v/v1.0.0.mod";
    let file = root.path().join(&path[1..]);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, vec![b'x'; 17 << 20]).unwrap();
    let mirror = Mirror::start(root.path().to_path_buf(), Behaviour::Serve).await;
    let work = Work::new();
    let gateway = work.gateway(&work.config(&[mirror.url()], &[], "")).await;
    let (status, body, _) = get(gateway.addr("explicit proxy"), path).await;
    assert_eq!(status, 200, "the head went out before the excess");
    assert!(body.len() < 17 << 20, "{} bytes passed", body.len());
    let log = gateway.log_when(|log| log.contains("nothing stored")).await;
    assert!(log.contains("more than 16777216 bytes"), "{log}");
    assert!(!work.cache().join(&path[1..]).exists());
}

/// A mirror answering in chunks, with no Content-Length: clients get the
/// whole file, and it is stored and served from the cache afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_answers_are_served_whole_and_stored() {
    let tree = tree();
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Chunked).await;
    let work = Work::new();
    let gateway = work.gateway(&work.config(&[mirror.url()], &[], "")).await;
    let addr = gateway.addr("explicit proxy");
    let zip = "/example.com/util/@v/v1.2.0.zip";
    let expected = std::fs::read(tree.path().join(&zip[1..])).unwrap();
    let (status, body, _) = get(addr, zip).await;
    assert_eq!((status, body.len()), (200, expected.len()));
    assert!(body == expected);
    assert_eq!(get(addr, zip).await.1, expected);
    assert_eq!(
        mirror.count(zip),
        1,
        "the second answer came from the cache"
    );
}

/// A full disk stops storing, not serving: with the cache on a 1 MiB
/// tmpfs, a 3 MiB zip still reaches its client whole, and nothing is
/// stored. Root (for the mount), as CI runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_storing_not_serving() {
    common::netns::require_root();
    let root = tempfile::tempdir().unwrap();
    let zip = "/example.com/roomy/@v/v1.0.0.zip";
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    let file = root.path().join(&zip[1..]);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, &data).unwrap();
    let mirror = Mirror::start(root.path().to_path_buf(), Behaviour::Serve).await;
    let work = Work::new();
    let _unmount = tmpfs(&work.cache(), "1m");
    let gateway = work.gateway(&work.config(&[mirror.url()], &[], "")).await;
    let (status, body, _) = get(gateway.addr("explicit proxy"), zip).await;
    assert_eq!(status, 200);
    assert!(body == data, "{} bytes served", body.len());
    let log = gateway.log_when(|log| log.contains("cannot store")).await;
    assert!(log.contains("cannot store:"), "{log}");
    assert!(log.contains("No space left on device"), "{log}");
    assert!(!work.cache().join(&zip[1..]).exists());
    let temp = work.cache().join(".modgate/tmp");
    assert_eq!(
        std::fs::read_dir(&temp).unwrap().count(),
        0,
        "a .part was left"
    );
    gateway.kill().await;
}
