//! Fuzz target `secure`: see `fuzz/harness/secure.rs` for what it drives and checks.
#![no_main]

#[path = "../harness/secure.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
