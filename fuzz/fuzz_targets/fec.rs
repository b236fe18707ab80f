//! Fuzz target `fec`: the FEC decoder against hostile shards, and an encoder–decoder pair
//! over a lossy path (`kcpnet::fuzzing::fec_session`, `src/fuzzing/fec.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kcpnet::fuzzing::fec_session(data));
