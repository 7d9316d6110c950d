//! Serves npm's requests (`/<name>` packuments and the tarballs they
//! name) through the cache: private names and scopes answered 403 here and
//! never sent to a mirror, packuments rewritten so every tarball comes back
//! through modgate, tarballs checked against their packument's hash.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::Hashes;
use super::packument;
use super::tree::{NPM, packument_key, split_tarball, tarball_key, valid_name};
use crate::config::PackagesConfig;
use crate::indexed::{Answer, Front, FrontError, Setup, read_document};
use crate::message::{Body, plain_text, text};

pub struct Npm {
    front: Front<super::Index>,
}

/// What a request is.
enum Route<'a> {
    Packument(String),
    Tarball(&'a str, &'a str, &'a str),
    Unknown,
}

fn route(path: &str) -> Route<'_> {
    if let Some(rest) = path.strip_prefix("/-/files/") {
        return match split_tarball(rest) {
            Some((name, hash, file)) => Route::Tarball(name, hash, file),
            None => Route::Unknown,
        };
    }
    let name = (path.strip_prefix('/').unwrap_or_default())
        .replace("%2f", "/")
        .replace("%2F", "/");
    if valid_name(&name) {
        Route::Packument(name)
    } else {
        Route::Unknown
    }
}

impl Npm {
    /// Mirrors from `config`, built as `setup` says; files kept in its cache.
    pub fn new(config: &PackagesConfig, setup: &Setup<'_>) -> Result<Npm, FrontError> {
        let ecosystem = (NPM, super::Index, Arc::new(Hashes) as _);
        let front = Front::new(ecosystem, config, setup)?;
        Ok(Npm { front })
    }

    /// Whether `host` is one of npm's (`npm.hosts`), which interception
    /// hands here.
    pub fn serves(&self, host: &str) -> bool {
        self.front.serves(host)
    }

    /// Serves `req` (its path `path`, relative to the registry root) from
    /// `client`, which came by `entry`; tarballs are pointed at `base`.
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
        let name = match route(path) {
            Route::Packument(name) => name,
            Route::Tarball(name, hash, file) => {
                let key = tarball_key(name, hash, file);
                return match self.front.admitted(name, key, private) {
                    Ok(key) => self.front.through_cache(&key).await,
                    Err(refused) => *refused,
                };
            }
            Route::Unknown => {
                let text = "modgate: npm requests through modgate are packuments (/<name>) and the tarballs they name\n";
                return Answer::own(plain_text(StatusCode::NOT_FOUND, text), "unknown");
            }
        };
        let key = match self.front.admitted(&name, packument_key(&name), private) {
            Ok(key) => key,
            Err(refused) => return *refused,
        };
        let mut answer = self.front.through_cache(&key).await;
        if answer.response.status().is_success() {
            let empty = Response::new(crate::message::empty());
            let response = std::mem::replace(&mut answer.response, empty);
            let mirror = answer.mirror.clone();
            let abbreviated = packument::wants_abbreviated(accept);
            answer.response = self
                .rewritten(&name, response, mirror.as_deref(), (base, abbreviated))
                .await;
        }
        answer
    }

    /// `name`'s packument as the mirror (`mirror`) served it, its
    /// tarballs at `base`, abbreviated when asked.
    async fn rewritten(
        &self,
        name: &str,
        response: Response<Body>,
        mirror: Option<&str>,
        (base, abbreviated): (&str, bool),
    ) -> Response<Body> {
        let bad = |e: String| {
            let text = format!("modgate: the mirror's packument of {name}: {e}\n");
            plain_text(StatusCode::BAD_GATEWAY, text)
        };
        let document = match read_document(response.into_body()).await {
            Ok(text) => text,
            Err(e) => return bad(e),
        };
        let doc: serde_json::Value = match serde_json::from_str(&document) {
            Ok(doc) => doc,
            Err(e) => return bad(format!("not JSON: {e}")),
        };
        if let Some(mirror) = mirror {
            self.front
                .mirrors
                .remember(mirror, packument::locations(&doc));
        }
        let served = packument::served(doc, name, base, abbreviated);
        let content_type = if abbreviated {
            packument::ABBREVIATED
        } else {
            "application/json"
        };
        let mut response = Response::new(text(served.to_string()));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}

/// The answer for a private name: never asked of a mirror.
fn private(name: &str, rule: &str) -> Response<Body> {
    let how = match name.split_once('/') {
        Some((scope, _)) => format!("npm config set {scope}:registry https://<internal registry>/"),
        None => format!("npm install --registry https://<internal registry>/ {name}"),
    };
    plain_text(
        StatusCode::FORBIDDEN,
        format!(
            "modgate: {name} matches npm.private {rule:?}: it is never asked of a public mirror. \
             Install it from your internal registry ({how})\n"
        ),
    )
}
