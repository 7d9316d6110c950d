//! Egress: DNS and TCP dialling with the destination checks, the parent
//! proxy handshake, and the pooled HTTP client used for forwarding.

mod client;
mod dial;
mod kerberos;
mod login;
mod mirror;
mod ntlm;
pub mod pac;
mod parent;
mod parents;
mod stream;
mod via_parent;

pub use client::{Connector, HttpClient, new_client};
pub use dial::{DialError, Dialer, Failure, Side, parent_status};
pub use mirror::{MirrorClient, MirrorError};
pub use stream::Stream;
