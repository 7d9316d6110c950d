//! The way out through the parent proxies: pick the first that can be
//! reached (see [`super::parents`]), log in to it as it asks (see
//! [`super::login`]), then CONNECT, or hand the logged-in connection to the
//! forwarding pool. A parent that cannot be reached is skipped and the next
//! tried within the same request; a parent that answers, even to refuse,
//! has spoken for all of them.

use bytes::Bytes;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::Stream;
use super::dial::{DialError, Dialer, Failure, Side, failed};
use crate::config::{ParentProxy, Scheme};
use crate::rules::{Exemption, Target};

/// A request's head for the parent, given the login's `Proxy-Authorization`.
type Head<'a> = dyn Fn(Option<&str>) -> Vec<u8> + Sync + 'a;

impl Dialer {
    /// The first configured parent (every parent logs in alike).
    pub fn parent(&self) -> Option<&ParentProxy> {
        self.parents.first()
    }

    /// `upstream.pac`, when set.
    pub fn pac(&self) -> Option<std::sync::Arc<super::pac::Pac>> {
        self.pac.clone()
    }

    /// Each parent (`host:port`) and whether it is up, for `/metrics` and
    /// the status page.
    pub fn parent_health(&self) -> Vec<(String, bool)> {
        self.parents.health()
    }

    /// Connects to a parent proxy to forward a request for `target`
    /// (absolute-form), once `target` passes the parent screen. A
    /// connection that needs a login (NTLM, or a scheme not learned yet) is
    /// logged in first, with a request the parent answers itself.
    pub async fn parent_connection(&self, target: &Target) -> Result<Stream, DialError> {
        self.screen_for_parent(Side::Origin, target, Exemption::None)
            .await?;
        let login = self.login_per_connection();
        let head = |auth: Option<&str>| super::parent::login_head(target, auth);
        let head = login.then_some(&head as &Head<'_>);
        let (stream, _) = self.through_a_parent(target, head, false).await?;
        Ok(stream)
    }

    /// Opens a tunnel to `target` (on `side`) through a parent proxy, once
    /// `target` passes the parent screen (`exemption`: an admin-named
    /// mirror); returns the stream and any bytes the parent sent after its
    /// answer.
    pub async fn parent_tunnel(
        &self,
        side: Side,
        target: &Target,
        exemption: Exemption,
    ) -> Result<(Stream, Bytes), DialError> {
        self.screen_for_parent(side, target, exemption).await?;
        let head = |auth: Option<&str>| super::parent::connect_head(target, auth);
        self.through_a_parent(target, Some(&head), true).await
    }

    /// The parents to try for `target`, in order, each with its place in
    /// `upstream.proxy` (for its health) when it is one of those: the PAC
    /// file's, when it named some for this host, else `upstream.proxy`'s.
    fn candidates(&self, target: &Target) -> Vec<(Option<usize>, ParentProxy)> {
        let named = self
            .pac
            .as_ref()
            .and_then(|pac| pac.answer(&target.host.to_string()));
        let from_pac: Vec<(Option<usize>, ParentProxy)> = named
            .unwrap_or_default()
            .into_iter()
            .filter_map(|way| match way {
                super::pac::result::PacWay::Proxy { tls, host, port } => {
                    let host = Target::parse(&host, Some(port)).ok()?.host;
                    let login = self.login.clone();
                    let parent = ParentProxy {
                        tls,
                        host,
                        port,
                        login,
                    };
                    Some((None, parent))
                }
                super::pac::result::PacWay::Direct => None,
            })
            .collect();
        if !from_pac.is_empty() {
            return from_pac;
        }
        self.parents
            .order()
            .into_iter()
            .filter_map(|i| Some((Some(i), self.parents.get(i)?.clone())))
            .collect()
    }

    /// Connects to the parents for `for_target` in turn until one is
    /// reached, then sends `head` (a login, or a CONNECT when `tunnel`) on
    /// the connection.
    async fn through_a_parent(
        &self,
        for_target: &Target,
        head: Option<&Head<'_>>,
        tunnel: bool,
    ) -> Result<(Stream, Bytes), DialError> {
        let mut last = None;
        for (index, parent) in self.candidates(for_target) {
            let parent = &parent;
            let target = parent.target();
            let attempt = self.within_timeout(Side::Parent, &target, async {
                let tcp = self
                    .open(Side::Parent, &target, Exemption::AdminNamed)
                    .await?;
                let mut stream = self.secured(parent, tcp).await?;
                let leftover = match head {
                    Some(head) => self.login(&mut stream, parent, head, tunnel).await?,
                    None => Bytes::new(),
                };
                Ok((stream, leftover))
            });
            let reached = attempt.await;
            if let Some(index) = index {
                match &reached {
                    Err(e) if unreachable(&e.failure) => self.parents.failed(index),
                    _ => self.parents.answered(index),
                }
            }
            match reached {
                Err(e) if unreachable(&e.failure) => last = Some(e),
                done => return done,
            }
        }
        Err(last.unwrap_or_else(|| DialError {
            side: Side::Parent,
            target: "(none)".into(),
            failure: Failure::ParentProtocol("no parent proxy configured".into()),
        }))
    }

    /// `tcp` to `parent`, in TLS when it is an https:// parent (verified
    /// against the system's roots and `upstream.ca_file`).
    async fn secured(&self, parent: &ParentProxy, tcp: TcpStream) -> Result<Stream, DialError> {
        if !parent.tls {
            return Ok(Stream::Tcp(tcp));
        }
        let target = parent.target();
        let refused = |why: String| failed(Side::Parent, &target, Failure::ParentTls(why));
        let connector = self.parent_tls.as_ref().map_err(|e| refused(e.clone()))?;
        let name = match &parent.host {
            crate::rules::Host::Name(name) => ServerName::try_from(name.clone()),
            crate::rules::Host::Ip(ip) => Ok(ServerName::IpAddress((*ip).into())),
        }
        .map_err(|e| refused(e.to_string()))?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| refused(crate::message::error_chain(&e)))?;
        Ok(Stream::Tls(Box::new(tls)))
    }

    /// Whether a new forwarding connection must log in before use.
    fn login_per_connection(&self) -> bool {
        self.login.any()
            && (self.login.auth)
                .or(self.learned.get())
                .is_none_or(Scheme::per_connection)
    }

    /// The `Proxy-Authorization` every forwarded request carries: a Basic
    /// login's (configured, or offered by the parent). Until the parent
    /// has said what it offers, a connection is opened to learn it.
    pub async fn basic_authorization(&self, target: &Target) -> Option<http::HeaderValue> {
        let basic = self.basic.as_ref()?;
        let auth = self.login.auth;
        if auth.is_none() && self.learned.get().is_none() {
            let _ = self.parent_connection(target).await;
        }
        (auth.or(self.learned.get()) == Some(Scheme::Basic)).then(|| basic.clone())
    }

    /// Runs `head`'s login on `stream`; an answer other than 2xx to a
    /// CONNECT (`tunnel`) or 407 to a login request is the parent's refusal.
    async fn login(
        &self,
        stream: &mut Stream,
        parent: &ParentProxy,
        head: &Head<'_>,
        tunnel: bool,
    ) -> Result<Bytes, DialError> {
        let target = parent.target();
        let context = super::login::Context {
            learned: &self.learned,
            kerberos: &self.kerberos,
        };
        let reply = super::login::send(stream, parent, context, head, tunnel)
            .await
            .map_err(|failure| self.said(failed(Side::Parent, &target, failure)))?;
        let refused = if tunnel {
            !(200..300).contains(&reply.status)
        } else {
            reply.status == 407
        };
        if refused {
            return Err(failed(
                Side::Parent,
                &target,
                Failure::ParentStatus(reply.status),
            ));
        }
        Ok(reply.leftover)
    }

    /// A 407 to a forwarded request: the parent refused the credentials
    /// (logged once), or wants some and has none.
    pub fn refused_login(&self) -> DialError {
        let scheme = self.login.auth.or(self.learned.get());
        let failure = match scheme {
            Some(scheme) if self.login.can(scheme) => Failure::CredentialsRefused {
                user: self.login.who(Some(scheme)),
                scheme: scheme.name(),
            },
            _ => Failure::ParentStatus(407),
        };
        // A parent the PAC file named is not known here: the first
        // configured one, or none, is named.
        let target = self.parent().map_or_else(
            || "(the PAC file's parent)".into(),
            |p| p.target().to_string(),
        );
        self.said(DialError {
            side: Side::Parent,
            target,
            failure,
        })
    }

    /// A login that failed (refused credentials, a Kerberos ticket that
    /// cannot be had) is logged once: every client still gets the 502.
    fn said(&self, error: DialError) -> DialError {
        if matches!(
            error.failure,
            Failure::CredentialsRefused { .. } | Failure::ParentLogin(_)
        ) && !self
            .refusal_said
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::error!(error = %error, "parent proxy login failed; check the credentials (upstream.proxy, upstream.credentials_file, upstream.keytab)");
        }
        error
    }
}

/// A failure that says the parent could not be reached (the next one is
/// tried), rather than that it answered.
fn unreachable(failure: &Failure) -> bool {
    matches!(
        failure,
        Failure::Resolve(_)
            | Failure::Connect(_)
            | Failure::Timeout(_)
            | Failure::ParentProtocol(_)
    )
}
