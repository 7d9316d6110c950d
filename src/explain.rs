//! `modgate explain`: the routing decision for a URL or host, in words.

use std::net::IpAddr;

use crate::config::Config;
use crate::rules::{Kind, Target, decide};
use crate::server::policy;

#[derive(Debug, thiserror::Error)]
#[error("cannot understand {input:?}: {reason}")]
pub struct ExplainError {
    input: String,
    reason: String,
}

/// Explains what modgate would do with `input` (`http://…`, `https://…` or
/// `host[:port]`, which means a CONNECT, port 443 by default) from `client`.
pub fn explain(config: &Config, input: &str, client: IpAddr) -> Result<String, ExplainError> {
    let (kind, target) = parse(input).map_err(|reason| ExplainError {
        input: input.to_string(),
        reason,
    })?;
    let decision = decide(&policy(config, &config.proxy.listen), client, &target, kind);
    let how = match kind {
        Kind::Connect => "CONNECT tunnel",
        Kind::Http => "forwarded http:// request",
    };
    Ok(format!(
        "target:   {target} ({how})\nclient:   {client}\ndecision: {}\nrule:     {}\n",
        decision.action, decision.rule
    ))
}

fn parse(input: &str) -> Result<(Kind, Target), String> {
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
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let target = Target::parse(authority, Some(default_port)).map_err(|e| e.to_string())?;
    Ok((kind, target))
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
        let out = explain(&config, "example.org:22", client).unwrap();
        assert!(out.contains("decision: deny"), "{out}");
    }
}
