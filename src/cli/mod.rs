//! The binary's subcommands that are more than a call into the library.

pub mod bucket;
pub mod ca;
pub mod cache;
pub mod doctor;
pub mod env;
pub mod logging;
pub mod pid;
pub mod reload;
