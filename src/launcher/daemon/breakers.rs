//! The probes of open circuit breakers: once an open breaker's pause is over, its pool's CPI is asked
//! `info` on a worker thread; a pool that answers gets its stemcell (when it has none) and is half-open.
use super::state::{Daemon, DaemonError, Msg};
use crate::launcher::clock::now;
use crate::launcher::config::PoolId;
use crate::launcher::log;
use serde_json::json;
use std::time::Instant;

impl Daemon {
    /// Starts the `info` probe of every open breaker whose pause is over.
    pub(super) fn start_probes(&mut self) {
        for id in self.pools.ids().collect::<Vec<_>>() {
            let p = &mut self.pools[id];
            if !p.breaker.probe_due(Instant::now()) {
                continue;
            }
            p.breaker.probe_started();
            log::info(&format!("pool={} breaker probe: info", p.name()));
            let (caller, tx) = (self.caller(id), self.tx.clone());
            std::thread::spawn(move || {
                let res = caller
                    .call(&format!("probe-{}-{}.info", id.0, now()), "info", json!([]))
                    .map(|_| ())
                    .map_err(|e| format!("info: {}", log::chain(&e)));
                let _ = tx.send(Msg::Probed { pool: id, res });
            });
        }
    }

    /// A probe's outcome; a pool that answers but has no stemcell yet gets it now (this waits for the upload).
    pub(super) fn probed(&mut self, id: PoolId, mut res: Result<(), String>) -> Result<(), DaemonError> {
        if res.is_ok() && self.pools[id].stemcell.cid.is_empty() {
            match self.ensure_stemcell(id) {
                Ok(cid) if !cid.is_empty() => {}
                Ok(_) => res = Err("no stemcell".into()),
                Err(DaemonError::Ledger(e)) => return Err(DaemonError::Ledger(e)),
                Err(e) => res = Err(format!("no stemcell: {}", log::chain(&e))),
            }
        }
        let p = &mut self.pools[id];
        p.breaker.probe_done(Instant::now(), res);
        p.breaker_changed(&self.shared);
        Ok(())
    }
}
