//! Any request body through the app-definition parser (JSON depth guard, serde with Marathon's
//! type errors, normalisation, validation): it may refuse, it may not panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stride_core::parse::parse_app;
use stride_core::PathId;

fuzz_target!(|data: &[u8]| {
    let base = PathId::parse("/fuzz");
    if let Ok(app) = parse_app(data, &base) {
        // What was accepted must render and parse back.
        let json = app.to_json().to_string();
        let again = parse_app(json.as_bytes(), &PathId::root());
        assert!(again.is_ok(), "a valid app does not parse back: {json}");
    }
});
