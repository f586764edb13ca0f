//! The stemcell.MF reader (agent-launcher reads `cloud_properties` from a stemcell tarball): never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vmcpi::launcher::stemcell::parse_manifest(&String::from_utf8_lossy(data));
});
