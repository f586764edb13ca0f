//! The request parser and the typed-method parser: arbitrary stdin never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmcpi::rpc::method::Method;
use vmcpi::rpc::wire::Request;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = Request::parse(data) {
        let _ = Method::parse(&req.method, &req.arguments);
        // every method name with these arguments, too
        for m in vmcpi::rpc::method::METHODS {
            let _ = Method::parse(m, &req.arguments);
        }
    }
});
