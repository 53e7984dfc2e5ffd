//! Arbitrary bytes as a route (and as a `vars` list): compiling and routing must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sluice_dataplane::config::exercise(data);
});
