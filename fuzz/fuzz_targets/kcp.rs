//! Fuzz target `kcp`: see `fuzz/harness/kcp.rs` for what it drives and checks.
#![no_main]

#[path = "../harness/kcp.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
