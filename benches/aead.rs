//! The AEADs of sealed datagrams, alone: seal and open of a 32-, 200- and 1,200-byte
//! datagram body with RustCrypto's `aes-gcm` / `chacha20poly1305` and with `ring`'s
//! `AES_256_GCM` / `CHACHA20_POLY1305`, as kcpnet calls them (12-byte nonce = packet number
//! u64 LE ++ 4 zero bytes, 13 bytes of associated data, detached 16-byte tag, in place).
//!
//! `cargo bench --bench aead` (a few seconds). Each figure is the median of 9 rounds of a
//! fixed number of operations; every operation copies the input into the working buffer
//! first (as `Session::seal` / `Session::check` do), so the copy is in every figure alike.
//! Before timing, it checks that both implementations of each AEAD produce the same bytes.

use std::hint::black_box;
use std::time::Instant;

use aes_gcm::Aes256Gcm;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::consts::{U12, U16};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use ring::aead::{self as ra, LessSafeKey, UnboundKey};

const SIZES: [usize; 3] = [32, 200, 1200];
const ROUNDS: usize = 9;
const KEY: [u8; 32] = [0x42; 32];
const AAD: [u8; 13] = [0x81, 1, 2, 3, 4, 7, 0, 0, 0, 0, 0, 0, 0];

fn nonce_bytes(pn: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&pn.to_le_bytes());
    n
}

/// One implementation under test: seal in place returning the tag, open in place with a
/// detached tag.
trait Aead {
    fn seal(&self, pn: u64, buf: &mut [u8]) -> [u8; 16];
    fn open(&self, pn: u64, buf: &mut [u8], tag: &[u8; 16]) -> bool;
}

struct Rc<C>(C);

impl<C: AeadInPlace<NonceSize = U12, TagSize = U16>> Aead for Rc<C> {
    fn seal(&self, pn: u64, buf: &mut [u8]) -> [u8; 16] {
        let n = nonce_bytes(pn);
        let tag = self
            .0
            .encrypt_in_place_detached(Nonce::from_slice(&n), &AAD, buf)
            .expect("seal");
        tag.into()
    }
    fn open(&self, pn: u64, buf: &mut [u8], tag: &[u8; 16]) -> bool {
        let n = nonce_bytes(pn);
        self.0
            .decrypt_in_place_detached(Nonce::from_slice(&n), &AAD, buf, Tag::from_slice(tag))
            .is_ok()
    }
}

struct Ring(LessSafeKey);

impl Aead for Ring {
    fn seal(&self, pn: u64, buf: &mut [u8]) -> [u8; 16] {
        let n = ra::Nonce::assume_unique_for_key(nonce_bytes(pn));
        let tag = self
            .0
            .seal_in_place_separate_tag(n, ra::Aad::from(&AAD), buf)
            .expect("seal");
        tag.as_ref().try_into().expect("16-byte tag")
    }
    fn open(&self, pn: u64, buf: &mut [u8], tag: &[u8; 16]) -> bool {
        let n = ra::Nonce::assume_unique_for_key(nonce_bytes(pn));
        self.0
            .open_in_place_separate_tag(n, ra::Aad::from(&AAD), ra::Tag::from(*tag), buf, 0..)
            .is_ok()
    }
}

fn ring_key(alg: &'static ra::Algorithm) -> Ring {
    Ring(LessSafeKey::new(UnboundKey::new(alg, &KEY).expect("key")))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Nanoseconds per seal and per open of a `size`-byte body (medians of [`ROUNDS`]).
fn measure(a: &dyn Aead, size: usize) -> (f64, f64) {
    // About 10 ms per round at RustCrypto's speed; fewer iterations for larger bodies.
    let iters = (4_000_000 / (size + 200)).max(1000);
    let plain: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut buf = plain.clone();
    let pn = 7;
    let tag = a.seal(pn, &mut buf);
    let sealed = buf.clone();
    let mut seal_ns = Vec::with_capacity(ROUNDS);
    let mut open_ns = Vec::with_capacity(ROUNDS);
    for round in 0..=ROUNDS {
        let t = Instant::now();
        for i in 0..iters {
            buf.copy_from_slice(&plain);
            black_box(a.seal(black_box(i as u64), black_box(&mut buf)));
        }
        let s = t.elapsed().as_nanos() as f64 / iters as f64;
        let t = Instant::now();
        for _ in 0..iters {
            buf.copy_from_slice(&sealed);
            assert!(a.open(black_box(pn), black_box(&mut buf), black_box(&tag)));
        }
        let o = t.elapsed().as_nanos() as f64 / iters as f64;
        // Round 0 warms caches and frequency up; it is not counted.
        if round > 0 {
            seal_ns.push(s);
            open_ns.push(o);
        }
    }
    assert_eq!(buf, plain, "the last open gave the plaintext back");
    (median(seal_ns), median(open_ns))
}

/// Both implementations of one AEAD give the same ciphertext and tag, and open each
/// other's output.
fn check_same_bytes(a: &dyn Aead, b: &dyn Aead, name: &str) {
    for size in SIZES {
        let plain: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
        let (mut x, mut y) = (plain.clone(), plain.clone());
        let (tx, ty) = (a.seal(99, &mut x), b.seal(99, &mut y));
        assert!(
            x == y && tx == ty,
            "{name}: ciphertexts differ at {size} bytes"
        );
        assert!(
            b.open(99, &mut x, &tx) && x == plain,
            "{name}: cross-open failed"
        );
        let mut z = y.clone();
        let mut bad = ty;
        bad[0] ^= 1;
        assert!(!a.open(99, &mut z, &bad), "{name}: a forged tag opened");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is read.
    let rc_aes = Rc(Aes256Gcm::new((&KEY).into()));
    let ring_aes = ring_key(&ra::AES_256_GCM);
    let rc_chacha = Rc(ChaCha20Poly1305::new((&KEY).into()));
    let ring_chacha = ring_key(&ra::CHACHA20_POLY1305);
    check_same_bytes(&rc_aes, &ring_aes, "AES-256-GCM");
    check_same_bytes(&rc_chacha, &ring_chacha, "ChaCha20-Poly1305");

    #[cfg(target_arch = "x86_64")]
    println!(
        "AEAD seal / open per datagram body (CPU: aes {}, pclmulqdq {}, avx2 {}; features detected at run time)",
        std::arch::is_x86_feature_detected!("aes"),
        std::arch::is_x86_feature_detected!("pclmulqdq"),
        std::arch::is_x86_feature_detected!("avx2"),
    );
    println!("medians of {ROUNDS} rounds; ring ÷ RustCrypto is the time of seal + open (below 1: ring is faster)\n");
    println!(
        "| AEAD | bytes | RustCrypto seal / open ns | ring seal / open ns | ring ÷ RustCrypto | ring seal GB/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let pairs: [(&str, &dyn Aead, &dyn Aead); 2] = [
        ("AES-256-GCM", &rc_aes, &ring_aes),
        ("ChaCha20-Poly1305", &rc_chacha, &ring_chacha),
    ];
    for (name, rc, ring) in pairs {
        for size in SIZES {
            let (rs, ro) = measure(rc, size);
            let (gs, go) = measure(ring, size);
            println!(
                "| {name} | {size} | {rs:.0} / {ro:.0} | {gs:.0} / {go:.0} | {:.2}× | {:.2} |",
                (gs + go) / (rs + ro),
                size as f64 / gs,
            );
        }
    }
}
