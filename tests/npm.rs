//! npm packages through the gateway: npm installing a scoped package and
//! its unscoped dependency from a real npm registry (verdaccio) as the
//! mirror, each tarball checked against its packument's hash and kept in
//! the cache.

mod common;

use common::gateway::Work;
use common::gomod::cert_bundle;
use common::npm::{Verdaccio, npm_install, required};
use common::{curl, stdout};

/// A gateway in `work` with npm on, from `mirrors`; `extra` goes in [npm].
async fn npm_gateway(work: &Work, mirrors: &[String], extra: &str) -> common::netns::Modgate {
    let toml = format!(
        "[proxy]\nlisten = [\"127.0.0.1:0\"]\ndeny_destinations = []\n\
         [intercept]\nca_dir = {:?}\n\
         [npm]\nenabled = true\nmirrors = {mirrors:?}\n{extra}\n\
         [cache]\ndir = {:?}\n",
        work.path("certs"),
        work.cache(),
    );
    let config = work.path("modgate.toml");
    std::fs::write(&config, toml).unwrap();
    work.gateway(&config).await
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
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
