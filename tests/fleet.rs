//! Gateways sharing one cache in an S3-compatible bucket (a real SeaweedFS
//! server): what one gateway fetched, every gateway serves, with the
//! mirrors gone; the bucket is a GOPROXY tree.

mod common;

use std::time::Duration;

use common::gateway::{Work, download_all, tree};
use common::gomod::{Behaviour, Mirror, SumDb};
use common::metrics::downloads_landed;
use common::s3::S3Server;
use modgate::cache::storage::Storage;
use modgate::cache::storage::s3::S3Storage;

/// `[cache]` lines putting a gateway on `server`'s bucket under `prefix`
/// (credentials in a 0600 file in `work`).
fn shared_lines(server: &S3Server, work: &Work, prefix: &str) -> String {
    let file = work.path("s3-credentials.toml");
    std::fs::write(
        &file,
        format!(
            "access_key_id = {:?}\nsecret_access_key = {:?}\n",
            common::s3::ACCESS_KEY,
            common::s3::SECRET_KEY
        ),
    )
    .unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&file).unwrap().permissions(),
        0o600,
    );
    let mut permissions = std::fs::metadata(&file).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o600);
    std::fs::set_permissions(&file, permissions).unwrap();
    format!(
        "shared = \"s3://{}/{prefix}\"\nshared_timeout = \"3s\"\n\
         [cache.s3]\nendpoint = {:?}\npath_style = true\nallow_http = true\ncredentials_file = {file:?}\n",
        server.bucket, server.endpoint
    )
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
        let listed: Vec<String> = bucket
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        if local.iter().all(|n| listed.contains(n)) {
            return local.len();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let listed: Vec<String> = bucket
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    panic!("not all of {local:?} reached the bucket: {listed:?}");
}

/// A cold `go mod download all` through gateway A fills A's directory and
/// the bucket; with the mirror and the checksum database stopped, gateway
/// B, which never had the graph, serves all of it (verified) from the
/// bucket; and the bucket, copied out with an S3 client, is a GOPROXY
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
        &shared_lines(&server, &a, "go"),
    );
    let config_b = b.config_keyed(
        &[mirror.url()],
        &[sumdb.url()],
        Some(&key),
        &shared_lines(&server, &b, "go"),
    );
    let gateway_a = a.gateway(&config_a).await;
    let endpoint_a = format!("http://{}", gateway_a.addr("explicit proxy"));
    download_all(&a.go("cold", None, &endpoint_a, &key)).await;
    downloads_landed(gateway_a.admin_addr().await, None).await;
    let objects = uploaded(&bucket, &a.cache()).await;
    assert!(objects >= 12, "{objects} files uploaded");

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
        let object = bucket.get(&listed.name, None).await.unwrap().unwrap();
        let chunks: Vec<bytes::Bytes> = futures_util::TryStreamExt::try_collect(object.body)
            .await
            .unwrap();
        let path = copy.path().join(&listed.name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, chunks.concat()).unwrap();
    }
    let file = format!("file://{}", copy.path().display());
    download_all(&a.go("file", None, &file, &key)).await;
}
