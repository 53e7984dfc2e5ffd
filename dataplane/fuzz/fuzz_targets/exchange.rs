//! Arbitrary bytes as a node's answer, read in pieces: the response head parser and the body framing (length,
//! chunked with trailers, until close) must end in a head, a body or an error, never a panic or a loop.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sluice_dataplane::upstream::http1::exercise(data);
});
