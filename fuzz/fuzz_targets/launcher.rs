//! agent-launcher inputs: its TOML config, Buildkite `Link` headers, timestamps, GitHub webhook deliveries and
//! their signature headers. Never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmcpi::launcher::{buildkite, config};
use vmcpi::rfc3339;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = config::Config::parse(&text, std::path::Path::new("/fuzz/launcher.toml"));
    let _ = buildkite::link_next(&text);
    let _ = rfc3339::parse(&text);
    let _ = vmcpi::launcher::github::webhook::parse(data);
    let _ = vmcpi::launcher::github::webhook::verify(b"secret", data, Some(&text));
});
