//! Reload: a validated config swapped in without cutting anyone off.
//! Listeners the new config no longer names stop accepting, new ones are
//! bound first (a failure leaves everything as it was); the new state is
//! built whole, then swapped in one store, so a connection sees one config
//! from accept to close. Rules, mirrors, the CA and limits apply to new
//! connections; `[cache]` and `[log]` stay as started until a restart.

use std::net::SocketAddr;
use std::sync::Arc;

use super::{
    Bound, Listening, Running, StartError, State, bind_admin, bind_one, build, local, wanted,
};
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

/// What a reload binds before anything changes.
struct Opened {
    /// New listeners with their addresses.
    fresh: Vec<(Bound, SocketAddr)>,
    /// The admin listener, when `admin.listen` changed (`None` inside: off).
    admin: Option<Option<(Bound, SocketAddr)>>,
    /// Every listener the new config keeps or adds (never dialled).
    own: Vec<SocketAddr>,
}

impl Running {
    /// Swaps in `config` (already validated). On error nothing changed.
    pub fn reload(&self, config: &Config) -> Result<Reloaded, StartError> {
        let mut state = crate::cache::lock(&self.state);
        let ca_dir = &config.intercept.ca_dir;
        if *ca_dir != state.config.intercept.ca_dir && !crate::tls::ca::exists(ca_dir) {
            return Err(StartError::NewCa(ca_dir.clone()));
        }
        let opened = self.open(&state, config)?;
        let previous = self.current.load_full();
        let shared = build::generation(config, &opened.own, &self.process, Some(&previous))?;
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
        Ok(self.commit(&mut state, config, opened))
    }

    /// Binds the listeners `config` adds (and the admin listener, if it moved).
    fn open(&self, state: &State, config: &Config) -> Result<Opened, StartError> {
        let wanted = wanted(config);
        let listening = |entry: Entry, addr: SocketAddr| {
            state
                .listening
                .iter()
                .any(|l| l.entry == entry && l.configured == addr)
        };
        let mut fresh = Vec::new();
        for &(entry, addr, v6_only) in &wanted {
            if !listening(entry, addr) {
                let bound = bind_one(entry, addr, v6_only)?;
                let local = local(&bound)?;
                fresh.push((bound, local));
            }
        }
        let admin = if config.admin.listen == state.config.admin.listen {
            None
        } else {
            let bound = bind_admin(config.admin.listen)?;
            Some(bound.map(|b| local(&b).map(|a| (b, a))).transpose()?)
        };
        let admin_addr = match &admin {
            Some(moved) => moved.as_ref().map(|(_, addr)| *addr),
            None => state.admin.as_ref().map(|l| l.addr),
        };
        let kept = state.listening.iter().filter(|l| kept(&wanted, l));
        // The same list `start` builds: every listener, the admin's included.
        let own = kept
            .map(|l| l.addr)
            .chain(fresh.iter().map(|(_, addr)| *addr))
            .chain(admin_addr)
            .collect();
        Ok(Opened { fresh, admin, own })
    }

    /// Serves what `opened` bound, stops what `config` dropped.
    fn commit(&self, state: &mut State, config: &Config, opened: Opened) -> Reloaded {
        let mut reloaded = Reloaded {
            at_restart: at_restart(&state.config, config),
            ..Reloaded::default()
        };
        let wanted = wanted(config);
        let (keep, stop): (Vec<Listening>, Vec<Listening>) =
            state.listening.drain(..).partition(|l| kept(&wanted, l));
        for listening in stop {
            listening.stop.cancel();
            reloaded.stopped.push((listening.entry, listening.addr));
        }
        state.listening = keep;
        for (bound, addr) in opened.fresh {
            reloaded.bound.push((bound.entry, addr));
            state.listening.push(self.serve(bound, addr));
        }
        if let Some(admin) = opened.admin {
            if let Some(old) = state.admin.take() {
                old.stop.cancel();
            }
            state.admin = admin.map(|(bound, addr)| self.serve_admin(bound, addr));
            reloaded.admin = Some(state.admin.as_ref().map(|l| l.addr));
        }
        let now = state.listening.iter().map(|l| (l.entry, l.addr)).collect();
        self.listeners.store(Arc::new(now));
        state.config = config.clone();
        reloaded
    }
}

/// Whether `listening` is one of the `wanted` listeners.
fn kept(wanted: &[(Entry, SocketAddr, bool)], listening: &Listening) -> bool {
    wanted
        .iter()
        .any(|(entry, addr, _)| *entry == listening.entry && *addr == listening.configured)
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
