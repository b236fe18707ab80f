//! Fuzz target `endpoints`: see `fuzz/harness/endpoints.rs` for what it drives and checks.
#![no_main]

#[path = "../harness/endpoints.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
