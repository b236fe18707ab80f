//! Fuzz target `batch`: coalesced unreliable datagrams, see `fuzz/harness/batch.rs` for what
//! it drives and checks.
#![no_main]

#[path = "../harness/batch.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
