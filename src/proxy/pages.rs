//! The explicit listener's own pages, origin-form GETs that are not module
//! requests: `/proxy.pac` (the PAC file), `/ca.pem` (the CA certificate),
//! `/ca` (how to trust it) and `/.well-known/modgate/mirrors` (each
//! mirror's health, for `modgate doctor` on clients). None needs proxy
//! credentials; the client allow-list still applies.

use http::header::{CONTENT_TYPE, HOST, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{Body, ProxyError, Shared};
use crate::message::plain_text;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    Pac,
    CaPem,
    Ca,
    Mirrors,
}

/// Where clients (`modgate doctor`) read the gateway's mirror health: a
/// path no module can have (an element may not start with a dot).
pub const MIRRORS_PATH: &str = "/.well-known/modgate/mirrors";

impl Page {
    /// The page `req` asks for, if it is an origin-form GET for one.
    pub fn of(req: &Request<Incoming>) -> Option<Page> {
        let get = req.method() == Method::GET || req.method() == Method::HEAD;
        if !get || req.uri().scheme().is_some() {
            return None;
        }
        match req.uri().path() {
            "/proxy.pac" => Some(Page::Pac),
            "/ca.pem" => Some(Page::CaPem),
            "/ca" => Some(Page::Ca),
            MIRRORS_PATH => Some(Page::Mirrors),
            _ => None,
        }
    }

    /// What the access log calls the answer.
    pub fn name(self) -> &'static str {
        match self {
            Page::Pac => "pac",
            Page::CaPem | Page::Ca => "ca",
            Page::Mirrors => "mirrors",
        }
    }

    pub fn answer(self, shared: &Shared, req: &Request<Incoming>) -> Response<Body> {
        if self == Page::Mirrors {
            return plain_text(StatusCode::OK, mirrors(shared));
        }
        if self == Page::Pac {
            let Some(proxy) = proxy_name(shared, req) else {
                return ProxyError::BadRequest(
                    "this page needs a Host header naming this proxy (host:port), or proxy.public_name"
                        .into(),
                )
                .response();
            };
            let text = crate::rules::pac::pac(&shared.policy.via.no_proxy, &proxy);
            return typed(
                plain_text(StatusCode::OK, text),
                "application/x-ns-proxy-autoconfig",
            );
        }
        // The CA pages name the proxy as configured or as reached, never as
        // the request's Host says: where clients fetch their trust root
        // from must not come from the request.
        let reached = req
            .extensions()
            .get::<super::ReachedAt>()
            .map(|r| r.0.to_string());
        let Some(proxy) = shared.public_name.clone().or(reached) else {
            return ProxyError::BadRequest(
                "no address to name this proxy by: set proxy.public_name".into(),
            )
            .response();
        };
        ca_page(self, shared, &proxy)
    }
}

/// The proxy as clients name it: `proxy.public_name`, else the request's Host.
fn proxy_name(shared: &Shared, req: &Request<Incoming>) -> Option<String> {
    let asked = req.headers().get(HOST).and_then(|h| h.to_str().ok());
    shared
        .public_name
        .as_deref()
        .or(asked)
        .and_then(crate::rules::pac::proxy_name)
}

/// One line per mirror: `module|sumdb <url> up|down <latency ms|->`.
fn mirrors(shared: &Shared) -> String {
    let Some(intercept) = &shared.policy.intercept else {
        return String::new();
    };
    let line = |(kind, health): (&str, crate::mirrors::Health)| {
        let state = if health.demoted_for.is_some() {
            "down"
        } else {
            "up"
        };
        let latency = health
            .latency
            .map_or("-".into(), |l| format!("{:.1}ms", l.as_secs_f64() * 1e3));
        let mirror = crate::rules::mask_userinfo(&health.mirror).into_owned();
        match (state, &health.failure) {
            ("down", Some(why)) => {
                let why = crate::rules::mask_userinfo(why).replace('\n', " ");
                format!("{kind} {mirror} {state} {latency} last failure: {why}\n")
            }
            _ => format!("{kind} {mirror} {state} {latency}\n"),
        }
    };
    intercept
        .with
        .gomod
        .mirror_health()
        .into_iter()
        .map(line)
        .collect()
}

fn ca_page(page: Page, shared: &Shared, proxy: &str) -> Response<Body> {
    let Some(intercept) = &shared.policy.intercept else {
        return plain_text(
            StatusCode::NOT_FOUND,
            "modgate: interception is off (intercept.enabled = false): there is no CA to trust\n",
        );
    };
    let ca = intercept.with.leaves.ca();
    if page == Page::CaPem {
        let pem = crate::tls::inspect::to_pem(ca.cert_der());
        return typed(plain_text(StatusCode::OK, pem), "application/x-pem-file");
    }
    let fingerprint = crate::tls::inspect::fingerprint(ca.cert_der());
    let html = crate::tls::trust_page::render(proxy, &fingerprint, ca.permitted());
    typed(plain_text(StatusCode::OK, html), "text/html; charset=utf-8")
}

fn typed(mut response: Response<Body>, content_type: &'static str) -> Response<Body> {
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
