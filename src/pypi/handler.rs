//! Serves pip's requests (`/simple/<project>/` and the files its links
//! name) through the cache: private names answered 403 here and never sent
//! to a mirror, index pages rewritten so every file comes back through
//! modgate, files checked against their page's sha256.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{ACCEPT, CONTENT_TYPE, HeaderValue, LOCATION};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::check::Hashes;
use super::page::{self, JSON};
use super::source::Mirrors;
use super::tree::{PYPI, file_key, normalize, page_key};
use crate::access::{self, User};
use crate::cache::{Cache, How, Miss, Outcome};
use crate::config::PypiConfig;
use crate::gomod::MirrorSet;
use crate::message::{Body, Metered, plain_text, text};
use crate::rules::Via;
use crate::stats::Stats;
use crate::tls::roots::{RootsError, client_config};
use crate::upstream::{Dialer, MirrorClient};

/// The largest index page modgate rewrites.
const MAX_PAGE: usize = 64 << 20;

pub struct Pypi {
    config: PypiConfig,
    mirrors: Arc<Mirrors>,
    cache: Cache,
    stats: Arc<Stats>,
}

/// What a request is.
enum Route<'a> {
    Page(String),
    /// A name that is not normalized: pip is sent to the normalized one.
    Rename(String),
    File(&'a str, &'a str, &'a str),
    Unknown,
}

fn route(path: &str) -> Route<'_> {
    if let Some(name) = path
        .strip_prefix("/simple/")
        .and_then(|p| p.strip_suffix('/'))
    {
        return match normalize(name) {
            Some(project) if project == name => Route::Page(project),
            Some(project) => Route::Rename(project),
            None => Route::Unknown,
        };
    }
    let mut parts = path.strip_prefix("/files/").unwrap_or_default().split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(project), Some(sha), Some(name), None) if !name.is_empty() => {
            Route::File(project, sha, name)
        }
        _ => Route::Unknown,
    }
}

impl Pypi {
    /// Mirrors from `config`, through the gateway's way out; files kept in `cache`.
    pub fn new(
        config: &PypiConfig,
        ca_files: &[&std::path::Path],
        cache: &Cache,
        (dialer, via): (Arc<Dialer>, Via),
        stats: Arc<Stats>,
        (timeout, demote_for): (std::time::Duration, std::time::Duration),
    ) -> Result<Pypi, RootsError> {
        let tls = client_config(ca_files)?;
        let client = MirrorClient::new(dialer, via, &config.mirrors, tls, timeout);
        let set = MirrorSet::new(&config.mirrors, demote_for);
        let mirrors = Arc::new(Mirrors::new(set, client, stats.clone()));
        cache.rewire(PYPI, mirrors.clone(), Some(Arc::new(Hashes)));
        Ok(Pypi {
            config: config.clone(),
            mirrors,
            cache: cache.clone(),
            stats,
        })
    }

    /// Serves `req` (its path `path`, relative to the index root) from
    /// `client`, which came by `entry`.
    pub async fn serve(
        &self,
        client: SocketAddr,
        entry: &'static str,
        path: &str,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let started = Instant::now();
        let (response, plan, how, mirror) =
            if req.method() == Method::GET || req.method() == Method::HEAD {
                let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
                self.answer(path, accept).await
            } else {
                let text = "modgate: package requests are GET or HEAD\n";
                let response = plain_text(StatusCode::METHOD_NOT_ALLOWED, text);
                (response, "refused", None, None)
            };
        let line = access::Line {
            client,
            user: req.extensions().get::<User>().map(|u| u.0.clone()),
            method: req.method().clone(),
            target: format!("pypi{path}"),
            entry,
            plan,
            cache: how.map(How::name),
            mirror,
            status: response.status().as_u16(),
            started,
        };
        let stats = self.stats.clone();
        response.map(move |body| {
            let log = move |bytes: u64| line.log(&stats, bytes);
            Metered::new(body, Arc::default(), Some(Box::new(log))).boxed()
        })
    }

    #[allow(clippy::type_complexity)]
    async fn answer(
        &self,
        path: &str,
        accept: Option<&str>,
    ) -> (Response<Body>, &'static str, Option<How>, Option<Arc<str>>) {
        let project = match route(path) {
            Route::Page(project) => project,
            Route::File(project, sha256, filename) => {
                return self.file(project, sha256, filename).await;
            }
            Route::Rename(project) => {
                let mut moved = plain_text(
                    StatusCode::MOVED_PERMANENTLY,
                    "modgate: see the normalized name\n",
                );
                if let Ok(to) = HeaderValue::from_str(&format!("../{project}/")) {
                    moved.headers_mut().insert(LOCATION, to);
                }
                return (moved, "rename", None, None);
            }
            Route::Unknown => {
                let text =
                    "modgate: PyPI requests are /simple/<project>/ and the files its pages link\n";
                return (
                    plain_text(StatusCode::NOT_FOUND, text),
                    "unknown",
                    None,
                    None,
                );
            }
        };
        if let Some(rule) = self.config.private.find(&project) {
            return (private(&project, rule), "private", None, None);
        }
        let Some(key) = page_key(&project) else {
            return (
                plain_text(StatusCode::NOT_FOUND, "modgate: not a project name\n"),
                "unknown",
                None,
                None,
            );
        };
        match self.cache.get(&key).await {
            Outcome::Served {
                response,
                how,
                mirror,
            } => {
                let served = self
                    .rewritten(&project, response, mirror.as_deref(), accept)
                    .await;
                (served, "pypi_mirrors", Some(how), mirror)
            }
            Outcome::Missed(miss, how) => (missed(&miss), "pypi_mirrors", Some(how), None),
        }
    }

    /// `project`'s page as the mirror (`mirror`) served it, rewritten for
    /// the client, in the form its `accept` asks for.
    async fn rewritten(
        &self,
        project: &str,
        response: Response<Body>,
        mirror: Option<&str>,
        accept: Option<&str>,
    ) -> Response<Body> {
        let page_text = match read_page(response.into_body()).await {
            Ok(text) => text,
            Err(e) => {
                return plain_text(
                    StatusCode::BAD_GATEWAY,
                    format!("modgate: the mirror's page for {project}: {e}\n"),
                );
            }
        };
        let (links, left_out) = match page::links(&page_text) {
            Ok(found) => found,
            Err(e) => {
                return plain_text(
                    StatusCode::BAD_GATEWAY,
                    format!("modgate: the mirror's page for {project}: {e}\n"),
                );
            }
        };
        if left_out > 0 {
            tracing::debug!(project, left_out, "pypi: links without a sha256 left out");
        }
        if let Some(base) = mirror {
            self.mirrors.learn(base, project, &links);
        }
        let (content_type, body) = if page::wants_json(accept) {
            (JSON, page::json(project, &links))
        } else {
            ("text/html; charset=utf-8", page::html(project, &links))
        };
        let mut response = Response::new(text(body));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }

    #[allow(clippy::type_complexity)]
    async fn file(
        &self,
        project: &str,
        sha256: &str,
        filename: &str,
    ) -> (Response<Body>, &'static str, Option<How>, Option<Arc<str>>) {
        if let Some(rule) = self.config.private.find(project) {
            return (private(project, rule), "private", None, None);
        }
        let Some(key) = file_key(project, sha256, filename) else {
            let text = "modgate: not a file modgate's index pages link\n";
            return (
                plain_text(StatusCode::NOT_FOUND, text),
                "unknown",
                None,
                None,
            );
        };
        match self.cache.get(&key).await {
            Outcome::Served {
                response,
                how,
                mirror,
            } => (response, "pypi_mirrors", Some(how), mirror),
            Outcome::Missed(miss, how) => (missed(&miss), "pypi_mirrors", Some(how), None),
        }
    }
}

/// A page's whole body, up to [`MAX_PAGE`] bytes.
async fn read_page(mut body: Body) -> Result<String, String> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > MAX_PAGE {
                return Err(format!("larger than {MAX_PAGE} bytes"));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The answer for a private name: never asked of a mirror.
fn private(project: &str, rule: &str) -> Response<Body> {
    plain_text(
        StatusCode::FORBIDDEN,
        format!(
            "modgate: {project} matches pypi.private {rule:?}: it is never asked of a public mirror. \
             Install it from your internal index (pip install --index-url https://<internal index>/simple/ {project}, \
             or PIP_EXTRA_INDEX_URL for both)\n"
        ),
    )
}

fn missed(miss: &Miss) -> Response<Body> {
    match miss {
        Miss::NotFound(reason) => plain_text(
            StatusCode::NOT_FOUND,
            format!("modgate: not found ({reason})\n"),
        ),
        Miss::Failed(reason) => plain_text(
            StatusCode::BAD_GATEWAY,
            format!("modgate: every mirror failed ({reason})\n"),
        ),
    }
}
