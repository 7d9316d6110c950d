//! modgate: a forward HTTP/HTTPS proxy for networks where the internet is
//! slow, filtered or behind a parent proxy.
//!
//! A request flows: [`listener`] → [`proxy`] (CONNECT | absolute-form) →
//! [`rules::decide`] → tunnel | forward, dialled by [`upstream`].

pub mod access;
pub mod admin;
pub mod cache;
pub mod config;
pub mod ecosystems;
pub mod explain;
pub mod gomod;
pub mod indexed;
pub mod limits;
pub mod listener;
pub mod message;
pub mod mirrors;
pub mod npm;
pub mod percent;
pub mod proxy;
pub mod pypi;
pub mod rules;
pub mod server;
pub mod sha256;
pub mod stats;
pub mod sumdb;
pub mod sys;
pub mod tls;
pub mod upstream;
