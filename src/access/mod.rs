//! The access log: one line for every request, module request and tunnel,
//! written on the `access` tracing target (so `log.format` shapes it, and
//! `log.access_log` sends it to a file of its own, see [`file`]). The same
//! record feeds the per-request metrics: one place for both.

pub mod file;

use std::net::SocketAddr;
use std::time::Duration;

use crate::stats::Stats;

/// An authenticated proxy user's name (never the password), carried in
/// the request's extensions for the access log.
#[derive(Clone, Debug)]
pub struct User(pub std::sync::Arc<str>);

/// The tracing target access lines are written on.
pub const TARGET: &str = "access";

/// What a line is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A request on the explicit or transparent HTTP listener (forwarded,
    /// refused, the PAC file).
    Request,
    /// A module or checksum database request (intercepted or the GOPROXY endpoint).
    Module,
    /// A CONNECT or redirected TLS connection: a byte tunnel or an
    /// intercepted connection.
    Tunnel,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Module => "module",
            Kind::Tunnel => "tunnel",
        }
    }
}

/// One line of the access log. Targets are masked (no `user:pass@`) by
/// whoever builds the record; the user is a name, never a password.
#[derive(Clone, Debug)]
pub struct Record<'a> {
    pub kind: Kind,
    pub client: SocketAddr,
    /// The proxy user, when `proxy.auth_file` authenticated one.
    pub user: Option<&'a str>,
    pub method: &'a str,
    pub target: &'a str,
    /// A redirected connection's original destination.
    pub original: Option<SocketAddr>,
    /// `direct`, `parent`, `intercept`, `deny`, `endpoint`, `pac`, … or `-`
    /// when the request never got that far.
    pub decision: &'static str,
    /// The rule behind the decision, or the module plan.
    pub rule: &'a str,
    /// The mirror that sent a module file.
    pub mirror: Option<&'a str>,
    /// How the cache served a module file.
    pub cache: Option<&'static str>,
    /// The answer's status (a tunnel: 200 once established).
    pub status: u16,
    /// Bytes from the client (request bodies, tunnel payload).
    pub bytes_up: u64,
    /// Bytes to the client (response bodies, tunnel payload).
    pub bytes_down: u64,
    pub duration: Duration,
    /// The side that failed (`client`, `origin`, `parent`, `modgate`), or `-`.
    pub side: &'a str,
    /// How it ended, or why it failed.
    pub end: &'a str,
}

/// Writes `record`'s line and counts it.
pub fn log(stats: &Stats, record: &Record<'_>) {
    stats.served(record);
    let original = record.original.map(|a| a.to_string());
    tracing::info!(
        target: "access",
        client = %record.client,
        user = record.user.unwrap_or("-"),
        method = record.method,
        target = record.target,
        original = original.as_deref().unwrap_or("-"),
        decision = record.decision,
        rule = record.rule,
        mirror = record.mirror.unwrap_or("-"),
        cache = record.cache.unwrap_or("-"),
        status = record.status,
        bytes_up = record.bytes_up,
        bytes_down = record.bytes_down,
        duration_ms = u64::try_from(record.duration.as_millis()).unwrap_or(u64::MAX),
        side = record.side,
        end = record.end,
        "{}",
        record.kind.name()
    );
}

/// A package request (an intercepted or endpoint one, of any ecosystem),
/// logged once its answer is sent.
pub struct Line {
    pub client: SocketAddr,
    pub user: Option<std::sync::Arc<str>>,
    pub method: http::Method,
    pub target: String,
    /// `intercept` or `endpoint`.
    pub entry: &'static str,
    /// What was done with it (`proxy_mirrors`, `private`, …).
    pub plan: &'static str,
    pub cache: Option<&'static str>,
    pub mirror: Option<std::sync::Arc<str>>,
    pub status: u16,
    pub started: std::time::Instant,
}

impl Line {
    /// The line of `req` from `client` (for `target`, come by `entry`,
    /// begun at `started`), what became of it still to be said.
    pub fn new<B>(
        client: SocketAddr,
        req: &http::Request<B>,
        target: String,
        entry: &'static str,
        started: std::time::Instant,
    ) -> Line {
        Line {
            client,
            user: req.extensions().get::<User>().map(|u| u.0.clone()),
            method: req.method().clone(),
            target,
            entry,
            plan: "",
            cache: None,
            mirror: None,
            status: 0,
            started,
        }
    }

    /// `response`, this line logged once its body is sent.
    pub fn on_sent(
        mut self,
        stats: std::sync::Arc<Stats>,
        response: http::Response<crate::message::Body>,
    ) -> http::Response<crate::message::Body> {
        use http_body_util::BodyExt;
        self.status = response.status().as_u16();
        response.map(move |body| {
            let log = move |bytes: u64| self.log(&stats, bytes);
            crate::message::Metered::new(body, Default::default(), Some(Box::new(log))).boxed()
        })
    }

    pub fn log(&self, stats: &Stats, bytes_down: u64) {
        let record = Record {
            kind: Kind::Module,
            client: self.client,
            user: self.user.as_deref(),
            method: self.method.as_str(),
            target: &self.target,
            original: None,
            decision: self.entry,
            rule: self.plan,
            mirror: self.mirror.as_deref(),
            cache: self.cache,
            status: self.status,
            bytes_up: 0,
            bytes_down,
            duration: self.started.elapsed(),
            side: if self.status == 502 { "mirror" } else { "-" },
            end: "sent",
        };
        log(stats, &record);
    }
}
