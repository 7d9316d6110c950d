//! A real S3-compatible server for a test: SeaweedFS (installed by
//! scripts/test-deps.sh), single node on loopback ports picked free, its
//! data in the test's own directory, the test's own access key and bucket.
//! Killed (it is throw-away) and its sockets removed on drop.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const ACCESS_KEY: &str = "modgate-test";
pub const SECRET_KEY: &str = "modgate-test-secret-key";

pub struct S3Server {
    pub endpoint: String,
    pub bucket: String,
    child: Option<Child>,
    ports: Vec<u16>,
    /// How it was started, to start it again.
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

/// `n` distinct ports free on loopback now (all held while they are picked).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

impl S3Server {
    /// Starts the server and creates `bucket`; panics with its log when it
    /// is not up within 60 s. A port taken between being picked and being
    /// bound (the server exits) is met with new ports: three tries.
    pub async fn start(bucket: &str) -> S3Server {
        for _ in 0..3 {
            let mut server = Self::prepare(bucket);
            if server.try_resume().await {
                server.warm_up().await;
                return server;
            }
            server.stop();
        }
        panic!("SeaweedFS did not start in three tries");
    }

    /// The server's directory, ports and arguments; not started.
    fn prepare(bucket: &str) -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        let identities = format!(
            "{{\"identities\":[{{\"name\":\"test\",\"credentials\":[{{\"accessKey\":\"{ACCESS_KEY}\",\"secretKey\":\"{SECRET_KEY}\"}}],\"actions\":[\"Admin\",\"Read\",\"Write\",\"List\",\"Tagging\"]}}]}}"
        );
        let config = dir.path().join("s3.json");
        std::fs::write(&config, identities).unwrap();
        for sub in ["data", "tmp"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let ports = free_ports(8);
        let p = |i: usize| ports[i].to_string();
        let args = vec![
            "server".to_string(),
            format!("-dir={}", dir.path().join("data").display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-master.port={}", p(0)),
            format!("-master.port.grpc={}", p(1)),
            "-master.volumeSizeLimitMB=64".into(),
            "-master.telemetry=false".into(),
            "-volume.max=0".into(),
            "-volume.preStopSeconds=0".into(),
            format!("-volume.port={}", p(2)),
            format!("-volume.port.grpc={}", p(3)),
            "-filer".into(),
            format!(
                "-filer.localSocket={}",
                dir.path().join("tmp/filer.sock").display()
            ),
            format!("-filer.port={}", p(4)),
            format!("-filer.port.grpc={}", p(5)),
            "-s3".into(),
            format!("-s3.port={}", p(6)),
            format!("-s3.port.grpc={}", p(7)),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            format!("-s3.config={}", config.display()),
        ];
        S3Server {
            endpoint: format!("http://127.0.0.1:{}", ports[6]),
            bucket: bucket.to_string(),
            child: None,
            ports,
            args,
            _dir: dir,
        }
    }

    /// Starts the server again (the same ports and data) and waits until
    /// it answers; panics with its log when it does not.
    pub async fn resume(&mut self) {
        if !self.try_resume().await {
            let log =
                std::fs::read_to_string(self._dir.path().join("weed.log")).unwrap_or_default();
            panic!("SeaweedFS did not start in 60 s:\n{log}");
        }
    }

    /// Starts the server and creates the bucket: false when it exits
    /// first or does not answer within 60 s.
    async fn try_resume(&mut self) -> bool {
        let weed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/s3/bin/weed");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self._dir.path().join("weed.log"))
            .unwrap();
        let child = Command::new(weed)
            .args(&self.args)
            .env("TMPDIR", self._dir.path().join("tmp"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("SeaweedFS (scripts/test-deps.sh installs it)");
        self.child = Some(child);
        self.make_bucket().await
    }

    /// Kills the server (its data stays for [`S3Server::resume`]).
    /// The server's process, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Creates the bucket, retrying until the server answers (200 or 409);
    /// false when it exits first or 60 s pass.
    async fn make_bucket(&mut self) -> bool {
        let url = format!("{}/{}", self.endpoint, self.bucket);
        let user = format!("{ACCESS_KEY}:{SECRET_KEY}");
        for _ in 0..600 {
            if self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some())
            {
                return false;
            }
            let out = super::curl(&[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
                "--user",
                &user,
                "-H",
                "x-amz-content-sha256: UNSIGNED-PAYLOAD",
                "-X",
                "PUT",
                &url,
            ])
            .await;
            let status = super::stdout(&out);
            if status == "200" || status == "409" {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Writes and removes one object: the server makes its storage at the
    /// first write, which can take seconds on a loaded machine, longer
    /// than a test's shared_timeout. Bounded: 60 s.
    async fn warm_up(&self) {
        use modgate::cache::storage::Storage;
        let storage = modgate::cache::storage::s3::S3Storage::new(&self.settings("")).unwrap();
        let name = "modgate-warmup/first-write";
        let first = storage.put_new(name, bytes::Bytes::from_static(b"x"));
        let _ = tokio::time::timeout(Duration::from_secs(60), first).await;
        let _ = storage.delete(name).await;
    }

    /// The settings modgate needs to reach the bucket (under `prefix`).
    pub fn settings(&self, prefix: &str) -> modgate::cache::storage::s3::S3Settings {
        modgate::cache::storage::s3::S3Settings {
            ca_file: None,
            bucket: self.bucket.clone(),
            prefix: prefix.to_string(),
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".into(),
            path_style: true,
            allow_http: true,
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
        // It leaves Unix sockets in /tmp named by its ports.
        let Ok(entries) = std::fs::read_dir("/tmp") else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = self.ports.iter().any(|p| name.contains(&p.to_string()));
            if ours && entry.file_type().is_ok_and(|t| !t.is_dir()) && name.ends_with(".sock") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// `[cache]` lines putting a gateway on `server`'s bucket under `prefix`
/// (credentials in a 0600 file in `work`).
pub fn shared_lines(server: &S3Server, work: &super::gateway::Work, prefix: &str) -> String {
    let file = work.path("s3-credentials.toml");
    std::fs::write(
        &file,
        format!(
            "access_key_id = {:?}\nsecret_access_key = {:?}\n",
            ACCESS_KEY, SECRET_KEY
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
