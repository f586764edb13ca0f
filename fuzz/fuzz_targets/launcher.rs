//! agent-launcher inputs: its TOML config, Buildkite `Link` headers and timestamps. Never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmcpi::launcher::{buildkite, config};
use vmcpi::rfc3339;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = config::Config::parse(&text, std::path::Path::new("/fuzz/launcher.toml"));
    let _ = buildkite::link_next(&text);
    let _ = rfc3339::parse(&text);
});
