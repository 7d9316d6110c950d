//! Pure rule logic: the NO_PROXY and GOPRIVATE matchers, request targets,
//! port ranges, the egress check and the routing decision. Nothing here
//! does I/O.

pub mod egress;
pub mod no_proxy;
pub mod pac;
pub mod ports;
pub mod private;
pub mod route;
pub mod target;

pub use egress::{Egress, Exemption, canonical_addr, canonical_ip};
pub use no_proxy::{NoProxy, Rule as NoProxyRule};
pub use ports::PortRange;
pub use private::{PatternError, Private};
pub use route::{Action, Decision, DenyReason, Intercept, Kind, Policy, Via, Way, route};
pub use target::{Host, Target, TargetError, mask_userinfo};
