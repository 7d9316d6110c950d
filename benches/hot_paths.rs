//! Micro-benchmarks of the decisions made on every connection or module
//! request: the NO_PROXY matcher, the routing decision, ClientHello
//! parsing (transparent mode) and the module path decoder.
//!
//! `cargo bench --bench hot_paths` (criterion; `-- --quick` for a short run).
//! The inputs are real: a ClientHello captured from the go command and one
//! from curl, an office-sized NO_PROXY list, a mixed-case module path.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use modgate::config::Config;
use modgate::gomod::path::{case_decode, plan};
use modgate::rules::{Kind, NoProxy, Private, Target, route};
use modgate::server::{egress, policy};
use modgate::tls::client_hello::peek;

const GO_HELLO: &[u8] = include_bytes!("../tests/data/client_hello/go.bin");
const CURL_HELLO: &[u8] = include_bytes!("../tests/data/client_hello/curl.bin");

/// Forty entries of each form an office writes: names, subdomains, nets,
/// host:port.
fn office_no_proxy() -> String {
    let mut entries = vec!["localhost".to_string(), "127.0.0.0/8".to_string()];
    for i in 0..10 {
        entries.push(format!(".corp{i}.example"));
        entries.push(format!("git{i}.internal.example"));
        entries.push(format!("10.{i}.0.0/16"));
        entries.push(format!("registry{i}.example:5000"));
    }
    entries.join(",")
}

fn rule_matcher(c: &mut Criterion) {
    let no_proxy = NoProxy::parse(&office_no_proxy()).expect("valid NO_PROXY");
    let mut group = c.benchmark_group("no_proxy");
    group.bench_function("subdomain hit (last domain entry)", |b| {
        b.iter(|| no_proxy.matches(black_box("api.build.corp9.example"), 443))
    });
    group.bench_function("name miss (every entry)", |b| {
        b.iter(|| no_proxy.matches(black_box("github.com"), 443))
    });
    group.bench_function("IPv4 literal in a net", |b| {
        b.iter(|| no_proxy.matches(black_box("10.9.3.4"), 443))
    });
    group.finish();
}

fn config(text: &str) -> Config {
    Config::parse("bench.toml", text).expect("valid bench config")
}

fn routing_decision(c: &mut Criterion) {
    let text = format!(
        "[proxy]\nallow_clients = [\"10.0.0.0/8\", \"127.0.0.0/8\"]\n\
         [upstream]\nproxy = \"http://parent.corp.example:3128\"\nno_proxy = {:?}\n",
        office_no_proxy()
    );
    let config = config(&text);
    let policy = policy(&config, egress(&config, &[]), Some(()));
    let client = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
    let mut group = c.benchmark_group("route");
    let cases = [
        ("CONNECT via the parent", "github.com:443", Kind::Connect),
        (
            "CONNECT bypassing the parent",
            "git3.internal.example:443",
            Kind::Connect,
        ),
        ("CONNECT intercepted", "proxy.golang.org:443", Kind::Connect),
        ("http forward", "example.com:80", Kind::Http),
        ("denied: private literal", "192.168.1.1:443", Kind::Connect),
    ];
    for (name, authority, kind) in cases {
        let target = Target::parse(authority, None).expect("valid target");
        group.bench_function(name, |b| {
            b.iter(|| route(&policy, black_box(client), black_box(&target), kind))
        });
    }
    group.finish();
}

fn client_hello(c: &mut Criterion) {
    let mut group = c.benchmark_group("client_hello");
    group.bench_function("go command", |b| b.iter(|| peek(black_box(GO_HELLO))));
    group.bench_function("curl", |b| b.iter(|| peek(black_box(CURL_HELLO))));
    group.bench_function("first 100 bytes (incomplete)", |b| {
        b.iter(|| peek(black_box(&CURL_HELLO[..100])))
    });
    group.finish();
}

fn module_path(c: &mut Criterion) {
    let private = Private::parse("*.corp.example,github.com/acme-internal").expect("valid");
    let sumdb = vec!["sum.golang.org".to_string()];
    let mut group = c.benchmark_group("module_path");
    group.bench_function("case_decode", |b| {
        b.iter(|| {
            case_decode(black_box(
                "github.com/!azure/azure-sdk-for-go/sdk/!azure!core",
            ))
        })
    });
    let zip = "/github.com/!azure/azure-sdk-for-go/sdk/!azure!core/@v/v1.11.1.zip";
    group.bench_function("plan a .zip request", |b| {
        b.iter(|| plan("proxy.golang.org", black_box(zip), &sumdb, &private).name())
    });
    let lookup = "/lookup/github.com/!burnt!sushi/toml@v1.3.2";
    group.bench_function("plan a sumdb lookup", |b| {
        b.iter(|| plan("sum.golang.org", black_box(lookup), &sumdb, &private).name())
    });
    group.finish();
}

criterion_group!(
    benches,
    rule_matcher,
    routing_decision,
    client_hello,
    module_path
);
criterion_main!(benches);
