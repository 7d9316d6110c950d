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
use super::tree::{PYPI, file_key, normalize, page_key};
use crate::access;
use crate::cache::key::Key;
use crate::cache::{Cache, How, Miss, Outcome};
use crate::config::PypiConfig;
use crate::gomod::MirrorSet;
use crate::indexed::Mirrors;
use crate::message::{Body, plain_text, text};
use crate::rules::Via;
use crate::stats::Stats;
use crate::tls::roots::{RootsError, client_config};
use crate::upstream::{Dialer, MirrorClient};

/// The largest index page modgate rewrites.
const MAX_PAGE: usize = 64 << 20;

pub struct Pypi {
    config: PypiConfig,
    mirrors: Arc<Mirrors<super::Index>>,
    cache: Cache,
    stats: Arc<Stats>,
}

/// An answer, and what the access log says of it.
struct Answer {
    response: Response<Body>,
    plan: &'static str,
    /// `None`: the cache was not asked.
    how: Option<How>,
    mirror: Option<Arc<str>>,
}

impl Answer {
    fn own(response: Response<Body>, plan: &'static str) -> Answer {
        Answer {
            response,
            plan,
            how: None,
            mirror: None,
        }
    }
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
        let mirrors = Arc::new(Mirrors::new(super::Index, set, client, stats.clone()));
        cache.rewire(PYPI, mirrors.clone(), Some(Arc::new(Hashes)));
        Ok(Pypi {
            config: config.clone(),
            mirrors,
            cache: cache.clone(),
            stats,
        })
    }

    /// Whether `host` is one of PyPI's (`pypi.hosts`), which interception
    /// hands here.
    pub fn serves(&self, host: &str) -> bool {
        self.config
            .hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
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
        let Answer {
            response,
            plan,
            how,
            mirror,
        } = if req.method() == Method::GET || req.method() == Method::HEAD {
            let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
            self.answer(path, accept).await
        } else {
            let text = "modgate: package requests are GET or HEAD\n";
            Answer::own(plain_text(StatusCode::METHOD_NOT_ALLOWED, text), "refused")
        };
        let labels = crate::stats::ModuleLabels {
            ecosystem: PYPI,
            cache: how.map_or("none", How::name),
            status: response.status().as_u16(),
        };
        self.stats.module_requests.get_or_create(&labels).inc();
        let line = access::Line {
            plan,
            cache: how.map(How::name),
            mirror,
            ..access::Line::new(client, &req, format!("pypi{path}"), entry, started)
        };
        line.on_sent(self.stats.clone(), response)
    }

    async fn answer(&self, path: &str, accept: Option<&str>) -> Answer {
        let project = match route(path) {
            Route::Page(project) => project,
            Route::File(project, sha256, filename) => {
                return self.file(project, sha256, filename).await;
            }
            Route::Rename(project) => {
                let text = "modgate: see the normalized name\n";
                let mut moved = plain_text(StatusCode::MOVED_PERMANENTLY, text);
                if let Ok(to) = HeaderValue::from_str(&format!("../{project}/")) {
                    moved.headers_mut().insert(LOCATION, to);
                }
                return Answer::own(moved, "rename");
            }
            Route::Unknown => {
                let text =
                    "modgate: PyPI requests are /simple/<project>/ and the files its pages link\n";
                return Answer::own(plain_text(StatusCode::NOT_FOUND, text), "unknown");
            }
        };
        let key = match self.admitted(&project, page_key(&project)) {
            Ok(key) => key,
            Err(refused) => return *refused,
        };
        let mut answer = self.through_cache(&key).await;
        if answer.response.status().is_success() {
            let response =
                std::mem::replace(&mut answer.response, Response::new(crate::message::empty()));
            let mirror = answer.mirror.clone();
            answer.response = self
                .rewritten(&project, response, mirror.as_deref(), accept)
                .await;
        }
        answer
    }

    /// `key` of `project`, unless the name is private (403, never asked
    /// of a mirror) or the request names no file modgate serves.
    fn admitted(&self, project: &str, key: Option<Key>) -> Result<Key, Box<Answer>> {
        if let Some(rule) = self.config.private.find(project) {
            return Err(Box::new(Answer::own(private(project, rule), "private")));
        }
        key.ok_or_else(|| {
            let text = "modgate: not a project page or a file its page links\n";
            Box::new(Answer::own(
                plain_text(StatusCode::NOT_FOUND, text),
                "unknown",
            ))
        })
    }

    async fn through_cache(&self, key: &Key) -> Answer {
        match self.cache.get(key).await {
            Outcome::Served {
                response,
                how,
                mirror,
            } => Answer {
                response,
                plan: "pypi_mirrors",
                how: Some(how),
                mirror,
            },
            Outcome::Missed(miss, how) => Answer {
                how: Some(how),
                ..Answer::own(missed(&miss), "pypi_mirrors")
            },
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
            self.mirrors.learn(base, project, &page_text);
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

    async fn file(&self, project: &str, sha256: &str, filename: &str) -> Answer {
        match self.admitted(project, file_key(project, sha256, filename)) {
            Ok(key) => self.through_cache(&key).await,
            Err(refused) => *refused,
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
