//! Go module interception: request classification and module-path decoding
//! (pure), `h1:` hashes (pure), mirror health and failover, and the handler
//! that serves intercepted requests through the cache or from mirrors.

pub mod audit;
pub mod check;
pub mod dirhash;
mod fetch;
mod handler;
mod mirrors;
pub mod path;
mod shared_head;
pub mod tree;
pub mod verify;
pub mod warm;
pub mod zipstream;

pub use handler::{Gomod, GomodError, Probe};
pub use mirrors::{Health, MirrorSet, READY_FAILURES, READY_WINDOW};
