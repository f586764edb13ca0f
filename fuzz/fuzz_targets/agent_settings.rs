//! Agent settings read back from a settings medium: arbitrary bytes never panic, and what parses
//! serialises and parses again to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmcpi::agent_settings::AgentSettings;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = AgentSettings::from_json(data) {
        let again = AgentSettings::from_json(&s.to_json()).expect("re-parse of our own output");
        assert_eq!(again.agent_id, s.agent_id);
        assert_eq!(again.disks, s.disks);
    }
});
