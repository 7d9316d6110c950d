//! The office PAC file (`upstream.pac`): which parent (or DIRECT) each
//! destination takes, as browsers decide it. The file is fetched at start
//! (and on reload, which builds a new one) and again every
//! `upstream.pac_ttl`; `FindProxyForURL` runs off the async threads, once
//! per host for [`ANSWER_TTL`] (see [`engine`] for its limits). A PAC that
//! cannot be fetched, throws, loops or returns garbage leaves the decision
//! to `upstream.proxy` (or DIRECT without one), said once per PAC file.

pub mod engine;
pub mod result;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use result::PacWay;

/// How long one host's answer is used before `FindProxyForURL` runs again.
pub const ANSWER_TTL: Duration = Duration::from_secs(300);
/// Answers kept; beyond this the cache starts over.
const MAX_ANSWERS: usize = 10_000;
/// The largest PAC file read.
const MAX_SCRIPT: usize = 1 << 20;
/// Time allowed to fetch it.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One host's answer: the ways out, or none (fall back to the config).
type Answer = (Option<Vec<PacWay>>, Instant);

pub struct Pac {
    /// An http:// URL or an absolute file path.
    source: String,
    script: Mutex<Option<Arc<str>>>,
    answers: Mutex<HashMap<String, Answer>>,
    /// Whether this PAC file's failure was logged already.
    failure_said: AtomicBool,
}

impl std::fmt::Debug for Pac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pac({})", self.source)
    }
}

impl Pac {
    pub fn new(source: String) -> Arc<Pac> {
        Arc::new(Pac {
            source,
            script: Mutex::new(None),
            answers: Mutex::new(HashMap::new()),
            failure_said: AtomicBool::new(false),
        })
    }

    /// Fetches the PAC file now, then every `ttl` until `stop`.
    pub async fn keep_fresh(
        self: Arc<Self>,
        ttl: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            match fetch(&self.source).await {
                Ok(script) => self.load(script),
                Err(why) => {
                    tracing::warn!(pac = %self.source, %why, "upstream.pac: cannot fetch it; keeping what there was (upstream.proxy decides without one)")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(ttl) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    /// Uses `script` from now on (answers for the old one are dropped).
    pub fn load(&self, script: String) {
        let mut held = crate::cache::lock(&self.script);
        if held.as_deref() == Some(script.as_str()) {
            return;
        }
        tracing::info!(pac = %self.source, bytes = script.len(), "upstream.pac: loaded");
        *held = Some(Arc::from(script));
        crate::cache::lock(&self.answers).clear();
        self.failure_said.store(false, Ordering::Relaxed);
    }

    /// The ways out the PAC gives `host`, when it gave some lately; `None`:
    /// `upstream.proxy` decides.
    pub fn answer(&self, host: &str) -> Option<Vec<PacWay>> {
        let answers = crate::cache::lock(&self.answers);
        let (ways, at) = answers.get(host)?;
        (at.elapsed() < ANSWER_TTL).then(|| ways.clone()).flatten()
    }

    /// Runs `FindProxyForURL(url, host)` unless `host` has a fresh answer.
    pub async fn prepare(&self, url: &str, host: &str) {
        let fresh = crate::cache::lock(&self.answers)
            .get(host)
            .is_some_and(|(_, at)| at.elapsed() < ANSWER_TTL);
        let script = crate::cache::lock(&self.script).clone();
        let (true, Some(script)) = (!fresh, script) else {
            return;
        };
        let (url, owned_host) = (url.to_string(), host.to_string());
        let ran =
            tokio::task::spawn_blocking(move || engine::find_proxy(&script, &url, &owned_host))
                .await;
        let ways = match ran.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(text) => result::parse(&text).map_err(|e| format!("FindProxyForURL returned {e}")),
            Err(why) => Err(why),
        };
        let ways = ways
            .map_err(|why| {
                if !self.failure_said.swap(true, Ordering::Relaxed) {
                    tracing::warn!(pac = %self.source, %host, %why, "upstream.pac failed: upstream.proxy decides instead (said once per PAC file)");
                }
            })
            .ok();
        let mut answers = crate::cache::lock(&self.answers);
        if answers.len() >= MAX_ANSWERS {
            answers.clear();
        }
        answers.insert(host.to_string(), (ways, Instant::now()));
    }

    /// What the PAC says for `url` and `host` now (for `explain`).
    pub fn ask(&self, url: &str, host: &str) -> Result<String, String> {
        let script = crate::cache::lock(&self.script)
            .clone()
            .ok_or("the PAC file is not loaded")?;
        engine::find_proxy(&script, url, host)
    }
}

/// The PAC file at `source`: a file, or an http:// URL (fetched directly:
/// the WPAD server is the office's own).
pub async fn fetch(source: &str) -> Result<String, String> {
    let bytes = if source.starts_with("http://") {
        tokio::time::timeout(FETCH_TIMEOUT, get(source))
            .await
            .map_err(|_| format!("no answer within {FETCH_TIMEOUT:?}"))??
    } else {
        tokio::fs::read(source).await.map_err(|e| e.to_string())?
    };
    if bytes.len() > MAX_SCRIPT {
        return Err(format!("larger than {MAX_SCRIPT} bytes"));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".into())
}

async fn get(url: &str) -> Result<Vec<u8>, String> {
    use http_body_util::{BodyExt, Empty, Limited};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let uri: http::Uri = url.parse().map_err(|_| format!("bad URL {url}"))?;
    let response = client
        .get(uri)
        .await
        .map_err(|e| crate::message::error_chain(&e))?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_SCRIPT + 1);
    let collected = body.collect().await.map_err(|e| e.to_string())?;
    Ok(collected.to_bytes().to_vec())
}
