//! The .vmx reader/writer: arbitrary text never panics, and a parsed file renders to text that parses to
//! the same keys and values (edits keep every key they do not touch).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmcpi::driver::vmrun::vmx::Vmx;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let v = Vmx::parse(&text);
    let once = v.render();
    let again = Vmx::parse(&once).render();
    assert_eq!(once, again, "render(parse(render(x))) must be stable");
    let mut e = Vmx::parse(&once);
    e.set("displayName", "fuzz \"quoted\" |22 name");
    let _ = Vmx::parse(&e.render());
});
