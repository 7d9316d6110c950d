//! Python packages through the gateway: a project's index page from the
//! healthiest PyPI mirror, its file links rewritten to come back through
//! modgate, each file checked against the sha256 its page gave before it
//! is stored or its last bytes are released, all kept in the cache.

mod check;
mod handler;

pub use handler::Pypi;
pub mod page;
mod source;
pub mod tree;
