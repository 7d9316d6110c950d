//! Records each stored file's SHA-256 (for `modgate cache verify`) on a
//! thread of its own at idle CPU priority: the hash of a 20 MiB zip costs
//! about 10 ms of CPU, which clients waiting on a busy gateway should not
//! pay. The entry is served from the moment it is stored; its record
//! follows when the CPU has time (a crash before that leaves it unrecorded,
//! which `verify` reports, never a wrong record). It hashes the download's
//! own open file, so a newer copy renamed over the entry meanwhile cannot
//! be recorded under the old record.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};

use super::store::{Meta, Store, sha256_read};

/// One stored file to hash and record.
pub struct Job {
    pub file: Arc<File>,
    pub meta: Meta,
}

pub struct Hasher {
    jobs: Sender<Job>,
}

impl Hasher {
    /// Starts the hashing thread; it ends when the hasher is dropped.
    pub fn start(store: Arc<Store>) -> std::io::Result<Hasher> {
        let (jobs, queue) = channel();
        std::thread::Builder::new()
            .name("modgate-hasher".into())
            .spawn(move || run(&store, &queue))?;
        Ok(Hasher { jobs })
    }

    pub fn submit(&self, job: Job) {
        let _ = self.jobs.send(job);
    }
}

fn run(store: &Store, queue: &Receiver<Job>) {
    crate::sys::idle_priority();
    while let Ok(Job { file, mut meta }) = queue.recv() {
        let hashed = (&*file)
            .seek(SeekFrom::Start(0))
            .and_then(|_| sha256_read((&*file).take(meta.size)));
        match hashed.and_then(|sha| {
            meta.sha256 = sha;
            store.record(&meta)
        }) {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(file = %meta.file, error = %e, "cache: cannot record the hash")
            }
        }
    }
}
