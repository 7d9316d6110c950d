//! What the PyPI and npm handlers share: their mirrors and checks wired
//! into the cache, the private-name guard, an answer served through the
//! cache, and each answer counted and logged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::ACCEPT;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{Index, Mirrors};
use crate::access;
use crate::cache::key::Key;
use crate::cache::{Cache, Checker, How, Miss, Outcome};
use crate::config::PackagesConfig;
use crate::message::{Body, plain_text};
use crate::mirrors::MirrorSet;
use crate::rules::Via;
use crate::stats::{PackageLabels, Stats};
use crate::tls::roots::{RootsError, client_config};
use crate::upstream::{Dialer, MirrorClient};
use std::future::Future;

/// The largest index document read whole.
const MAX_DOCUMENT: usize = 256 << 20;

/// Why an ecosystem's side of the gateway cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    #[error("a trusted CA file (upstream.ca_file or gomod.mirror_ca_file) {0}")]
    Roots(#[from] RootsError),
    #[error("cache.shared: {0}")]
    Shared(#[from] crate::cache::storage::StorageError),
}

/// One ecosystem's side of the gateway.
pub struct Front<I: Index> {
    pub ecosystem: &'static str,
    pub config: PackagesConfig,
    pub mirrors: Arc<Mirrors<I>>,
    pub cache: Cache,
    stats: Arc<Stats>,
}

/// An answer, and what the access log says of it.
pub struct Answer {
    pub response: Response<Body>,
    pub plan: &'static str,
    /// `None`: the cache was not asked.
    pub how: Option<How>,
    pub mirror: Option<Arc<str>>,
}

impl Answer {
    /// An answer modgate makes itself (`plan` says why).
    pub fn own(response: Response<Body>, plan: &'static str) -> Answer {
        Answer {
            response,
            plan,
            how: None,
            mirror: None,
        }
    }
}

/// What every ecosystem's side is built from.
pub struct Setup<'a> {
    /// Trusted beside the system's roots (`upstream.ca_file`, `gomod.mirror_ca_file`).
    pub ca_files: &'a [&'a std::path::Path],
    pub cache: &'a Cache,
    /// The gateway's way out to the mirrors.
    pub way_out: (Arc<Dialer>, Via),
    pub stats: Arc<Stats>,
    /// `gomod.mirror_timeout` and `gomod.demote_for`, which every
    /// ecosystem's mirrors follow.
    pub timeouts: (std::time::Duration, std::time::Duration),
}

impl<I: Index> Front<I> {
    /// `ecosystem`'s mirrors from `config` (read by `index`), through the
    /// gateway's way out, wired into the cache with `checker`.
    pub fn new(
        (ecosystem, index, checker): (&'static str, I, Arc<dyn Checker>),
        config: &PackagesConfig,
        setup: &Setup<'_>,
    ) -> Result<Self, FrontError> {
        let (timeout, demote_for) = setup.timeouts;
        let (dialer, via) = setup.way_out.clone();
        let tls = client_config(setup.ca_files)?;
        let client = MirrorClient::new(dialer, via, &config.mirrors, tls, timeout);
        let set = MirrorSet::new(&config.mirrors, demote_for);
        let stats = setup.stats.clone();
        let mirrors = Arc::new(Mirrors::new(index, set, client, stats.clone()));
        // Behind the shared tier's bucket too, when the fleet has one.
        let cache = setup.cache;
        let (source, _) = crate::ecosystems::source_for(cache.settings(), mirrors.clone(), &stats)?;
        cache.rewire(ecosystem, source, Some(checker));
        Ok(Front {
            ecosystem,
            config: config.clone(),
            mirrors,
            cache: cache.clone(),
            stats,
        })
    }

    /// Serves `req` (`path` within the ecosystem) from `client`, come by
    /// `entry`: GET and HEAD by `answer` (given the client's `Accept`),
    /// anything else refused; counted and logged once sent.
    pub async fn serve<Fut: Future<Output = Answer>>(
        &self,
        (client, entry): (SocketAddr, &'static str),
        path: &str,
        req: Request<Incoming>,
        answer: impl FnOnce(Option<String>) -> Fut,
    ) -> Response<Body> {
        let started = Instant::now();
        let answer = if req.method() == Method::GET || req.method() == Method::HEAD {
            let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
            answer(accept.map(String::from)).await
        } else {
            let text = "modgate: package requests through modgate are GET or HEAD (it publishes nothing)\n";
            Answer::own(plain_text(StatusCode::METHOD_NOT_ALLOWED, text), "refused")
        };
        self.finish((client, entry, started), &req, path, answer)
    }

    /// Whether `host` is one of this ecosystem's, which interception hands here.
    pub fn serves(&self, host: &str) -> bool {
        (self.config.hosts.iter()).any(|h| h.eq_ignore_ascii_case(host))
    }

    /// `key` of `name`, unless the name is private (`refuse` says so with
    /// the rule; never asked of a mirror) or names nothing modgate serves.
    pub fn admitted(
        &self,
        name: &str,
        key: Option<Key>,
        refuse: fn(&str, &str) -> Response<Body>,
    ) -> Result<Key, Box<Answer>> {
        if let Some(rule) = self.config.private.find(&name.to_lowercase()) {
            return Err(Box::new(Answer::own(refuse(name, rule), "private")));
        }
        key.ok_or_else(|| {
            let text = "modgate: not a package or a file its index lists\n";
            Box::new(Answer::own(
                plain_text(StatusCode::NOT_FOUND, text),
                "unknown",
            ))
        })
    }

    pub async fn through_cache(&self, key: &Key) -> Answer {
        let plan = "mirrors";
        match self.cache.get(key).await {
            Outcome::Served {
                response,
                how,
                mirror,
            } => Answer {
                response,
                plan,
                how: Some(how),
                mirror,
            },
            Outcome::Missed(miss, how) => Answer {
                how: Some(how),
                ..Answer::own(missed(&miss), plan)
            },
        }
    }

    /// `answer` to `req` (for `path`, come by `entry` from `client`,
    /// begun at `started`), counted and logged once sent.
    fn finish<B>(
        &self,
        (client, entry, started): (SocketAddr, &'static str, Instant),
        req: &Request<B>,
        path: &str,
        answer: Answer,
    ) -> Response<Body> {
        let labels = PackageLabels {
            ecosystem: self.ecosystem,
            cache: answer.how.map_or("none", How::name),
            status: answer.response.status().as_u16(),
        };
        self.stats.package_requests.get_or_create(&labels).inc();
        let target = format!("{}{path}", self.ecosystem);
        let line = access::Line {
            plan: answer.plan,
            cache: answer.how.map(How::name),
            mirror: answer.mirror,
            ..access::Line::new(client, req, target, entry, started)
        };
        line.on_sent(self.stats.clone(), answer.response)
    }
}

/// An index document's whole body, up to [`MAX_DOCUMENT`] bytes.
pub async fn read_document(body: Body) -> Result<String, String> {
    let bytes = crate::message::whole(body, MAX_DOCUMENT).await?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
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
