//! HTTP messages as modgate relays them: the body type, modgate's own short
//! text answers, byte metering, and hop-by-hop header handling. Used by
//! `proxy/`, `gomod/` and `upstream/`; imports none of them.

pub mod body;
pub mod headers;

pub use body::{Body, BoxError, Metered, channel, empty, plain_text, text};
