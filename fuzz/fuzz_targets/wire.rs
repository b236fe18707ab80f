//! Fuzz target `wire`: see `fuzz/harness/wire.rs` for what it drives and checks.
#![no_main]

#[path = "../harness/wire.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
