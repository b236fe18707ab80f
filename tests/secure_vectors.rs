//! The published test vectors of secure sessions (`tests/vectors/secure/VECTORS.md`): a
//! connect token made from fixed keys and random bytes, a session key, and a sealed
//! datagram, each compared byte for byte with the file; with `KCPNET_WRITE_VECTORS=1` the
//! test prints the values instead (to regenerate the file after a format change).
#![cfg(feature = "secure")]

use kcpnet::secure::{
    derive_session_key, open_datagram, seal_datagram, CipherSuite, ConnectToken, PrivateKey,
    TokenParams,
};
use rand::{CryptoRng, RngCore};

/// "Random" bytes 0, 1, 2, … so the vectors depend on no generator.
struct Counting(u8);

impl RngCore for Counting {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for b in dest {
            *b = self.0;
            self.0 = self.0.wrapping_add(1);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl CryptoRng for Counting {}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The value of `name = hex` in the vectors file (hex may wrap over several lines).
fn vector(file: &str, name: &str) -> String {
    let start = file
        .find(&format!("{name} ="))
        .unwrap_or_else(|| panic!("{name} missing"));
    file[start..]
        .lines()
        .skip(1)
        .map(str::trim)
        .take_while(|l| !l.is_empty() && !l.contains('=') && !l.starts_with("```"))
        .collect()
}

#[test]
fn published_vectors_match() {
    let key: [u8; 32] = std::array::from_fn(|i| i as u8 + 1);
    let token = ConnectToken::generate_with_rng(
        &PrivateKey::from_bytes(key),
        &TokenParams {
            protocol_id: 0x1122_3344_5566_7788,
            client_id: 42,
            server_addresses: vec![
                "203.0.113.7:7777".parse().unwrap(),
                "[2001:db8::7]:7777".parse().unwrap(),
            ],
            user_data: b"team:red".to_vec(),
            created_unix_secs: 1_800_000_000,
            valid_secs: 30,
        },
        &mut Counting(0),
    )
    .unwrap();
    let c2s: [u8; 32] = std::array::from_fn(|i| 24 + i as u8);
    let salt: [u8; 16] = std::array::from_fn(|i| 0xA0 + i as u8);
    let session = derive_session_key(&c2s, &salt);
    // A reliable datagram with cookie 0x8badf00d and one KCP ACK segment.
    let mut plain = vec![1, 0x0d, 0xf0, 0xad, 0x8b];
    plain.extend_from_slice(&[0, 0, 0, 0, 82, 0, 128, 0]);
    plain.extend_from_slice(&[1, 0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]);
    let sealed = seal_datagram(CipherSuite::ChaCha20Poly1305, &session, 7, &plain).unwrap();
    let sealed_aes = seal_datagram(CipherSuite::Aes256Gcm, &session, 7, &plain).unwrap();
    for (suite, d) in [
        (CipherSuite::ChaCha20Poly1305, &sealed),
        (CipherSuite::Aes256Gcm, &sealed_aes),
    ] {
        assert_eq!(open_datagram(suite, &session, d), Some((7, plain.clone())));
    }
    assert_eq!(
        open_datagram(CipherSuite::Aes256Gcm, &session, &sealed),
        None
    );

    let got = [
        ("token", hex(token.as_bytes())),
        ("session_key", hex(&session)),
        ("plain", hex(&plain)),
        ("sealed", hex(&sealed)),
        ("sealed_aes", hex(&sealed_aes)),
    ];
    if std::env::var_os("KCPNET_WRITE_VECTORS").is_some() {
        for (name, value) in &got {
            println!("{name} =");
            for chunk in value.as_bytes().chunks(64) {
                println!("{}", std::str::from_utf8(chunk).unwrap());
            }
            println!();
        }
        return;
    }
    let file = include_str!("vectors/secure/VECTORS.md");
    for (name, value) in &got {
        assert_eq!(&vector(file, name), value, "vector {name}");
    }
}
