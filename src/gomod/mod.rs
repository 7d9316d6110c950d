//! Go module interception: request classification and module-path decoding
//! (pure), GOPRIVATE patterns (pure), mirror health, and the handler that
//! serves intercepted requests from mirrors.

mod handler;
mod mirrors;
pub mod path;
mod private;

pub use handler::{Gomod, GomodError};
pub use mirrors::MirrorSet;
pub use private::{PatternError, Private};
