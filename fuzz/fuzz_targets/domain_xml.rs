//! The readers of `virsh dumpxml` / `vol-dumpxml` output: arbitrary text never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = vmcpi::driver::libvirt::domain::parse_domain(s);
        let _ = vmcpi::driver::libvirt::domain::parse_volume(s);
    }
});
