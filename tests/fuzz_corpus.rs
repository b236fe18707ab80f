//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/`, minimized with
//! `cargo fuzz cmin`, crash reproducers included) through the same harnesses the fuzz
//! targets run, on stable and in plain `cargo test`. See docs/TESTING.md, Fuzzing.

use std::path::PathBuf;
use std::time::Instant;

#[path = "../fuzz/harness/batch.rs"]
mod batch;
#[path = "../fuzz/harness/endpoints.rs"]
mod endpoints;
#[path = "../fuzz/harness/kcp.rs"]
mod kcp;
#[cfg(feature = "secure")]
#[path = "../fuzz/harness/secure.rs"]
mod secure;
#[path = "../fuzz/harness/wire.rs"]
mod wire;

/// Runs `f` on every file of `fuzz/corpus/<target>/`; returns how many there were.
fn replay(target: &str, f: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    files.sort();
    let start = Instant::now();
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // A failing input names itself before the harness panics.
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let result = std::panic::catch_unwind(|| f(&data));
        if let Err(panic) = result {
            eprintln!("fuzz corpus {target}: {name:?} fails");
            std::panic::resume_unwind(panic);
        }
    }
    println!(
        "{target}: {} inputs replayed in {:?}",
        files.len(),
        start.elapsed()
    );
    files.len()
}

#[test]
fn wire_corpus() {
    assert!(replay("wire", wire::run) > 0);
}

#[test]
fn kcp_corpus() {
    assert!(replay("kcp", kcp::run) > 0);
}

#[test]
fn connection_corpus() {
    assert!(replay("connection", kcpnet::fuzzing::connection_session) > 0);
}

#[test]
fn endpoints_corpus() {
    assert!(replay("endpoints", endpoints::run) > 0);
}

#[cfg(feature = "fec")]
#[test]
fn fec_corpus() {
    assert!(replay("fec", kcpnet::fuzzing::fec_session) > 0);
}

#[cfg(feature = "secure")]
#[test]
fn secure_corpus() {
    assert!(replay("secure", secure::run) > 0);
}

#[test]
fn batch_corpus() {
    assert!(replay("batch", batch::run) > 0);
}

/// The empty input is a valid case of every target (a session with no operations).
#[test]
fn empty_inputs() {
    wire::run(&[]);
    kcp::run(&[]);
    kcpnet::fuzzing::connection_session(&[]);
    endpoints::run(&[]);
    batch::run(&[]);
    #[cfg(feature = "secure")]
    secure::run(&[]);
}
