//! Arbitrary text as a request path: normalisation never panics, and its result is normal (normalising it again
//! changes nothing; no `//`, no dot segment).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(path) = std::str::from_utf8(data) {
        sluice_dataplane::router::normalize::exercise(path);
    }
});
