//! Pure rule logic: the NO_PROXY matcher, request targets and the routing
//! decision. Nothing here does I/O.

pub mod decide;
pub mod no_proxy;
pub mod target;

pub use decide::{
    Action, Decision, DenyReason, InterceptRule, Kind, Policy, canonical_addr, decide,
    denied_address,
};
pub use no_proxy::NoProxy;
pub use target::{Host, Target, TargetError};
