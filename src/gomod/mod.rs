//! Go module interception: request classification and module-path decoding
//! (pure), `h1:` hashes (pure), failover across the mirrors, and the handler
//! that serves intercepted requests through the cache or from mirrors.

pub mod audit;
pub mod check;
pub mod dirhash;
mod fetch;
mod handler;
pub mod path;
mod shared_head;
pub mod tree;
pub mod verify;
pub mod warm;
pub mod zipstream;

pub use handler::{Gomod, GomodError, Probe};
