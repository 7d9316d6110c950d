//! Serves pip's requests (`/simple/<project>/` and the files its links
//! name) through the cache: private names answered 403 here and never sent
//! to a mirror, index pages rewritten so every file comes back through
//! modgate, files checked against their page's sha256.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{CONTENT_TYPE, HeaderValue, LOCATION};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::check::Hashes;
use super::page::{self, JSON};
use super::tree::{PYPI, file_key, normalize, page_key};
use crate::config::PackagesConfig;
use crate::indexed::{Answer, Front, FrontError, Setup, read_document};
use crate::message::{Body, plain_text, text};

pub struct Pypi {
    front: Front<super::Index>,
}

/// What a request is.
enum Route<'a> {
    Page(String),
    /// A name that is not normalized: pip is sent to the normalized one.
    Rename(String),
    File(&'a str, &'a str, &'a str),
    /// The legacy JSON API (`/pypi/<project>[/<version>]/json`).
    Json(String, Option<&'a str>),
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
    if let Some(rest) = path
        .strip_prefix("/pypi/")
        .and_then(|p| p.strip_suffix("/json"))
    {
        let (name, version) = match rest.split_once('/') {
            Some((name, version)) => (name, Some(version)),
            None => (rest, None),
        };
        return match normalize(name) {
            Some(project) => Route::Json(project, version),
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
    /// Mirrors from `config`, built as `setup` says; files kept in its cache.
    pub fn new(config: &PackagesConfig, setup: &Setup<'_>) -> Result<Pypi, FrontError> {
        let ecosystem = (PYPI, super::Index, Arc::new(Hashes) as _);
        let front = Front::new(ecosystem, config, setup)?;
        Ok(Pypi { front })
    }

    /// Whether `host` is one of PyPI's (`pypi.hosts`), which interception
    /// hands here.
    pub fn serves(&self, host: &str) -> bool {
        self.front.serves(host)
    }

    /// Serves `req` (its path `path`, relative to the index root) from
    /// `client`, which came by `entry`; the legacy JSON API's file URLs
    /// are at `base` (modgate as the client named it).
    pub async fn serve(
        &self,
        client: SocketAddr,
        (entry, base): (&'static str, &str),
        path: &str,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let answer = |accept: Option<String>| async move {
            self.answer(path, accept.as_deref(), base).await
        };
        self.front.serve((client, entry), path, req, answer).await
    }

    async fn answer(&self, path: &str, accept: Option<&str>, base: &str) -> Answer {
        let mut legacy = None;
        let (project, key) = match route(path) {
            Route::Page(project) => {
                let key = page_key(&project);
                (project, key)
            }
            Route::Json(project, version) => {
                legacy = Some(version);
                let key = page_key(&project);
                (project, key)
            }
            Route::File(project, sha256, filename) => {
                let key = file_key(project, sha256, filename);
                return match self.front.admitted(project, key, private) {
                    Ok(key) => self.front.through_cache(&key).await,
                    Err(refused) => *refused,
                };
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
        let key = match self.front.admitted(&project, key, private) {
            Ok(key) => key,
            Err(refused) => return *refused,
        };
        let mut answer = self.front.through_cache(&key).await;
        if answer.response.status().is_success() {
            let empty = Response::new(crate::message::empty());
            let response = std::mem::replace(&mut answer.response, empty);
            let mirror = answer.mirror.clone();
            let form = match legacy {
                Some(version) => Form::Legacy(base, version),
                None if page::wants_json(accept) => Form::Json,
                None => Form::Html,
            };
            answer.response = self
                .rewritten(&project, response, mirror.as_deref(), form)
                .await;
        }
        answer
    }

    /// `project`'s page as the mirror (`mirror`) served it, rewritten for
    /// the client, in `form`.
    async fn rewritten(
        &self,
        project: &str,
        response: Response<Body>,
        mirror: Option<&str>,
        form: Form<'_>,
    ) -> Response<Body> {
        let bad = |e: String| {
            let text = format!("modgate: the mirror's page for {project}: {e}\n");
            plain_text(StatusCode::BAD_GATEWAY, text)
        };
        let page_text = match read_document(response.into_body()).await {
            Ok(text) => text,
            Err(e) => return bad(e),
        };
        let (links, left_out) = match page::links(&page_text) {
            Ok(found) => found,
            Err(e) => return bad(e),
        };
        if left_out > 0 {
            tracing::debug!(project, left_out, "pypi: links without a sha256 left out");
        }
        if let Some(base) = mirror {
            let page_url = crate::indexed::Index::index_url(&super::Index, base, project);
            let found = super::locations(&page_url, &links);
            self.front.mirrors.remember(base, found);
        }
        let (content_type, body) = match form {
            Form::Json => (JSON, page::json(project, &links)),
            Form::Html => ("text/html; charset=utf-8", page::html(project, &links)),
            Form::Legacy(base, version) => {
                let mut doc = page::legacy_json(project, &links, base);
                if let Some(version) = version {
                    let Some(files) = doc["releases"].get(version).cloned() else {
                        let text = format!("modgate: {project} has no release {version}\n");
                        return plain_text(StatusCode::NOT_FOUND, text);
                    };
                    doc["info"]["version"] = version.into();
                    doc["urls"] = files;
                }
                ("application/json", doc.to_string())
            }
        };
        let mut response = Response::new(text(body));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}

/// The form a project's page is served in.
enum Form<'a> {
    /// PEP 503.
    Html,
    /// PEP 691.
    Json,
    /// The legacy JSON API, its file URLs at the base, for one release or all.
    Legacy(&'a str, Option<&'a str>),
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
