//! One suite for every place the cache keeps objects: the directory and
//! S3-compatible object storage (a real SeaweedFS server). Each
//! implementation must read whole and by range, write create-only (the
//! loser of a race keeps the winner's bytes), move a small object only by
//! compare-and-swap (no update lost among racing writers), delete, list,
//! and refuse names that are not relative GOPROXY paths.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use modgate::cache::storage::dir::DirStorage;
use modgate::cache::storage::s3::S3Storage;
use modgate::cache::storage::{Storage, Swapped, Written};

async fn read(
    storage: &dyn Storage,
    name: &str,
    range: Option<std::ops::Range<u64>>,
) -> Option<Vec<u8>> {
    let object = storage.get(name, range).await.unwrap()?;
    let chunks: Vec<Bytes> = object.body.try_collect().await.unwrap();
    Some(chunks.concat())
}

/// Reads, create-only writes, deletes and listings.
async fn objects(storage: &dyn Storage) {
    let zip = "example.com/m/@v/v1.0.0.zip";
    assert!(storage.get(zip, None).await.unwrap().is_none());
    let data = common::payload(200_000);
    let written = storage
        .put_new(zip, Bytes::from(data.clone()))
        .await
        .unwrap();
    assert_eq!(written, Written::Created);
    let again = storage
        .put_new(zip, Bytes::from_static(b"other bytes"))
        .await
        .unwrap();
    assert_eq!(
        again,
        Written::Existed,
        "a create-only write never replaces"
    );
    assert_eq!(read(storage, zip, None).await.unwrap(), data);
    let object = storage.get(zip, Some(1000..1100)).await.unwrap().unwrap();
    assert_eq!(object.size, 200_000, "the size is the whole object's");
    assert_eq!(
        read(storage, zip, Some(1000..1100)).await.unwrap(),
        &data[1000..1100]
    );

    let modfile = "example.com/m/@v/v1.0.0.mod";
    storage
        .put_new(modfile, Bytes::from_static(b"module example.com/m\n"))
        .await
        .unwrap();
    storage
        .put_new(
            "sumdb/sum.golang.org/lookup/example.com/m@v1.0.0",
            Bytes::from_static(b"x"),
        )
        .await
        .unwrap();
    let mut listed: Vec<(String, u64)> = storage
        .list("example.com/")
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.name, l.size))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [(modfile.to_string(), 21), (zip.to_string(), 200_000)]
    );
    assert_eq!(storage.list("").await.unwrap().len(), 3);

    storage.delete(zip).await.unwrap();
    storage.delete(zip).await.unwrap();
    assert!(storage.get(zip, None).await.unwrap().is_none());
    for bad in ["../escape", "/abs", "a//b", ".modgate/lock", ""] {
        assert!(storage.get(bad, None).await.is_err(), "{bad:?}");
        assert!(storage.put_new(bad, Bytes::new()).await.is_err(), "{bad:?}");
    }
}

/// Racing create-only writers: exactly one creates, every reader sees
/// its bytes whole.
async fn create_race(storage: Arc<dyn Storage>) {
    let name = "example.com/race/@v/v1.0.0.zip";
    let writers: Vec<_> = (0..8u8)
        .map(|n| {
            let storage = storage.clone();
            tokio::spawn(async move {
                storage
                    .put_new(name, Bytes::from(vec![n; 50_000]))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut created = 0;
    for writer in writers {
        created += usize::from(writer.await.unwrap() == Written::Created);
    }
    assert_eq!(created, 1);
    let bytes = read(storage.as_ref(), name, None).await.unwrap();
    assert_eq!(bytes.len(), 50_000);
    assert!(bytes.iter().all(|b| *b == bytes[0]));
}

/// Compare-and-swap: create-if-absent, a stale version loses, and racing
/// increments lose no update.
async fn swaps(storage: Arc<dyn Storage>) {
    let head = "sumdb/sum.golang.org/latest";
    let first = storage
        .swap(head, None, Bytes::from_static(b"0"))
        .await
        .unwrap();
    let Swapped::Done(version) = first else {
        panic!("creating: {first:?}");
    };
    assert_eq!(
        storage
            .swap(head, None, Bytes::from_static(b"x"))
            .await
            .unwrap(),
        Swapped::Conflict
    );
    let stale = version.clone();
    // (A version may be the content's hash, as a bucket's ETag is: the
    // stale one is of other bytes.)
    assert!(matches!(
        storage
            .swap(head, Some(&version), Bytes::from_static(b"1"))
            .await
            .unwrap(),
        Swapped::Done(_)
    ));
    assert_eq!(
        storage
            .swap(head, Some(&stale), Bytes::from_static(b"y"))
            .await
            .unwrap(),
        Swapped::Conflict
    );
    let Swapped::Done(_) = storage
        .swap(
            head,
            Some(&storage.get(head, None).await.unwrap().unwrap().version),
            Bytes::from_static(b"0"),
        )
        .await
        .unwrap()
    else {
        panic!("back to 0");
    };

    let (writers, each) = (6, 5);
    let racers: Vec<_> = (0..writers)
        .map(|_| {
            let storage = storage.clone();
            tokio::spawn(async move {
                for _ in 0..each {
                    increment(storage.as_ref(), head).await;
                }
            })
        })
        .collect();
    for racer in racers {
        racer.await.unwrap();
    }
    let value = String::from_utf8(read(storage.as_ref(), head, None).await.unwrap()).unwrap();
    assert_eq!(value, (writers * each).to_string(), "an update was lost");
}

/// Reads the counter at `name` and adds one, retrying on conflict
/// (bounded: 200 tries).
async fn increment(storage: &dyn Storage, name: &str) {
    for _ in 0..200 {
        let object = storage.get(name, None).await.unwrap().unwrap();
        let version = object.version.clone();
        let chunks: Vec<Bytes> = object.body.try_collect().await.unwrap();
        let n: u64 = String::from_utf8(chunks.concat()).unwrap().parse().unwrap();
        let next = Bytes::from((n + 1).to_string());
        if let Swapped::Done(_) = storage.swap(name, Some(&version), next).await.unwrap() {
            return;
        }
    }
    panic!("200 conflicts in a row");
}

/// Files written from local files a piece at a time (a bucket: multipart
/// for the large one): whole, create-only, and never visible when the
/// writer fails part way.
async fn large_files(storage: &dyn Storage) {
    let data = common::payload(20 << 20);
    let mut local = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut local, &data).unwrap();
    let local = Arc::new(local);
    let zip = "example.com/large/@v/v1.0.0.zip";
    let size = data.len() as u64;
    assert_eq!(
        storage.put_file(zip, local.clone(), size).await.unwrap(),
        Written::Created
    );
    assert_eq!(
        storage.put_file(zip, local.clone(), size).await.unwrap(),
        Written::Existed
    );
    assert!(read(storage, zip, None).await.unwrap() == data);
    let small = "example.com/large/@v/v1.0.0.mod";
    assert_eq!(
        storage.put_file(small, local.clone(), 100).await.unwrap(),
        Written::Created
    );
    assert_eq!(read(storage, small, None).await.unwrap(), &data[..100]);
    // A writer whose source fails after the first piece (asked for more
    // than the file holds): nothing appears.
    let broken = "example.com/broken/@v/v1.0.0.zip";
    assert!(
        storage
            .put_file(broken, local, size + (9 << 20))
            .await
            .is_err()
    );
    assert!(storage.get(broken, None).await.unwrap().is_none());
    assert!(
        !storage
            .list("")
            .await
            .unwrap()
            .iter()
            .any(|l| l.name == broken)
    );
}

async fn suite(storage: Arc<dyn Storage>) {
    objects(storage.as_ref()).await;
    large_files(storage.as_ref()).await;
    create_race(storage.clone()).await;
    swaps(storage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_keeps_objects() {
    let dir = tempfile::tempdir().unwrap();
    let storage = DirStorage::open(dir.path()).unwrap();
    suite(Arc::new(storage)).await;
    // The directory stays a GOPROXY tree: no temporary file is left.
    let leftovers = std::fs::read_dir(dir.path().join(".modgate/tmp"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_compatible_storage_keeps_objects() {
    let server = common::s3::S3Server::start("modgate-storage").await;
    let storage = S3Storage::new(&server.settings("fleet/cache")).unwrap();
    assert_eq!(storage.describe(), "s3://modgate-storage/fleet/cache");
    suite(Arc::new(storage)).await;
}
