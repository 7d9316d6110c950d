//! SIGHUP in `run`: read the config again the way `run` read it, refuse it
//! whole when invalid (every error logged, the old config keeps serving),
//! else swap it in; counted in `modgate_reloads_total` and shown on the
//! status page either way.

use modgate::config::{Config, LoadError};
use modgate::server::Running;

use crate::Source;

pub fn reload(running: &Running, source: &Source) {
    tracing::info!("SIGHUP: reloading the config");
    // An editor in the middle of saving leaves an empty file, which would
    // read as every default (127.0.0.1:3128, the public mirrors).
    if let Some(path) = Config::chosen(source.path.as_deref())
        && std::fs::read_to_string(&path).is_ok_and(|text| text.trim().is_empty())
    {
        tracing::error!(file = %path.display(), "reload refused: the config file is empty; the old config keeps serving");
        running
            .stats
            .reloaded("invalid", "refused: the config file is empty".into());
        return;
    }
    let config = match source.load() {
        Ok(config) => config,
        Err(err) => return refused(running, &err),
    };
    match running.reload(&config) {
        Ok(done) => {
            for (entry, addr) in &done.bound {
                tracing::info!(%addr, "modgate listening ({})", entry.serves());
            }
            for (entry, addr) in &done.stopped {
                tracing::info!(%addr, "stopped listening ({}); its connections carry on", entry.serves());
            }
            if let Some(admin) = done.admin {
                tracing::info!(addr = ?admin, "admin listener moved");
            }
            if !done.at_restart.is_empty() {
                tracing::warn!(sections = ?done.at_restart, "changed, but applied only at the next restart");
            }
            tracing::info!("config reloaded: new connections use it; open ones carry on");
            running.stats.reloaded("ok", "config reloaded".into());
        }
        Err(err) => {
            tracing::error!("reload failed, the old config keeps serving: {err}");
            running.stats.reloaded("failed", format!("failed: {err}"));
        }
    }
}

fn refused(running: &Running, err: &LoadError) {
    let count = match err {
        LoadError::Invalid(errors) => {
            for error in errors {
                tracing::error!("reload: {error}");
            }
            errors.len()
        }
        other => {
            tracing::error!("reload: {other}");
            1
        }
    };
    tracing::error!("reload refused: {count} error(s); the old config keeps serving");
    running.stats.reloaded(
        "invalid",
        format!("refused: {count} error(s) in the config"),
    );
}
