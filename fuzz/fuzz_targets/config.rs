//! cpi.json parsing, validation and the context overlay: arbitrary documents never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmcpi::logger::set_stderr(false);
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let ctx = v.get("context").cloned();
    let _ = vmcpi::config::Config::from_value(v, ctx.as_ref(), "fuzz");
    let _ = vmcpi::logger::take_buffer();
});
