//! Harness of the fuzz target `secure` (and of its corpus replay in `tests/fuzz_corpus.rs`):
//! `kcpnet::fuzzing::secure_session` (features `fuzzing` and `secure`) drives a secure
//! server endpoint (`SecurityMode::Required` or `Mixed`, chosen by the input) with a real
//! token client, and an attacker: Hellos with mutated token blobs and options, sealed
//! datagrams (0x81/0x82/0xC1/0xC2) with mutated cookies, packet numbers, attachments and
//! bodies, replays and bit flips of real sealed datagrams, path responses and source
//! rewrites from other addresses, a token thief, and forgeries sealed with the real keys.
//! Its module docs list what is checked.

/// Runs one input.
pub fn run(data: &[u8]) {
    kcpnet::fuzzing::secure_session(data);
}
