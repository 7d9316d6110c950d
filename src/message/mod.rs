//! HTTP messages as modgate relays them: the body type, modgate's own short
//! text answers, byte metering, and hop-by-hop header handling. Used by
//! `proxy/`, `gomod/` and `upstream/`; imports none of them.

pub mod body;
pub mod headers;

pub use body::{
    Body, BoxError, ClientBodyError, Metered, Paced, channel, empty, plain_text, text, whole,
};

/// An error and its causes on one line, `: `-separated; a cause the text
/// before it already spells out (typed errors often embed their source) is
/// left out, so no cause is said twice.
pub fn causes(chain: impl IntoIterator<Item = String>) -> String {
    let mut line = String::new();
    for text in chain {
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// [`causes`] of a standard error and its sources.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut chain = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        chain.push(cause.to_string());
        source = cause.source();
    }
    causes(chain)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_is_said_once() {
        let chain = [
            "client error (Connect)",
            "cannot connect to mirror a: refused",
            "refused",
        ];
        assert_eq!(
            super::causes(chain.map(String::from)),
            "client error (Connect): cannot connect to mirror a: refused"
        );
    }
}
