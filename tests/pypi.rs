//! Python packages through the gateway: pip (Debian's, in a fresh venv)
//! installing wheels and an sdist made by the test from a real PyPI server
//! (pypiserver) as the mirror, checked against the index's sha256 and kept
//! in the cache.

mod common;

use common::gateway::Work;
use common::pypi::{PypiServer, packages, pip_install, venv, version_of};
use common::{curl, stdout};

/// A gateway in `work` with PyPI on, from `mirrors`; `extra` goes in [pypi].
async fn pypi_gateway(work: &Work, mirrors: &[String], extra: &str) -> common::netns::Modgate {
    let toml = format!(
        "[proxy]\nlisten = [\"127.0.0.1:0\"]\ndeny_destinations = []\n\
         [intercept]\nca_dir = {:?}\n\
         [pypi]\nenabled = true\nmirrors = {mirrors:?}\n{extra}\n\
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

    mirror.stop();
    let second = venv(&work.path("venv-2"));
    let out = pip_install(&second, &index, &["alpha", "gamma"], &[]).await;
    assert!(out.status.success(), "{}\n{}", text(&out), gateway.log());
    assert_eq!(version_of(&second, "beta"), "2.0");
    assert_eq!(version_of(&second, "gamma"), "3.0");
}
