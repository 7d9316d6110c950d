//! npm packages through the gateway: npm installing a scoped package and
//! its unscoped dependency from a real npm registry (verdaccio) as the
//! mirror, each tarball checked against its packument's hash and kept in
//! the cache.

mod common;

use common::gateway::{Work, text};
use common::gomod::{Behaviour, Mirror, cert_bundle};
use common::npm::{Verdaccio, npm_install, required};
use common::{curl, stdout};

/// A gateway in `work` with npm on, from `mirrors`; `extra` goes in [npm].
async fn npm_gateway(work: &Work, mirrors: &[String], extra: &str) -> common::netns::Modgate {
    let config = npm_config(work, mirrors, extra);
    work.gateway(&config).await
}

/// Its config file.
fn npm_config(work: &Work, mirrors: &[String], extra: &str) -> std::path::PathBuf {
    work.packages_config("npm", mirrors, extra)
}

/// Acceptance 2: through the endpoint and intercepted, then again with the
/// mirror stopped, from the cache alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_installs_through_the_gateway_then_from_the_cache_alone() {
    let work = Work::new();
    let mut mirror = Verdaccio::start(&work.path("verdaccio"));
    let gateway = npm_gateway(&work, &[mirror.url()], "").await;
    let proxy = format!("http://{}", gateway.addr("explicit proxy"));
    let registry = format!("{proxy}/npm/");

    let app = work.path("app-endpoint");
    let out = npm_install(&app, &registry, &["@corp-test/lib"], &[]).await;
    assert!(out.status.success(), "{}\n{}", text(&out), gateway.log());
    assert_eq!(required(&app, "@corp-test/lib"), "@corp-test/lib 1.0.0");
    assert_eq!(required(&app, "plain-dep"), "plain-dep 2.0.0");
    // The packument modgate serves sends every tarball back through it.
    let doc = stdout(&curl(&[&format!("{registry}@corp-test%2flib")]).await);
    assert!(
        doc.contains(&format!(
            "\"tarball\":\"{proxy}/npm/-/files/@corp-test/lib/sha512-"
        )),
        "{doc}"
    );
    assert!(!doc.contains(&mirror.url()), "{doc}");

    let bundle = cert_bundle(&work.path("certs/modgate-ca.pem"), &work.path("bundle.pem"));
    let intercepted = [
        ("HTTPS_PROXY", proxy.clone()),
        ("https_proxy", proxy.clone()),
        ("npm_config_https_proxy", proxy.clone()),
        ("npm_config_cafile", bundle.display().to_string()),
    ];
    let app = work.path("app-intercepted");
    let out = npm_install(
        &app,
        "https://registry.npmjs.org/",
        &["@corp-test/lib"],
        &intercepted,
    )
    .await;
    assert!(out.status.success(), "{}\n{}", text(&out), gateway.log());
    assert_eq!(required(&app, "plain-dep"), "plain-dep 2.0.0");

    mirror.stop();
    let app = work.path("app-offline");
    let out = npm_install(&app, &registry, &["@corp-test/lib"], &[]).await;
    assert!(out.status.success(), "{}\n{}", text(&out), gateway.log());
    assert_eq!(required(&app, "@corp-test/lib"), "@corp-test/lib 1.0.0");
}

/// Acceptance 4: a scope under npm.private is never asked of a mirror.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_scope_never_reaches_a_mirror() {
    let work = Work::new();
    let mirror = Verdaccio::start(&work.path("verdaccio"));
    // What the test itself asked while publishing is left out.
    let published = mirror.log().len();
    let gateway = npm_gateway(&work, &[mirror.url()], "private = \"@corp-test/*\"").await;
    let registry = format!("http://{}/npm/", gateway.addr("explicit proxy"));
    let out = npm_install(&work.path("app"), &registry, &["@corp-test/lib"], &[]).await;
    assert!(!out.status.success());
    let answer = stdout(&curl(&["-i", &format!("{registry}@corp-test%2flib")]).await);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        answer.contains("npm.private \"@corp-test/*\"") && answer.contains("@corp-test:registry"),
        "{answer}"
    );
    let asked = mirror.log()[published..].to_string();
    assert!(!asked.contains("corp-test"), "{asked}");
}

/// Acceptance 3: a mirror whose packument gives one hash and whose
/// tarball has other bytes. The tarball is not stored, a security event
/// names package, version and mirror, and the honest second mirror serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_tarball_is_refused_and_the_honest_mirror_serves_it() {
    let work = Work::new();
    let honest = Verdaccio::start(&work.path("verdaccio"));
    let lying = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lying_url = format!("http://{}", lying.local_addr().unwrap());
    // The lying mirror: the honest packuments (their hashes), tarballs of its own.
    let root = work.path("lying");
    std::fs::create_dir_all(root.join("tarballs")).unwrap();
    for (name, tarball, tampered) in [
        ("@corp-test/lib", "lib-1.0.0.tgz", true),
        ("plain-dep", "plain-dep-2.0.0.tgz", false),
    ] {
        let encoded = name.replace('/', "%2f");
        let doc = stdout(&curl(&[&format!("{}/{encoded}", honest.url())]).await);
        let mut doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
        let version = doc["versions"]
            .as_object_mut()
            .unwrap()
            .values_mut()
            .next()
            .unwrap();
        let original = version["dist"]["tarball"].as_str().unwrap().to_string();
        version["dist"]["tarball"] = format!("{lying_url}/tarballs/{tarball}").into();
        std::fs::write(root.join(&encoded), doc.to_string()).unwrap();
        let bytes = if tampered {
            b"not the published tarball".to_vec()
        } else {
            curl(&[&original]).await.stdout
        };
        std::fs::write(root.join("tarballs").join(tarball), bytes).unwrap();
    }
    let lying = Mirror::serve(lying, root, Behaviour::Serve);
    let gateway = npm_gateway(&work, &[lying_url.clone(), honest.url()], "").await;
    let registry = format!("http://{}/npm/", gateway.addr("explicit proxy"));
    let app = work.path("app");
    let out = npm_install(&app, &registry, &["@corp-test/lib"], &[]).await;
    assert!(out.status.success(), "{}\n{}", text(&out), gateway.log());
    assert_eq!(required(&app, "@corp-test/lib"), "@corp-test/lib 1.0.0");
    let log = gateway.log();
    let event = log
        .lines()
        .find(|l| l.contains("security:"))
        .unwrap_or_else(|| panic!("no security event:\n{log}"));
    assert!(
        event.contains("@corp-test/lib 1.0.0") && event.contains(&lying_url),
        "{event}"
    );
    assert!(
        lying
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.contains("lib-1.0.0.tgz"))
    );
}

/// `modgate cache warm` takes a package-lock.json: its packuments and
/// tarballs (checked against their integrity) are fetched; npm then
/// installs with the mirror gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_warm_takes_a_package_lock() {
    let work = Work::new();
    let mut mirror = Verdaccio::start(&work.path("verdaccio"));
    // The lockfile npm writes, installing straight from the mirror.
    let straight = work.path("app-straight");
    let out = npm_install(
        &straight,
        &format!("{}/", mirror.url()),
        &["@corp-test/lib"],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let config = npm_config(&work, &[mirror.url()], "");
    let lock = straight.join("package-lock.json");
    let args = [
        "cache",
        "warm",
        lock.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    let out = common::run_modgate(&args).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("4 fetched, 0 already cached, 0 failed"),
        "{}",
        text(&out)
    );

    mirror.stop();
    let gateway = work.gateway(&config).await;
    let registry = format!("http://{}/npm/", gateway.addr("explicit proxy"));
    let app = work.path("app");
    let out = npm_install(&app, &registry, &["@corp-test/lib"], &[]).await;
    assert!(out.status.success(), "{}\n{}", text(&out), gateway.log());
    assert_eq!(required(&app, "plain-dep"), "plain-dep 2.0.0");
}
