//! The admin listener (`admin.listen`): `/` (the status page, [`status`]),
//! `/healthz` (the process answers),
//! `/readyz` (listeners bound, CA loaded, at least one module mirror not
//! demoted) and `/metrics` (Prometheus text format, by `prometheus-client`;
//! behind `admin.token` when one is set). What each path answers is decided
//! in [`answer`], which is pure; [`serve`] is the I/O.

use std::convert::Infallible;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::message::{Body, plain_text};

pub mod health;
pub mod status;

/// `Err(why)` while modgate should not be sent traffic.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What the status page shows now.
pub type Snapshot = Arc<dyn Fn() -> status::Status + Send + Sync>;

/// What the admin listener serves from (one per config: the token may change).
pub struct Admin {
    pub registry: Arc<Registry>,
    pub token: Option<String>,
    pub readiness: Readiness,
    pub status: Snapshot,
}

/// The content type of the Prometheus text format.
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The answer to `method path` with these credentials (`Authorization`).
pub fn answer(
    admin: &Admin,
    method: &Method,
    path: &str,
    authorization: Option<&str>,
) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return plain_text(StatusCode::METHOD_NOT_ALLOWED, "admin: GET only\n");
    }
    match path {
        "/healthz" => plain_text(StatusCode::OK, "ok\n"),
        "/readyz" => match (admin.readiness)() {
            Ok(()) => plain_text(StatusCode::OK, "ready\n"),
            Err(why) => plain_text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        "/" | "/metrics" if !authorized(admin, authorization) => {
            let mut response = plain_text(StatusCode::UNAUTHORIZED, "admin: bearer token needed\n");
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"modgate admin\""),
            );
            response
        }
        "/metrics" => metrics(&admin.registry),
        "/" => {
            let mut page = plain_text(StatusCode::OK, status::render(&(admin.status)()));
            page.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            page
        }
        _ => plain_text(
            StatusCode::NOT_FOUND,
            "admin: /, /healthz, /readyz, /metrics\n",
        ),
    }
}

fn authorized(admin: &Admin, authorization: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    let Some(token) = &admin.token else {
        return true;
    };
    let given = authorization
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    given.as_bytes().ct_eq(token.as_bytes()).into()
}

fn metrics(registry: &Registry) -> Response<Body> {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, registry) {
        return plain_text(StatusCode::INTERNAL_SERVER_ERROR, format!("admin: {e}\n"));
    }
    let mut response = plain_text(StatusCode::OK, text);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(METRICS_TYPE),
    );
    response
}

/// Serves the admin listener until `stop`, with the [`Admin`] current at each request.
/// Connections the admin listener serves at once; more wait in the backlog.
const MAX_CONNECTIONS: usize = 64;

pub async fn serve(listener: TcpListener, admin: Arc<ArcSwap<Admin>>, stop: CancellationToken) {
    // Scrapers and probes need a few connections; a flood of them must not
    // take the process's descriptors from the proxy.
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => return,
            permit = permits.clone().acquire_owned() => permit,
        };
        let Ok(permit) = permit else { return };
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req: Request<Incoming>| {
                let authorization = req
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                let response = answer(&admin.load(), req.method(), req.uri().path(), authorization);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            let _ = connection.await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(token: Option<&str>, ready: bool) -> Admin {
        let mut registry = Registry::default();
        let counter = prometheus_client::metrics::counter::Counter::<u64>::default();
        counter.inc();
        registry.register("requests", "Requests", counter);
        Admin {
            registry: Arc::new(registry),
            token: token.map(str::to_string),
            readiness: Arc::new(move || {
                if ready {
                    Ok(())
                } else {
                    Err("no mirror".into())
                }
            }),
            status: Arc::new(|| status::Status {
                uptime: std::time::Duration::ZERO,
                listeners: Vec::new(),
                mirrors: Vec::new(),
                parents: Vec::new(),
                cache: None,
                storing: true,
                shared: None,
                module_hits: (0, 0),
                requests: 0,
                tunnels: 0,
                tunnels_open: 0,
                forwarded: 0,
                last_reload: None,
                events: Vec::new(),
            }),
        }
    }

    #[test]
    fn paths() {
        let get = Method::GET;
        let open = admin(None, true);
        assert_eq!(answer(&open, &get, "/healthz", None).status(), 200);
        assert_eq!(answer(&open, &get, "/readyz", None).status(), 200);
        assert_eq!(answer(&open, &get, "/metrics", None).status(), 200);
        assert_eq!(answer(&open, &get, "/other", None).status(), 404);
        assert_eq!(answer(&open, &get, "/", None).status(), 200);
        assert_eq!(answer(&open, &Method::POST, "/healthz", None).status(), 405);
        let closed = admin(Some("0123456789abcdef"), false);
        assert_eq!(answer(&closed, &get, "/healthz", None).status(), 200);
        assert_eq!(answer(&closed, &get, "/readyz", None).status(), 503);
        assert_eq!(answer(&closed, &get, "/metrics", None).status(), 401);
        assert_eq!(answer(&closed, &get, "/", None).status(), 401);
        assert_eq!(
            answer(&closed, &get, "/metrics", Some("Bearer nope")).status(),
            401
        );
        let with = Some("Bearer 0123456789abcdef");
        assert_eq!(answer(&closed, &get, "/metrics", with).status(), 200);
    }
}
