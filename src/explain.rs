//! `modgate explain`: the routing decision for a URL or host, in words.
//! It calls the same [`route`] over the same policy, and the same gomod
//! [`plan`], as a running modgate, so the two cannot disagree.

use std::net::IpAddr;

use crate::config::Config;
use crate::gomod::path::{Own, Plan, plan};
use crate::gomod::tree::GoUpstream;
use std::sync::Arc;

use crate::rules::{Action, Kind, Target, mask_userinfo, route};
use crate::server::{configured_listeners, egress, policy};
use crate::upstream::pac::Pac;

#[derive(Debug, thiserror::Error)]
#[error("cannot understand {input:?}: {reason}")]
pub struct ExplainError {
    input: String,
    reason: String,
}

/// Explains what modgate would do with `input` (`http://…`, `https://…` or
/// `host[:port]`, which means a CONNECT, port 443 by default) from `client`.
pub fn explain(config: &Config, input: &str, client: IpAddr) -> Result<String, ExplainError> {
    let (kind, target, path) = parse(input).map_err(|reason| ExplainError {
        input: mask_userinfo(input).into_owned(),
        reason,
    })?;
    let listeners = configured_listeners(config);
    let intercept = config.intercept.enabled.then_some(());
    let mut policy = policy(config, egress(config, &listeners), intercept);
    let pac = config
        .upstream
        .pac
        .as_ref()
        .map(|source| ask_pac(source, input, &target));
    if let Some((pac, _)) = &pac {
        policy.via.pac = Some(pac.clone());
    }
    let decision = route(&policy, client, &target, kind);
    let how = match kind {
        Kind::Connect => "CONNECT tunnel",
        Kind::Http => "forwarded http:// request",
        Kind::TransparentTls => "redirected TLS connection",
    };
    let mut out = format!(
        "target:   {target} ({how})\nclient:   {client}\ndecision: {}\nrule:     {}\n",
        decision.action, decision.rule
    );
    if let Some((_, said)) = pac {
        out.push_str(&format!("pac:      {said}\n"));
    }
    if decision.action == Action::Intercept(()) {
        out.push_str(&explain_gomod(config, &target, path));
    }
    Ok(out)
}

/// The office PAC file at `source`, fetched and asked about `input` now,
/// and what it said (or why it said nothing: `upstream.proxy` decides).
fn ask_pac(source: &str, input: &str, target: &Target) -> (Arc<Pac>, String) {
    let pac = Pac::new(source.to_string());
    let host = target.host.to_string();
    let url = if input.contains("://") {
        input.to_string()
    } else {
        format!("https://{host}/")
    };
    let asked = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            runtime.block_on(async {
                let script = crate::upstream::pac::fetch(source).await?;
                pac.load(script);
                pac.prepare(&url, &host).await;
                pac.ask(&url, &host)
            })
        });
    let said = match asked {
        Ok(text) => format!("{source} returned {text:?}"),
        Err(why) => format!("{source} failed ({why}): upstream.proxy decides"),
    };
    (pac, said)
}

/// For an intercepted URL: private, answered here, or which mirrors are tried.
fn explain_gomod(config: &Config, target: &Target, path: &str) -> String {
    let gomod = &config.gomod;
    let host = target.host.to_string();
    let plan = plan(&host, path, &gomod.sumdb_hosts, &gomod.private);
    let name = plan.name();
    let what = match &plan {
        Plan::Own(own @ Own::Private { module, pattern }) => format!(
            "module:   {module} is private (gomod.private {pattern:?}): never sent to a mirror\nanswer:   {} from modgate",
            own.answer().0.as_u16()
        ),
        Plan::Own(own) => {
            let (status, text) = own.answer();
            let text = text.trim_end().trim_start_matches("modgate: ");
            let text = if text.is_empty() {
                "sumdb supported"
            } else {
                text
            };
            format!("answer:   {} from modgate ({text})", status.as_u16())
        }
        Plan::Fetch(key) if GoUpstream::of(&key.upstream) == GoUpstream::Proxy => {
            mirrors(&gomod.mirrors)
        }
        Plan::Fetch(_) => mirrors(&gomod.sumdb_mirrors),
    };
    format!("plan:     {name}\n{what}\n")
}

fn mirrors(list: &[String]) -> String {
    format!(
        "mirrors:  {} (healthy first, in this order)",
        list.join(", ")
    )
}

fn parse(input: &str) -> Result<(Kind, Target, &str), String> {
    let (kind, rest, default_port) = if let Some(rest) = input.strip_prefix("http://") {
        (Kind::Http, rest, 80)
    } else if let Some(rest) = input.strip_prefix("https://") {
        (Kind::Connect, rest, 443)
    } else if input.contains("://") {
        return Err("only http:// and https:// URLs".into());
    } else {
        (Kind::Connect, input, 443)
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let path = match &rest[authority.len()..] {
        "" => "/",
        path => path,
    };
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let target = Target::parse(authority, Some(default_port)).map_err(|e| e.to_string())?;
    Ok((kind, target, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_no_proxy_and_parent() {
        let config = Config::parse(
            "t.toml",
            "[upstream]\nproxy = \"http://u:p@parent:8080\"\nno_proxy = \".corp.example\"\n",
        )
        .unwrap();
        let client = "127.0.0.1".parse().unwrap();
        let out = explain(&config, "https://git.corp.example/x", client).unwrap();
        assert!(out.contains("decision: direct"), "{out}");
        assert!(out.contains("\".corp.example\""), "{out}");
        let out = explain(&config, "http://example.org/", client).unwrap();
        assert!(out.contains("decision: parent"), "{out}");
        assert!(!out.contains("u:p"), "credentials must not be shown: {out}");
        assert!(
            out.contains("http://parent:8080 (login as u, by what it offers)"),
            "the parent and the login are named: {out}"
        );
        let out = explain(&config, "example.org:22", client).unwrap();
        assert!(out.contains("decision: deny"), "{out}");
    }

    #[test]
    fn explains_interception() {
        let config = Config::parse("t.toml", "[gomod]\nprivate = \"git.corp.example/*\"\nmirrors = [\"https://a.example\", \"origin\"]\n").unwrap();
        let client = "127.0.0.1".parse().unwrap();
        let out = explain(
            &config,
            "https://proxy.golang.org/github.com/x/y/@v/list",
            client,
        )
        .unwrap();
        assert!(out.contains("decision: intercept"), "{out}");
        assert!(out.contains("mirrors:  https://a.example, origin"), "{out}");
        let out = explain(
            &config,
            "https://proxy.golang.org/git.corp.example/team/m/@v/list",
            client,
        )
        .unwrap();
        assert!(out.contains("is private"), "{out}");
        let out = explain(
            &config,
            "https://sum.golang.org/lookup/git.corp.example/team/m@v1.0.0",
            client,
        )
        .unwrap();
        assert!(out.contains("is private"), "{out}");
    }
}
