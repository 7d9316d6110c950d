//! modgate behind a corporate network's way out: a TLS-inspecting firewall
//! that re-signs every TLS connection with the company's own CA (here a
//! mirror whose certificate a "corporate" test CA signed).

mod common;

use common::gateway::{Work, download_all, get, tree};
use common::gomod::{Behaviour, CORP_CA, Mirror};

/// A mirror signed by the corporate CA is refused, naming that CA and the
/// key to set, until `upstream.ca_file` names the CA; then the go command
/// downloads the graph through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_resigned_by_the_firewall_is_trusted_through_upstream_ca_file() {
    let tree = tree();
    let work = Work::new();
    let ca = work.path("corp-ca.pem");
    let mirror = Mirror::start_tls(tree.path().to_path_buf(), Behaviour::Serve, &ca).await;

    // Without the CA: the start-up probe names the issuer and the key.
    let config = work.config_keyed(&[mirror.https_url()], &[mirror.https_url()], None, "");
    let gateway = work.gateway(&config).await;
    let summary = gateway.log_when(|log| log.contains("  mirrors ")).await;
    let line = summary
        .lines()
        .find(|l| l.contains("  mirrors "))
        .unwrap()
        .to_string();
    assert!(line.contains("UNREACHABLE"), "{line}");
    assert!(line.contains(CORP_CA), "the issuer is named: {line}");
    assert!(
        line.contains("upstream.ca_file"),
        "the key is named: {line}"
    );
    let endpoint = gateway.addr("explicit proxy");
    let (status, _, _) = get(endpoint, "/example.com/util/@v/v1.2.0.mod").await;
    assert_ne!(status, 200, "refused before the CA is trusted");
    assert!(
        mirror.requests().is_empty(),
        "no request reached the mirror"
    );
    drop(gateway);

    // With upstream.ca_file: the go command downloads the whole graph.
    let extra = format!("[upstream]\nca_file = {ca:?}\n");
    let config = work.config_keyed(&[mirror.https_url()], &[mirror.https_url()], None, &extra);
    let gateway = work.gateway(&config).await;
    let summary = gateway.log_when(|log| log.contains("  mirrors ")).await;
    assert!(summary.contains("(reachable,"), "{summary}");
    let go = work.go(
        "go",
        None,
        &format!("http://{}", gateway.addr("explicit proxy")),
        "off",
    );
    download_all(&go).await;
}
