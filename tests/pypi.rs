//! Python packages through the gateway: pip (Debian's, in a fresh venv)
//! installing wheels and an sdist made by the test from a real PyPI server
//! (pypiserver) as the mirror, checked against the index's sha256 and kept
//! in the cache.

mod common;

use common::gateway::{Work, text};
use common::gomod::{Behaviour, Mirror, cert_bundle};
use common::pypi::{PypiServer, packages, packages_with_big, pip_install, venv, version_of};
use common::{curl, stdout};

/// A gateway in `work` with PyPI on, from `mirrors`; `extra` goes in [pypi].
async fn pypi_gateway(work: &Work, mirrors: &[String], extra: &str) -> common::netns::Modgate {
    let config = pypi_config(work, mirrors, extra);
    work.gateway(&config).await
}

/// Its config file.
fn pypi_config(work: &Work, mirrors: &[String], extra: &str) -> std::path::PathBuf {
    work.packages_config("pypi", mirrors, extra)
}

/// Acceptance 1, through the endpoint: pip installs alpha (which needs
/// beta) and gamma (an sdist) through `/pypi/simple/`; with the mirror
/// then stopped, a second fresh venv installs them from the cache alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pip_installs_through_the_endpoint_then_from_the_cache_alone() {
    let work = Work::new();
    let dir = work.path("packages");
    packages(&dir, None);
    let mut mirror = PypiServer::start(&dir, &work.path("pypiserver.log"));
    let gateway = pypi_gateway(&work, &[mirror.url()], "").await;
    let index = format!("http://{}/pypi/simple/", gateway.addr("explicit proxy"));

    let first = venv(&work.path("venv-1"));
    let out = pip_install(&first, &index, &["alpha", "gamma"], &[]).await;
    assert!(out.status.success(), "{}\n{}", text(&out), gateway.log());
    assert_eq!(version_of(&first, "alpha"), "1.0");
    assert_eq!(version_of(&first, "beta"), "2.0");
    assert_eq!(version_of(&first, "gamma"), "3.0");

    // The page modgate serves sends every file back through it.
    let page = curl(&[&format!("{index}alpha/")]).await;
    let page = stdout(&page);
    assert!(page.contains("href=\"../../files/alpha/"), "{page}");
    assert!(
        !page.contains(&mirror.url()) && !page.contains("/packages/"),
        "{page}"
    );

    // The legacy JSON API, made from the page: files through modgate too.
    let gateway_base = format!("http://{}/pypi", gateway.addr("explicit proxy"));
    let doc = stdout(&curl(&[&format!("{gateway_base}/pypi/alpha/json")]).await);
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["info"]["version"], "1.0");
    let url = doc["urls"][0]["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{gateway_base}/files/alpha/")),
        "{url}"
    );
    let wheel = curl(&["-sf", url]).await;
    assert!(wheel.status.success() && wheel.stdout.starts_with(b"PK"));

    // Counted by ecosystem: in the metrics and in `cache stats`.
    let metrics = common::metrics::scrape(gateway.admin_addr().await, None).await;
    let misses = metrics
        .get("modgate_package_requests_total{cache=miss,ecosystem=pypi,status=200}")
        .copied();
    assert!(misses.unwrap_or(0.0) >= 3.0, "{metrics:?}");
    let config = work.path("modgate.toml");
    let stats =
        common::run_modgate(&["cache", "stats", "--config", config.to_str().unwrap()]).await;
    let stats = stdout(&stats);
    let files = stats
        .lines()
        .find(|l| l.starts_with("file") && l.ends_with("pypi"));
    assert_eq!(
        files.and_then(|l| l.split_whitespace().nth(1)),
        Some("3"),
        "{stats}"
    );

    mirror.stop();
    let second = venv(&work.path("venv-2"));
    let out = pip_install(&second, &index, &["alpha", "gamma"], &[]).await;
    assert!(out.status.success(), "{}\n{}", text(&out), gateway.log());
    assert_eq!(version_of(&second, "beta"), "2.0");
    assert_eq!(version_of(&second, "gamma"), "3.0");
}

/// Acceptance 3: a mirror whose page gives one sha256 and whose file has
/// other bytes. The file is not stored, a security event names package,
/// version and mirror, and with a second, honest mirror pip succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_wheel_is_refused_and_the_honest_mirror_serves_it() {
    let work = Work::new();
    let (honest_dir, tampered_dir) = (work.path("honest"), work.path("tampered"));
    packages(&honest_dir, Some(&tampered_dir));
    let honest = PypiServer::start(&honest_dir, &work.path("honest.log"));
    // The lying mirror: the honest pages (their hashes), the tampered files.
    let lying_root = work.path("lying");
    for project in ["alpha", "beta", "gamma"] {
        let page = curl(&[&format!("{}/simple/{project}/", honest.url())]).await;
        let dir = lying_root.join("simple").join(project);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.html"), &page.stdout).unwrap();
    }
    let packages_dir = lying_root.join("packages");
    std::fs::create_dir_all(&packages_dir).unwrap();
    for entry in std::fs::read_dir(&tampered_dir).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), packages_dir.join(entry.file_name())).unwrap();
    }
    let lying = Mirror::start(lying_root, Behaviour::Serve).await;
    let lying_url = format!("http://{}", lying.addr);
    let gateway = pypi_gateway(&work, &[lying_url.clone(), honest.url()], "").await;
    let index = format!("http://{}/pypi/simple/", gateway.addr("explicit proxy"));

    let env = venv(&work.path("venv"));
    let out = pip_install(&env, &index, &["alpha"], &[]).await;
    assert!(out.status.success(), "{}\n{}", text(&out), gateway.log());
    let installed = std::process::Command::new(env.join("bin/python"))
        .args(["-c", "import alpha; print(open(alpha.__file__).read())"])
        .output()
        .unwrap();
    let installed = String::from_utf8_lossy(&installed.stdout);
    assert!(
        installed.contains("VERSION = '1.0'") && !installed.contains("tampered"),
        "{installed}"
    );
    let log = gateway.log();
    let event = log
        .lines()
        .find(|l| l.contains("security:"))
        .unwrap_or_else(|| panic!("no security event:\n{log}"));
    assert!(
        event.contains("alpha") && event.contains("1.0") && event.contains(&lying_url),
        "{event}"
    );
    assert!(
        lying
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.starts_with("/packages/alpha")),
        "the lying mirror was asked first"
    );
    // What is kept is the honest wheel.
    let kept = std::fs::read_dir(work.cache().join("pypi/files/alpha"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let wheel = kept.join("alpha-1.0-py3-none-any.whl");
    assert_eq!(
        std::fs::read(&wheel).unwrap(),
        std::fs::read(honest_dir.join("alpha-1.0-py3-none-any.whl")).unwrap()
    );
}

/// Acceptance 4: a name under pypi.private is never asked of a mirror;
/// pip's error names the rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_name_never_reaches_a_mirror() {
    let work = Work::new();
    let dir = work.path("packages");
    packages(&dir, None);
    let mirror = PypiServer::start(&dir, &work.path("pypiserver.log"));
    let gateway = pypi_gateway(&work, &[mirror.url()], "private = \"corp-*, alpha\"").await;
    let index = format!("http://{}/pypi/simple/", gateway.addr("explicit proxy"));
    let env = venv(&work.path("venv"));
    let out = pip_install(&env, &index, &["Corp_Tools"], &[]).await;
    assert!(!out.status.success());
    let page = curl(&["-i", &format!("{index}corp-tools/")]).await;
    let page = stdout(&page);
    assert!(page.starts_with("HTTP/1.1 403"), "{page}");
    assert!(
        page.contains("pypi.private \"corp-*\"") && page.contains("--index-url"),
        "{page}"
    );
    let out = pip_install(&env, &index, &["alpha"], &[]).await;
    assert!(!out.status.success(), "alpha is private");
    let log = mirror.log();
    assert!(!log.contains("corp") && !log.contains("alpha"), "{log}");
}

/// Acceptance 5: 16 pip clients cold-installing one large wheel at once
/// cause one download from the mirror.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_cold_pips_cause_one_mirror_download() {
    let work = Work::new();
    let dir = work.path("packages");
    packages_with_big(&dir, None, 8 << 20);
    let mirror = PypiServer::start(&dir, &work.path("pypiserver.log"));
    let gateway = pypi_gateway(&work, &[mirror.url()], "").await;
    let index = format!("http://{}/pypi/simple/", gateway.addr("explicit proxy"));
    let venvs: Vec<std::path::PathBuf> = (0..16).map(|i| work.path(&format!("venv-{i}"))).collect();
    let made: Vec<_> = venvs
        .iter()
        .cloned()
        .map(|dir| std::thread::spawn(move || venv(&dir)))
        .collect();
    for thread in made {
        thread.join().unwrap();
    }
    let installs = venvs.iter().map(|env| {
        let index = index.clone();
        let env = env.clone();
        tokio::spawn(async move { pip_install(&env, &index, &["big"], &[]).await })
    });
    for install in futures_util::future::join_all(installs).await {
        let out = install.unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let log = mirror.log();
    let downloads = log
        .lines()
        .filter(|l| l.contains("GET /packages/big-1.0-py3-none-any.whl"))
        .count();
    assert_eq!(downloads, 1, "{log}");
}

/// Acceptance 1, intercepted: pip with only HTTPS_PROXY and the CA
/// (PIP_CERT) installs from pypi.org as it knows it; the gateway answers
/// for pypi.org with its mirror's packages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pip_installs_from_pypi_org_intercepted() {
    let work = Work::new();
    let dir = work.path("packages");
    packages(&dir, None);
    let mirror = PypiServer::start(&dir, &work.path("pypiserver.log"));
    let gateway = pypi_gateway(&work, &[mirror.url()], "").await;
    let proxy = format!("http://{}", gateway.addr("explicit proxy"));
    let bundle = cert_bundle(&work.path("certs/modgate-ca.pem"), &work.path("bundle.pem"));
    let env = venv(&work.path("venv"));
    let settings = [
        ("HTTPS_PROXY", proxy.clone()),
        ("https_proxy", proxy),
        ("NO_PROXY", String::new()),
        ("no_proxy", String::new()),
        ("PIP_CERT", bundle.display().to_string()),
    ];
    let out = pip_install(
        &env,
        "https://pypi.org/simple/",
        &["alpha", "gamma"],
        &settings,
    )
    .await;
    assert!(out.status.success(), "{}\n{}", text(&out), gateway.log());
    assert_eq!(version_of(&env, "beta"), "2.0");
    assert_eq!(version_of(&env, "gamma"), "3.0");
    let log = gateway.log();
    assert!(
        log.contains("pypi/simple/alpha/") && log.contains("intercept"),
        "{log}"
    );
}

/// `modgate cache warm` takes a requirements file in pip's hash-checking
/// form: the files with those hashes are fetched and checked; pip then
/// installs them with the mirror gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_warm_takes_a_hashed_requirements_file() {
    let work = Work::new();
    let dir = work.path("packages");
    packages(&dir, None);
    let mut mirror = PypiServer::start(&dir, &work.path("pypiserver.log"));
    let config = pypi_config(&work, &[mirror.url()], "");
    let mut requirements = String::from("# pinned\n");
    for (name, version) in [("alpha", "1.0"), ("beta", "2.0")] {
        let wheel = dir.join(format!("{name}-{version}-py3-none-any.whl"));
        let sum = std::process::Command::new("sha256sum")
            .arg(&wheel)
            .output()
            .unwrap();
        let sha = String::from_utf8_lossy(&sum.stdout)[..64].to_string();
        requirements.push_str(&format!("{name}=={version} \\\n    --hash=sha256:{sha}\n"));
    }
    let list = work.path("requirements.txt");
    std::fs::write(&list, requirements).unwrap();
    let args = [
        "cache",
        "warm",
        list.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    let out = common::run_modgate(&args).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("2 fetched, 0 already cached, 0 failed"),
        "{}",
        text(&out)
    );

    mirror.stop();
    let gateway = work.gateway(&config).await;
    let index = format!("http://{}/pypi/simple/", gateway.addr("explicit proxy"));
    let env = venv(&work.path("venv"));
    let out = pip_install(&env, &index, &["alpha"], &[]).await;
    assert!(out.status.success(), "{}\n{}", text(&out), gateway.log());
    assert_eq!(version_of(&env, "beta"), "2.0");
}

/// `modgate doctor` checks pip and npm when the machine has them: whether
/// the bundle pip really uses holds modgate's CA (REQUESTS_CA_BUNDLE and
/// CURL_CA_BUNDLE win over PIP_CERT), and whether Node trusts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_pip_and_npm() {
    let work = Work::new();
    let dir = work.path("packages");
    packages(&dir, None);
    let mirror = PypiServer::start(&dir, &work.path("pypiserver.log"));
    let gateway = pypi_gateway(&work, &[mirror.url()], "").await;
    let proxy = format!("http://{}", gateway.addr("explicit proxy"));
    let bundle = cert_bundle(&work.path("certs/modgate-ca.pem"), &work.path("bundle.pem"));
    let bundle = bundle.display().to_string();
    let ca = work.path("certs/modgate-ca.pem").display().to_string();
    let home = work.path("home");
    std::fs::create_dir_all(&home).unwrap();
    let doctor = |extra: Vec<(&'static str, String)>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_modgate"));
        command
            .arg("doctor")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &home)
            .env("PIP_CONFIG_FILE", "/dev/null")
            .env("npm_config_userconfig", home.join("npmrc"))
            // Not this machine's global npmrc (it may name a cafile).
            .env("npm_config_globalconfig", "/dev/null")
            .env("HTTPS_PROXY", &proxy)
            .envs(extra)
            .kill_on_drop(true);
        async move { text(&command.output().await.unwrap()) }
    };
    let bare = doctor(vec![]).await;
    assert!(
        bare.contains("FAIL  pip trusts modgate's CA: pip uses its own bundle"),
        "{bare}"
    );
    assert!(
        bare.contains("FAIL  npm trusts modgate's CA: Node trusts only its own roots"),
        "{bare}"
    );
    let set = doctor(vec![
        ("PIP_CERT", bundle.clone()),
        ("NODE_EXTRA_CA_CERTS", ca),
    ])
    .await;
    assert!(
        set.contains("ok    pip trusts modgate's CA: PIP_CERT"),
        "{set}"
    );
    assert!(
        set.contains("ok    npm trusts modgate's CA: NODE_EXTRA_CA_CERTS"),
        "{set}"
    );
    let overridden = doctor(vec![
        ("PIP_CERT", bundle),
        (
            "CURL_CA_BUNDLE",
            "/etc/ssl/certs/ca-certificates.crt".into(),
        ),
    ])
    .await;
    assert!(
        overridden.contains("FAIL  pip trusts modgate's CA: CURL_CA_BUNDLE /etc/ssl/certs/ca-certificates.crt does not hold"),
        "{overridden}"
    );
}

/// PyPI's files go to the fleet's bucket too: what gateway A fetched,
/// gateway B (its own directory, the mirror stopped) serves from the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_serves_pip_from_the_shared_bucket() {
    let server = common::s3::S3Server::start("modgate-pypi").await;
    let (a, b) = (Work::new(), Work::new());
    let dir = a.path("packages");
    packages(&dir, None);
    let mut mirror = PypiServer::start(&dir, &a.path("pypiserver.log"));
    let config = |work: &Work| {
        let shared = common::s3::shared_lines(&server, work, "fleet");
        let path = pypi_config(work, &[mirror.url()], "");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}{shared}")).unwrap();
        path
    };
    let (config_a, config_b) = (config(&a), config(&b));
    let gateway_a = a.gateway(&config_a).await;
    let index_a = format!("http://{}/pypi/simple/", gateway_a.addr("explicit proxy"));
    let out = pip_install(&venv(&a.path("venv")), &index_a, &["alpha"], &[]).await;
    assert!(out.status.success(), "{}\n{}", text(&out), gateway_a.log());
    // Uploads finish after the answers: wait for both wheels (bounded).
    use modgate::cache::storage::Storage;
    let storage = modgate::cache::storage::s3::S3Storage::new(&server.settings("fleet")).unwrap();
    let mut wheels = 0;
    for _ in 0..100 {
        let listed = storage.list("pypi/files/").await.unwrap_or_default();
        wheels = listed.iter().filter(|l| l.name.ends_with(".whl")).count();
        if wheels == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(wheels, 2);
    gateway_a.kill().await;

    // B has the page from the mirror, then the mirror goes: files from the bucket.
    let gateway_b = b.gateway(&config_b).await;
    let index_b = format!("http://{}/pypi/simple/", gateway_b.addr("explicit proxy"));
    let page = curl(&[
        "-sf",
        &format!("{index_b}alpha/"),
        &format!("{index_b}beta/"),
    ])
    .await;
    assert!(page.status.success());
    mirror.stop();
    let out = pip_install(&venv(&b.path("venv")), &index_b, &["alpha"], &[]).await;
    assert!(out.status.success(), "{}\n{}", text(&out), gateway_b.log());
    assert!(
        gateway_b.log().contains("mirror=\"shared\""),
        "{}",
        gateway_b.log()
    );
}
