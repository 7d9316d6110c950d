//! Reload: a validated config swapped in without cutting anyone off.
//! Listeners the new config no longer names stop accepting, new ones are
//! bound first (a failure leaves everything as it was); the new state is
//! built whole, then swapped in one store, so a connection sees one config
//! from accept to close. Rules, mirrors, the CA and limits apply to new
//! connections; `[cache]` and `[log]` stay as started until a restart.

use std::net::SocketAddr;
use std::sync::Arc;

use super::{Bound, Listening, Running, StartError, bind_one, build, local, wanted};
use crate::config::Config;
use crate::listener::Entry;

/// What a reload changed.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Listeners bound for the new config.
    pub bound: Vec<(Entry, SocketAddr)>,
    /// Listeners the new config dropped (they stop accepting; their
    /// connections carry on).
    pub stopped: Vec<(Entry, SocketAddr)>,
    /// The admin listener's new address, when it moved.
    pub admin: Option<Option<SocketAddr>>,
    /// Config sections that changed but apply only at the next restart.
    pub at_restart: Vec<&'static str>,
}

impl Running {
    /// Swaps in `config` (already validated). On error nothing changed.
    pub fn reload(&self, config: &Config) -> Result<Reloaded, StartError> {
        let mut state = crate::cache::lock(&self.state);
        let wanted = wanted(config);
        let kept = |l: &Listening| {
            wanted
                .iter()
                .any(|(entry, addr, _)| *entry == l.entry && *addr == l.configured)
        };
        let fresh: Vec<Bound> = wanted
            .iter()
            .filter(|(entry, addr, _)| {
                !state
                    .listening
                    .iter()
                    .any(|l| l.entry == *entry && l.configured == *addr)
            })
            .map(|&(entry, addr, v6_only)| bind_one(entry, addr, v6_only))
            .collect::<Result<_, _>>()?;
        let fresh_addrs = fresh.iter().map(local).collect::<Result<Vec<_>, _>>()?;
        let admin_moved = config.admin.listen != state.config.admin.listen;
        let admin = if admin_moved {
            let bound = self.bind_admin(config.admin.listen)?;
            Some(bound.map(|b| local(&b).map(|a| (b, a))).transpose()?)
        } else {
            None
        };
        let own: Vec<SocketAddr> = state
            .listening
            .iter()
            .filter(|l| kept(l))
            .map(|l| l.addr)
            .chain(fresh_addrs.iter().copied())
            .collect();
        let previous = self.current.load_full();
        let shared = build::generation(config, &own, &self.process, Some(&previous))?;
        // Nothing below fails: the new config is in.
        self.current.store(Arc::new(shared));
        previous.retire.cancel();
        let view = build::admin(
            config,
            self.registry.clone(),
            &self.current,
            &self.listeners,
        );
        self.admin_view.store(Arc::new(view));
        let mut reloaded = Reloaded {
            at_restart: at_restart(&state.config, config),
            ..Reloaded::default()
        };
        let (keep, stop): (Vec<Listening>, Vec<Listening>) =
            state.listening.drain(..).partition(|l| kept(l));
        for listening in stop {
            listening.stop.cancel();
            reloaded.stopped.push((listening.entry, listening.addr));
        }
        state.listening = keep;
        for (bound, addr) in fresh.into_iter().zip(fresh_addrs) {
            reloaded.bound.push((bound.entry, addr));
            state.listening.push(self.serve(bound, addr));
        }
        if let Some(admin) = admin {
            if let Some(old) = state.admin.take() {
                old.stop.cancel();
            }
            state.admin = admin.map(|(bound, addr)| self.serve_admin(bound, addr));
            reloaded.admin = Some(state.admin.as_ref().map(|l| l.addr));
        }
        let now = state.listening.iter().map(|l| (l.entry, l.addr)).collect();
        self.listeners.store(Arc::new(now));
        state.config = config.clone();
        Ok(reloaded)
    }
}

/// The sections that changed between `old` and `new` but are only read at start.
fn at_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut sections = Vec::new();
    if build::cache_settings(old) != build::cache_settings(new) {
        sections.push("[cache]");
    }
    if old.log != new.log {
        sections.push("[log]");
    }
    sections
}
