//! Gateways sharing one cache in an S3-compatible bucket (a real SeaweedFS
//! server): what one gateway fetched, every gateway serves, with the
//! mirrors gone; the bucket is a GOPROXY tree.

mod common;

use std::time::Duration;

use common::gateway::{HUGE, Work, download_all, get, tree};
use common::gomod::{Behaviour, Mirror, SumDb};
use common::metrics::{downloads_landed, scrape};
use common::s3::S3Server;
use modgate::cache::storage::Storage;
use modgate::cache::storage::s3::S3Storage;

/// The bytes of `name` in `bucket`, if it is there.
async fn object(bucket: &S3Storage, name: &str) -> Option<Vec<u8>> {
    let object = bucket.get(name, None).await.unwrap()?;
    let chunks: Vec<bytes::Bytes> = futures_util::TryStreamExt::try_collect(object.body)
        .await
        .unwrap();
    Some(chunks.concat())
}

/// The names of every object in `bucket`.
async fn names(bucket: &S3Storage) -> Vec<String> {
    let listed = bucket.list("").await.unwrap();
    listed.into_iter().map(|l| l.name).collect()
}

/// The immutable files of the cache directory `dir` (versions' `.info`,
/// `.mod` and `.zip`, lookups and tiles), by name.
fn immutable_files(dir: &std::path::Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".modgate")
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| Some(e.path().strip_prefix(dir).ok()?.to_str()?.to_string()))
        .filter(|n| n.contains("/@v/v") || n.contains("/lookup/") || n.contains("/tile/"))
        .collect()
}

/// Waits until every immutable file of `dir` is in the bucket (uploads
/// run after files are stored); bounded: 60 s. Returns how many.
async fn uploaded(bucket: &S3Storage, dir: &std::path::Path) -> usize {
    let local = immutable_files(dir);
    for _ in 0..120 {
        let listed = names(bucket).await;
        if local.iter().all(|n| listed.contains(n)) {
            return local.len();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let listed = names(bucket).await;
    panic!("not all of {local:?} reached the bucket: {listed:?}");
}

/// A cold `go mod download all` through gateway A fills A's directory and
/// the bucket; with the mirror and the checksum database stopped, gateways
/// B (its GOPROXY endpoint) and C (intercepted), which never had the
/// graph, serve all of it (verified) from the bucket; and the bucket, copied out with an S3 client, is a GOPROXY
/// tree the go command reads with every gateway stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_gateway_fetched_every_gateway_serves() {
    let server = S3Server::start("fleet").await;
    let bucket = S3Storage::new(&server.settings("go")).unwrap();
    let tree = tree();
    let sumdb = SumDb::start(tree.path(), "sum.golang.org").await;
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let key = sumdb.key.clone();
    let (a, b) = (Work::new(), Work::new());
    let config_a = a.config_keyed(
        &[mirror.url()],
        &[sumdb.url()],
        Some(&key),
        &common::s3::shared_lines(&server, &a, "go"),
    );
    let config_b = b.config_keyed(
        &[mirror.url()],
        &[sumdb.url()],
        Some(&key),
        &common::s3::shared_lines(&server, &b, "go"),
    );
    let gateway_a = a.gateway(&config_a).await;
    // The start-up summary names the bucket and what its probe found.
    let log = gateway_a.log_when(|l| l.contains("s3://fleet/go: ")).await;
    assert!(log.contains("s3://fleet/go: reachable, 0 objects"), "{log}");
    assert!(!log.contains("WARNING"), "{log}");
    let endpoint_a = format!("http://{}", gateway_a.addr("explicit proxy"));
    download_all(&a.go("cold", None, &endpoint_a, &key)).await;
    downloads_landed(gateway_a.admin_addr().await, None).await;
    let objects = uploaded(&bucket, &a.cache()).await;
    assert!(objects >= 12, "{objects} files uploaded");
    let metrics = scrape(gateway_a.admin_addr().await, None).await;
    let created = metrics["modgate_cache_shared_uploads_total{result=created}"];
    assert!(created >= objects as f64, "{metrics:?}");
    assert_eq!(
        metrics["modgate_cache_shared_uploads_total{result=failed}"],
        0.0
    );

    mirror.stop();
    drop(sumdb);
    let asked = mirror.requests().len();
    let gateway_b = b.gateway(&config_b).await;
    let endpoint_b = format!("http://{}", gateway_b.addr("explicit proxy"));
    download_all(&b.go("warm", None, &endpoint_b, &key)).await;
    assert_eq!(mirror.requests().len(), asked, "the mirror is stopped");
    assert!(
        b.cache().join("example.com/big/@v/v1.0.0.zip").exists(),
        "kept locally too"
    );
    assert!(
        gateway_b.log().contains("mirror=\"shared\""),
        "{}",
        gateway_b.log()
    );

    drop((gateway_a, gateway_b));
    let copy = tempfile::tempdir().unwrap();
    for listed in bucket.list("").await.unwrap() {
        let bytes = object(&bucket, &listed.name).await.unwrap();
        let path = copy.path().join(&listed.name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let file = format!("file://{}", copy.path().display());
    download_all(&a.go("file", None, &file, &key)).await;
}

/// A zip replaced in the bucket by other bytes is refused by the gateway
/// that reads it (a security event), removed from the bucket, fetched
/// from a mirror instead, and the bucket gets the right copy back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_bucket_copy_is_refused_and_replaced() {
    let server = S3Server::start("tampered").await;
    let bucket = S3Storage::new(&server.settings("go")).unwrap();
    let tree = tree();
    let sumdb = SumDb::start(tree.path(), "sum.golang.org").await;
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let key = sumdb.key.clone();
    let (a, b) = (Work::new(), Work::new());
    let shared_a = common::s3::shared_lines(&server, &a, "go");
    let config_a = a.config_keyed(&[mirror.url()], &[sumdb.url()], Some(&key), &shared_a);
    let gateway_a = a.gateway(&config_a).await;
    let zip = "/example.com/util/@v/v1.2.0.zip";
    let (status, good, _) = get(gateway_a.addr("explicit proxy"), zip).await;
    assert_eq!(status, 200);
    uploaded(&bucket, &a.cache()).await;

    let name = zip.trim_start_matches('/');
    let mut forged = good.clone();
    forged[good.len() / 2] ^= 0xff;
    replace(&bucket, name, forged).await;
    let from_mirror = mirror.count(zip);

    let shared_b = common::s3::shared_lines(&server, &b, "go");
    let config_b = b.config_keyed(&[mirror.url()], &[sumdb.url()], Some(&key), &shared_b);
    let gateway_b = b.gateway(&config_b).await;
    let (status, body, _) = get(gateway_b.addr("explicit proxy"), zip).await;
    assert_eq!(status, 200);
    assert!(body == good, "the right bytes, from the mirror");
    assert_eq!(mirror.count(zip), from_mirror + 1);
    let log = gateway_b.log_when(|l| l.contains("failed its check")).await;
    assert!(log.contains("failed its check"), "{log}");
    for _ in 0..60 {
        if object(&bucket, name)
            .await
            .is_some_and(|bytes| bytes == good)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the bucket never got the right copy back");
}

/// The bucket stopped mid-run: clients keep getting modules from the
/// gateway's own directory and the mirrors, none held long (each waits on
/// the bucket at most shared_timeout), /metrics shows the tier down;
/// once it is back, new files reach the bucket again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_outage_never_holds_clients() {
    let mut server = S3Server::start("outage").await;
    let bucket = S3Storage::new(&server.settings("go")).unwrap();
    let tree = tree();
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let work = Work::new();
    let shared = common::s3::shared_lines(&server, &work, "go").replace("\"3s\"", "\"1s\"");
    let config = work.config(&[mirror.url()], &[], &shared);
    let gateway = work.gateway(&config).await;
    let (addr, admin) = (gateway.addr("explicit proxy"), gateway.admin_addr().await);
    let first = "/example.com/util/@v/v1.2.0.mod";
    assert_eq!(get(addr, first).await.0, 200);
    uploaded(&bucket, &work.cache()).await;

    server.stop();
    for file in [
        "/example.com/util/@v/v1.2.0.zip",
        "/example.com/big/@v/v1.0.0.mod",
        first,
    ] {
        let asked = std::time::Instant::now();
        assert_eq!(get(addr, file).await.0, 200, "{file}");
        // Generous: the bound is the shared_timeout (1 s) plus a mirror
        // answer on loopback; an unbounded wait would be the store's own
        // retries, minutes.
        assert!(
            asked.elapsed() < Duration::from_secs(15),
            "{file}: {:?}",
            asked.elapsed()
        );
    }
    let metrics = scrape(admin, None).await;
    assert_eq!(
        metrics.get("modgate_cache_shared_up{}"),
        Some(&0.0),
        "{metrics:?}"
    );

    server.resume().await;
    let later = "/example.com/shapes/v2/@v/v2.1.0.zip";
    assert_eq!(get(addr, later).await.0, 200);
    for _ in 0..60 {
        let listed = bucket.list("").await.unwrap();
        if listed.iter().any(|l| format!("/{}", l.name) == later) {
            let metrics = scrape(admin, None).await;
            assert_eq!(metrics.get("modgate_cache_shared_up{}"), Some(&1.0));
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{later} never reached the bucket after it came back");
}

/// A gateway killed (SIGKILL) while it may be writing a 20 MiB zip to the
/// bucket: at every moment tried, the bucket has the whole file or none
/// of it, never part; the next gateway serves it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_upload_leaves_no_partial_object() {
    let server = S3Server::start("killed").await;
    let root = tempfile::tempdir().unwrap();
    let (huge, data) = (HUGE, common::gateway::huge(root.path()));
    let mirror = Mirror::start(root.path().to_path_buf(), Behaviour::Serve).await;
    for (round, delay) in [0u64, 50, 150, 400].into_iter().enumerate() {
        let prefix = format!("round{round}");
        let bucket = S3Storage::new(&server.settings(&prefix)).unwrap();
        let work = Work::new();
        let shared = common::s3::shared_lines(&server, &work, &prefix);
        let gateway = work
            .gateway(&work.config(&[mirror.url()], &[], &shared))
            .await;
        let (status, body, _) = get(gateway.addr("explicit proxy"), huge).await;
        assert!(status == 200 && body == data);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        gateway.kill().await;
        let name = huge.trim_start_matches('/');
        if let Some(bytes) = object(&bucket, name).await {
            assert!(bytes == data, "round {round}: a partial object");
        }
        let listed = bucket.list("").await.unwrap();
        assert!(
            listed
                .iter()
                .all(|l| l.name != name || l.size == data.len() as u64)
        );

        let next = Work::new();
        let shared = common::s3::shared_lines(&server, &next, &prefix);
        let gateway = next
            .gateway(&next.config(&[mirror.url()], &[], &shared))
            .await;
        let (status, body, _) = get(gateway.addr("explicit proxy"), huge).await;
        assert!(
            status == 200 && body == data,
            "round {round}: the next gateway"
        );
    }
}

/// One tree head for the fleet: gateway A verifies against the honest
/// database and its head reaches the bucket; gateway B, with a fresh
/// directory and a database that signs another history with the same
/// key, refuses it (a security event), again after a restart, and the
/// bucket's head is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_seen_by_one_gateway_is_refused_against_the_fleet_head() {
    let server = S3Server::start("forked").await;
    let bucket = S3Storage::new(&server.settings("go")).unwrap();
    let head = "sumdb/sum.golang.org/modgate-head";
    let tree = tree();
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let seed = ("SUMDB_SEED", "fleet fork");
    let honest = SumDb::start_with(None, tree.path(), "sum.golang.org", &[seed]).await;
    let a = Work::new();
    let shared_a = common::s3::shared_lines(&server, &a, "go");
    let config_a = a.config_keyed(
        &[mirror.url()],
        &[honest.url()],
        Some(&honest.key),
        &shared_a,
    );
    let gateway_a = a.gateway(&config_a).await;
    let (status, _, _) = get(
        gateway_a.addr("explicit proxy"),
        "/example.com/big/@v/v1.0.0.mod",
    )
    .await;
    assert_eq!(status, 200);
    let mut fleet_head = None;
    for _ in 0..60 {
        if let Some(bytes) = object(&bucket, head).await {
            fleet_head = Some(bytes);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let fleet_head = fleet_head.expect("A's head reached the bucket");
    drop(gateway_a);
    let key = honest.key.clone();
    drop(honest);

    let forked = SumDb::start_with(
        None,
        tree.path(),
        "sum.golang.org",
        &[seed, ("SUMDB_PREFILL", "3")],
    )
    .await;
    assert_eq!(forked.key, key, "the same key signs both histories");
    let b = Work::new();
    let shared_b = common::s3::shared_lines(&server, &b, "go");
    let config_b = b.config_keyed(
        &[mirror.url()],
        &[forked.url()],
        Some(&forked.key),
        &shared_b,
    );
    for run in ["first", "after a restart"] {
        let gateway_b = b.gateway(&config_b).await;
        let util = "/example.com/util/@v/v1.2.0.mod";
        let (status, _, _) = get(gateway_b.addr("explicit proxy"), util).await;
        assert_ne!(
            status, 200,
            "{run}: a module verified against a forked history"
        );
        let log = gateway_b.log_when(|l| l.contains("security=true")).await;
        assert!(
            log.contains("security=true"),
            "{run}: no security event:\n{log}"
        );
        assert!(
            object(&bucket, head).await.unwrap() == fleet_head,
            "{run}: the fleet's head moved"
        );
        gateway_b.kill().await;
    }
}

/// Replaces `name` in the bucket with `bytes`: removed, then written
/// create-only until the write creates it (a server may answer a write
/// just after a delete as if the object were still there); bounded: 10 s.
async fn replace(bucket: &S3Storage, name: &str, bytes: Vec<u8>) {
    use modgate::cache::storage::Written;
    for _ in 0..100 {
        bucket.delete(name).await.unwrap();
        if bucket.put_new(name, bytes.clone().into()).await.unwrap() == Written::Created {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} could not be replaced in the bucket");
}

/// A free loopback port now (for a gateway that must name its own
/// address in its config: `proxy.public_name`).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// 16 clients over two gateways, all asking for one 20 MiB zip from a
/// slow mirror at once: one gateway takes the lease and downloads it, the
/// other streams it from that one; the mirror serves it once, every client
/// gets the same bytes, each its first bytes before the mirror finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_download_one_zip_once() {
    let server = S3Server::start("leases").await;
    let root = tempfile::tempdir().unwrap();
    let (huge, data) = (HUGE, common::gateway::huge(root.path()));
    let mirror = Mirror::start(root.path().to_path_buf(), Behaviour::Throttled(8 << 20)).await;
    let ports = [free_port(), free_port()];
    let peers: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let mut gateways = Vec::new();
    let mut works = Vec::new();
    for port in ports {
        let work = Work::new();
        // cache.peers, in [cache] (before [cache.s3]).
        let peers_line = format!("peers = [{}]\n[cache.s3]", peers.join(", "));
        // A lease is taken within shared_timeout: generous, on a loaded machine.
        let extra = common::s3::shared_lines(&server, &work, "go")
            .replacen("[cache.s3]", &peers_line, 1)
            .replace("shared_timeout = \"3s\"", "shared_timeout = \"15s\"");
        let config = work.config(&[mirror.url()], &[], &extra);
        let text = std::fs::read_to_string(&config).unwrap().replace(
            "listen = [\"127.0.0.1:0\"]",
            &format!("listen = [\"127.0.0.1:{port}\"]\npublic_name = \"127.0.0.1:{port}\""),
        );
        std::fs::write(&config, text).unwrap();
        gateways.push(work.gateway(&config).await);
        works.push(work);
    }
    let addrs: Vec<std::net::SocketAddr> =
        gateways.iter().map(|g| g.addr("explicit proxy")).collect();
    let clients: Vec<_> = (0..16)
        .map(|n| {
            let addr = addrs[n % 2];
            tokio::spawn(async move { get(addr, huge).await })
        })
        .collect();
    let mut answers = Vec::new();
    for client in clients {
        answers.push(client.await.unwrap());
    }
    let done = mirror.finished_sending(huge).await;
    let logs: Vec<String> = gateways.iter().map(|g| g.log()).collect();
    assert_eq!(
        mirror.count(huge),
        1,
        "{:?}\n{}",
        mirror.requests(),
        logs.join("\n----\n")
    );
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
    let follower = gateways
        .iter()
        .any(|g| g.log().contains("mirror=\"peer http://127.0.0.1:"));
    assert!(follower, "no gateway streamed from the other");
}

/// `modgate <args>` run to its end (bounded: 5 minutes).
async fn modgate_cli(args: &[&str]) -> std::process::Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_modgate"))
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("in time")
        .unwrap()
}

fn said(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `cache warm` on one gateway's config fills the bucket for the fleet
/// (it exits once its uploads are done); `cache stats --shared` counts the
/// bucket; `cache verify --shared` passes, then finds a forged zip; and
/// `cache prune --shared --older-than` empties it of old files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_commands_look_after_the_bucket() {
    let server = S3Server::start("commands").await;
    let bucket = S3Storage::new(&server.settings("go")).unwrap();
    let tree = tree();
    let mirror = Mirror::start(tree.path().to_path_buf(), Behaviour::Serve).await;
    let sumdb = SumDb::start(tree.path(), "sum.golang.org").await;
    let work = Work::new();
    let straight = work.go("straight", None, &mirror.url(), "off");
    download_all(&straight).await;
    let go_sum = straight.work.join("app/go.sum");
    let shared = common::s3::shared_lines(&server, &work, "go");
    let config = work.config_keyed(&[mirror.url()], &[sumdb.url()], Some(&sumdb.key), &shared);
    let config = config.to_str().unwrap();
    let warm = modgate_cli(&[
        "cache",
        "warm",
        "--config",
        config,
        go_sum.to_str().unwrap(),
    ])
    .await;
    assert!(warm.status.success(), "{}", said(&warm));
    // Every .mod and .zip warm fetched is in the bucket when it exits.
    let listed: Vec<String> = names(&bucket).await;
    for m in common::gomod::MODULES {
        for ext in ["mod", "zip"] {
            let file = format!("{}/@v/{}.{ext}", common::gomod::escape(m.path), m.version);
            assert!(listed.contains(&file), "{file} not in {listed:?}");
        }
    }
    let stats = modgate_cli(&["cache", "stats", "--shared", "--config", config]).await;
    assert!(stats.status.success(), "{}", said(&stats));
    let zips = said(&stats)
        .lines()
        .find(|l| l.starts_with("zip"))
        .map(str::to_string);
    assert!(
        zips.as_deref()
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("4")),
        "{}",
        said(&stats)
    );
    assert!(
        said(&stats).contains("s3://commands/go"),
        "{}",
        said(&stats)
    );

    // The checksum database's lookups reach the bucket through a gateway
    // the go command asks (warm checks against go.sum alone).
    let gateway = work.gateway(std::path::Path::new(config)).await;
    let endpoint = format!("http://{}", gateway.addr("explicit proxy"));
    download_all(&work.go("lookups", None, &endpoint, &sumdb.key)).await;
    downloads_landed(gateway.admin_addr().await, None).await;
    uploaded(&bucket, &work.cache()).await;
    gateway.kill().await;
    let verify = modgate_cli(&["cache", "verify", "--shared", "--config", config]).await;
    let report = said(&verify);
    assert!(verify.status.success(), "{report}");
    let clean = "8 checked against the checksum database, 0 damaged";
    assert!(report.contains(clean), "{report}");
    let zip = "example.com/util/@v/v1.2.0.zip";
    let mut forged = object(&bucket, zip).await.unwrap();
    let middle = forged.len() / 2;
    forged[middle] ^= 0xff;
    replace(&bucket, zip, forged).await;
    let verify = modgate_cli(&["cache", "verify", "--shared", "--config", config]).await;
    let report = said(&verify);
    assert!(!verify.status.success(), "{report}");
    assert!(report.contains(&format!("DAMAGED {zip}")), "{report}");

    let prune = modgate_cli(&["cache", "prune", "--shared", "--config", config]).await;
    assert!(
        !prune.status.success() && said(&prune).contains("--older-than"),
        "{}",
        said(&prune)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let prune = modgate_cli(&[
        "cache",
        "prune",
        "--shared",
        "--older-than",
        "1s",
        "--config",
        config,
    ])
    .await;
    assert!(prune.status.success(), "{}", said(&prune));
    let left: Vec<String> = names(&bucket).await;
    assert!(left.iter().all(|n| !n.contains("/@v/")), "{left:?}");
}
