//! Go module interception: request classification and module-path decoding
//! (pure), mirror health, and the handler that
//! serves intercepted requests from mirrors.

mod handler;
mod mirrors;
pub mod path;

pub use handler::{Gomod, GomodError};
pub use mirrors::MirrorSet;
