//! Fuzz target `connection`: the crate-private kcp2k connection state machine through
//! `kcpnet::fuzzing::connection_session` (feature `fuzzing`), which documents what it
//! drives and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kcpnet::fuzzing::connection_session(data));
