//! Arbitrary bytes as a `plugins` map (and a consumer's): decoding, building and running must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sluice_dataplane::plugins::exercise(data);
});
