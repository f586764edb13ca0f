//! The vSphere SOAP response decoder (body or typed fault, any HTTP status): arbitrary bytes never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmcpi::driver::vsphere::soap;

fuzz_target!(|data: &[u8]| {
    for status in [200, 500, 503] {
        if let Ok(node) = soap::decode(status, data) {
            let _ = node.moref_at("returnval");
            let _ = node.str_at("returnval/info/state");
        }
    }
    let _ = vmcpi::driver::vsphere::import::strip_items(&String::from_utf8_lossy(data), &["20", "15"]);
});
