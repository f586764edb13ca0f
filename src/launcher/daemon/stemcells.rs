//! Each pool's stemcell: configured, remembered in the ledger, or uploaded once with create_stemcell
//! (announced in the ledger first, so that a restart settles an interrupted upload instead of making a
//! second stemcell); and its API version for create_vm.
use super::state::{Daemon, DaemonError};
use crate::launcher::clock::now;
use crate::launcher::config::{self, PoolId};
use crate::launcher::cpi::CpiError;
use crate::launcher::ledger::Event;
use crate::launcher::log;
use crate::launcher::power::Power;
use crate::launcher::stemcell;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// A pool's stemcell API version: configured, else its tarball's (`api_version` of its `stemcell.MF`), else 3.
pub fn stemcell_api_version(pool: &config::Pool, from_tarball: Option<u32>) -> u32 {
    pool.stemcell.api_version.or(from_tarball).unwrap_or(3)
}

/// Removes what a previous run left in the spool: files, and the directories of extracted stemcells.
pub(super) fn sweep_spool(spool: &Path, dirs_only: bool) {
    for e in std::fs::read_dir(spool).into_iter().flatten().flatten() {
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let _ = if is_dir {
            std::fs::remove_dir_all(e.path())
        } else if !dirs_only {
            std::fs::remove_file(e.path())
        } else {
            Ok(())
        };
    }
}

/// The `api_version` of a pool's tarball when the config does not set one: its `stemcell.MF` is read up to
/// that member (a manifest that does not read counts as none, and the version is then 3).
fn tarball_api_version(pool: &config::Pool) -> Option<u32> {
    let t = pool.stemcell.tarball.as_ref().filter(|_| pool.stemcell.api_version.is_none())?;
    stemcell::read_manifest(t)
        .inspect_err(|e| log::warn(&format!("pool={} {}; api_version 3", pool.name, log::chain(e))))
        .ok()
        .flatten()
        .and_then(|m| m.api_version)
}

impl Daemon {
    /// Every pool's stemcell at start. A pool whose stemcell cannot be had (its host is down, its CPI
    /// missing) does not stop the launcher: it has none and its breaker starts open, so it is probed and its
    /// stemcell uploaded again later. A sleeping host's stemcell is uploaded when it is woken.
    pub(super) fn ensure_stemcells(&mut self) -> Result<(), DaemonError> {
        for id in self.pools.ids().collect::<Vec<_>>() {
            if self.pools[id].host.power == Power::Off {
                continue;
            }
            match self.ensure_stemcell(id) {
                Ok(_) => {}
                Err(DaemonError::Ledger(e)) => return Err(DaemonError::Ledger(e)),
                Err(e) => {
                    let reason = log::chain(&e);
                    let p = &mut self.pools[id];
                    log::error(&format!(
                        "pool={} has no stemcell: {reason}; its breaker opens and it is retried",
                        p.name()
                    ));
                    p.open_breaker(&format!("no stemcell: {reason}"), &self.shared);
                }
            }
        }
        Ok(())
    }

    /// The stemcell CID of pool `id` (configured, remembered in the ledger, or uploaded now), also kept in
    /// its record with its API version.
    pub(super) fn ensure_stemcell(&mut self, id: PoolId) -> Result<String, DaemonError> {
        let p = self.pools[id].conf.clone();
        let (cid, api) = match (&p.stemcell.cid, p.stemcell.image.as_ref().or(p.stemcell.tarball.as_ref())) {
            (Some(cid), _) => (cid.clone(), None),
            // validation makes this unreachable; the pool keeps no stemcell
            (None, None) => return Ok(String::new()),
            (None, Some(image)) => self.stemcell_of_image(id, &p, image)?,
        };
        let rec = &mut self.pools[id].stemcell;
        rec.cid = cid.clone();
        rec.api_version = stemcell_api_version(&p, api);
        Ok(cid)
    }

    /// The CID of a pool's stemcell image or tarball, with the tarball's API version.
    fn stemcell_of_image(
        &mut self,
        id: PoolId,
        p: &config::Pool,
        image: &Path,
    ) -> Result<(String, Option<u32>), DaemonError> {
        let meta = std::fs::metadata(image).map_err(|e| DaemonError::StemcellImage(image.display().to_string(), e))?;
        let mtime =
            meta.modified().ok().and_then(|m| m.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs()).unwrap_or(0);
        let key = format!("{}|{}|{}|{}", image.display(), meta.len(), mtime, p.cpi.join(" "));
        // a create_stemcell that a previous run started is settled first: never a second upload
        if let Some(cid) = self.settle_stemcell_attempt(id, &key)? {
            return Ok((cid, tarball_api_version(p)));
        }
        if let Some((k, cid)) = self.ledger.state.stemcells.get(&p.name) {
            if *k == key {
                return Ok((cid.clone(), tarball_api_version(p)));
            }
        }
        self.upload_stemcell(id, p, image, key)
    }

    /// create_stemcell of an image, or of a tarball unpacked like the director does (its `image` plus the
    /// manifest's cloud_properties), announced in the ledger first.
    fn upload_stemcell(
        &mut self,
        id: PoolId,
        p: &config::Pool,
        image: &Path,
        key: String,
    ) -> Result<(String, Option<u32>), DaemonError> {
        // images extracted by interrupted runs (settled before) are of no use now
        sweep_spool(&self.ledger.spool_dir(), true);
        log::info(&format!("pool={} create_stemcell from {}", p.name, image.display()));
        let extracted = match &p.stemcell.tarball {
            Some(t) => Some(
                stemcell::extract(t, &self.ledger.spool_dir(), &p.stemcell.cloud_properties)
                    .map_err(|source| DaemonError::Tarball { pool: p.name.clone(), source })?,
            ),
            None => None,
        };
        let (path, props) = match &extracted {
            Some(e) => (e.image.clone(), e.cloud_properties.clone()),
            None => (image.to_path_buf(), p.stemcell.cloud_properties.clone()),
        };
        let api = extracted.as_ref().and_then(|e| e.api_version);
        let tag = format!("stemcell-{}-{}", p.name, now());
        self.ledger.append(Event::StemcellAttempt { pool: p.name.clone(), key: key.clone(), tag: tag.clone() })?;
        let res = self.caller(id).call(&tag, "create_stemcell", json!([path, props]));
        drop(extracted);
        let cid = res.map_err(|source| DaemonError::Stemcell { pool: p.name.clone(), source })?;
        let Some(cid) = cid.as_str().filter(|c| !c.is_empty()).map(String::from) else {
            let source = CpiError::NoResponse {
                method: "create_stemcell".into(),
                status: "no stemcell CID in the result".into(),
                output: cid.to_string(),
            };
            return Err(DaemonError::Stemcell { pool: p.name.clone(), source });
        };
        self.ledger.append(Event::Stemcell { pool: p.name.clone(), key, cid: cid.clone() })?;
        log::info(&format!("pool={} stemcell={cid}", p.name));
        Ok((cid, api))
    }

    /// Settles a create_stemcell of pool `id` that a previous run started and did not see finish: waits while
    /// it runs, then takes its CID when it is for the current image (`key`), or deletes the stemcell when the
    /// image has changed since. `None` when there was no such call or it made no stemcell.
    fn settle_stemcell_attempt(&mut self, id: PoolId, key: &str) -> Result<Option<String>, DaemonError> {
        let p = self.pools[id].conf.clone();
        let Some((k, tag)) = self.ledger.state.stemcell_attempts.get(&p.name).cloned() else {
            return Ok(None);
        };
        let files = self.pools[id].cpi.spool_files(&tag);
        if !files.exists() {
            return Ok(None);
        }
        let t = Instant::now();
        if files.running() {
            log::info(&format!("pool={} waiting for the create_stemcell of a previous run to finish", p.name));
        }
        while files.running() && t.elapsed() < Duration::from_secs(p.cpi_timeout_seconds) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let cid = match files.outcome("create_stemcell", "recovered") {
            Ok(v) => v.as_str().filter(|c| !c.is_empty()).map(String::from),
            Err(e) => {
                log::warn(&format!("pool={} interrupted create_stemcell made no stemcell: {}", p.name, log::chain(&e)));
                None
            }
        };
        files.remove();
        let Some(cid) = cid else { return Ok(None) };
        if k == key {
            log::info(&format!("pool={} stemcell={cid} recovered from an interrupted create_stemcell", p.name));
            self.ledger.append(Event::Stemcell { pool: p.name.clone(), key: k, cid: cid.clone() })?;
            return Ok(Some(cid));
        }
        log::warn(&format!("pool={} stemcell={cid} from an interrupted upload of an older image: deleting it", p.name));
        if let Err(e) = self.caller(id).call(&format!("{tag}.delete_stemcell"), "delete_stemcell", json!([cid])) {
            log::warn(&format!("pool={} delete_stemcell {cid} failed: {}; delete it by hand", p.name, log::chain(&e)));
        }
        Ok(None)
    }
}
