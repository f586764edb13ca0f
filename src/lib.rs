//! vmcpi: a BOSH CPI for the hypervisors that teams run themselves, and agent-launcher, a CI autoscaler on
//! any BOSH CPI. One crate, three parts, each a folder:
//! - [`cpi`]: the `vmcpi` executable's library: the wire protocol, the drivers and everything only a CPI
//!   needs (agent settings, settings media, stemcells, disk images, libvirt's protocol, transports).
//! - [`launcher`]: the `agent-launcher` daemon (one VM per CI job through any BOSH CPI, as a process).
//! - [`common`]: what both programs use (logging and redaction, CID newtypes, timestamps, globs, secrets,
//!   base64 and percent-encoding). Neither `common` nor `launcher` uses anything of `cpi`: the launcher
//!   drives a CPI only as an executable, the way a director does.
//!
//! One crate rather than a workspace: the two programs share one release package, one `Cargo.lock` and
//! one build (the BOSH release compiles both from one source tree without a network), and the folders
//! keep the boundary visible; a unit test below checks that `launcher` and `common` never name `cpi`.
//!
//! The CPI's modules are also reachable at the crate root (`vmcpi::driver`, …) for the binaries, tests,
//! benches and fuzz targets.
pub mod common;
pub mod cpi;
pub mod launcher;

pub use common::{encoding, glob, ids, logger, redact, rfc3339, secret, vocabulary};
pub use cpi::{
    agent_settings, compat, config, diskimage, driver, error, exec, inflight, iso9660, killpoint, libvirt_rpc, medium,
    rpc, statedir, stemcell, timing, transport,
};

#[cfg(test)]
mod layout {
    /// The parts' boundary: no file of `launcher/` or `common/` names the CPI's modules.
    #[test]
    fn launcher_and_common_do_not_use_the_cpi() {
        fn rs_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    rs_files(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rs_files(&src.join("launcher"), &mut files);
        rs_files(&src.join("common"), &mut files);
        assert!(files.len() > 10, "{files:?}");
        let cpi_paths: Vec<String> = ["cpi", "driver", "rpc", "libvirt_rpc", "stemcell", "config", "transport"]
            .iter()
            .map(|m| format!("crate::{m}::"))
            .collect();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for p in &cpi_paths {
                assert!(!text.contains(p.as_str()), "{} names {p}", f.display());
            }
        }
    }
}
