//! Zero-copy parsing and encoding of the bytes that travel in each UDP datagram.
//!
//! The wire format has two layers:
//!
//! 1. **The kcp2k datagram layer** ([`datagram`]). Every datagram starts with a
//!    5-byte header: one channel byte ([`Channel::Reliable`] = 1 or
//!    [`Channel::Unreliable`] = 2) and a little-endian `u32` cookie. On the
//!    unreliable channel the rest is one [`UnreliableHeader`] byte followed by the
//!    user payload. On the reliable channel the rest is a run of KCP segments.
//!    Messages reassembled from those segments start with a [`ReliableHeader`]
//!    byte. A receiver ignores any datagram of 5 bytes or fewer.
//! 2. **The KCP segment layer** ([`segment`]). Each segment is a 24-byte
//!    little-endian [`SegmentHeader`] (conv, cmd, frg, wnd, ts, sn, una, len)
//!    followed by `len` payload bytes. Segments are packed back to back, and a
//!    trailing remainder shorter than 24 bytes is silently ignored (see
//!    [`segments`]).
//!
//! Everything here is a pure function of its input. Parsers never panic and
//! never read out of bounds on any input, never allocate, and return payloads
//! as slices that borrow the input buffer.

use std::fmt;

pub mod batch;
pub mod datagram;
pub mod segment;

pub use datagram::{
    is_hello_datagram, parse_reliable_message, parse_u32_payload, parse_unreliable,
    write_datagram_header, Channel, Datagram, ReliableHeader, UnreliableHeader,
    DATAGRAM_HEADER_LEN,
};
pub use segment::{read_conv, segments, Command, SegmentHeader, Segments, SEGMENT_HEADER_LEN};

/// Why bytes could not be parsed or encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The input has fewer bytes than the header being parsed needs.
    TooShort,
    /// A segment's `len` field is larger than the bytes that follow its header.
    BadLength {
        /// The `len` field of the segment header.
        len: u32,
        /// How many bytes actually follow the header.
        available: usize,
    },
    /// A segment's `cmd` byte is not one of 81 (PUSH), 82 (ACK), 83 (WASK) or 84 (WINS).
    UnknownCommand(u8),
    /// A datagram's channel byte is not 1 (reliable) or 2 (unreliable).
    InvalidChannel(u8),
    /// A kcp2k reliable or unreliable message header byte that is not defined.
    InvalidHeader(u8),
    /// The output buffer is too small for what was to be written into it.
    BufferTooSmall {
        /// How many bytes the write needs.
        needed: usize,
        /// How many bytes the buffer has.
        available: usize,
    },
    /// A coalesced unreliable datagram ([`batch`]) whose message lengths do not tile its
    /// payload: a length of 0, a length past the end, or a dangling byte.
    BadBatch,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WireError::TooShort => f.write_str("input too short for header"),
            WireError::BadLength { len, available } => write!(
                f,
                "segment length {len} exceeds the {available} bytes available"
            ),
            WireError::UnknownCommand(cmd) => write!(f, "unknown KCP command {cmd}"),
            WireError::InvalidChannel(ch) => write!(f, "invalid kcp2k channel {ch}"),
            WireError::InvalidHeader(h) => write!(f, "invalid kcp2k message header {h}"),
            WireError::BufferTooSmall { needed, available } => write!(
                f,
                "buffer too small: {needed} bytes needed, {available} available"
            ),
            WireError::BadBatch => f.write_str(
                "coalesced unreliable datagram: a message length of 0, past the end, or a dangling byte",
            ),
        }
    }
}

impl std::error::Error for WireError {}

/// Reads a little-endian `u32` at `off`, or `None` if `buf` is too short.
#[inline]
fn read_u32_le(buf: &[u8], off: usize) -> Option<u32> {
    let end = off.checked_add(4)?;
    let bytes: [u8; 4] = buf.get(off..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a hex string (test helper).
    pub(crate) fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// A simple xorshift64 generator, so the fuzz loop needs no extra crates.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn byte(&mut self) -> u8 {
            (self.next() >> 24) as u8
        }
    }

    const HELLO: &str = "010000000000000000510080006800000000000000000000000100000001";
    const SERVER_REPLY: &str = "0128435cf700000000520080006800000000000000010000000000000000000000510080000c00000000000000010000000100000001";

    /// Feeds `buf` to every parser; only checks that nothing panics and that
    /// the results are self-consistent.
    fn feed_all(buf: &[u8]) {
        if let Ok((h, payload)) = SegmentHeader::parse(buf) {
            assert_eq!(payload.len(), h.len as usize);
            assert_eq!(&h.to_bytes()[..], &buf[..SEGMENT_HEADER_LEN]);
        }
        let _ = read_conv(buf);
        let mut n = 0;
        let mut errs = 0;
        for item in segments(buf) {
            n += 1;
            if item.is_err() {
                errs += 1;
            }
            assert!(n <= buf.len() / SEGMENT_HEADER_LEN);
        }
        assert!(errs <= 1);
        if let Ok(d) = Datagram::parse(buf) {
            assert_eq!(d.payload.len() + DATAGRAM_HEADER_LEN, buf.len());
            for item in segments(d.payload) {
                let _ = item;
            }
            let _ = parse_unreliable(d.payload);
        }
        let _ = parse_unreliable(buf);
        let _ = parse_reliable_message(buf);
        let _ = parse_u32_payload(buf);
        let _ = is_hello_datagram(buf);
    }

    #[test]
    fn fuzz_no_panic_random() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut buf = [0u8; 200];
        for _round in 0..50 {
            for len in 0..200 {
                for b in buf.iter_mut().take(len) {
                    *b = rng.byte();
                }
                feed_all(&buf[..len]);
            }
        }
    }

    #[test]
    fn fuzz_no_panic_structured() {
        // Random bytes rarely look like segments; also mutate real datagrams and
        // bias cmd/len fields towards plausible values to reach deeper paths.
        let mut rng = XorShift(0x1234_5678_9ABC_DEF1);
        let seeds = [hex(HELLO), hex(SERVER_REPLY)];
        for seed in &seeds {
            for _ in 0..2000 {
                let mut v = seed.clone();
                let flips = (rng.next() % 4) as usize;
                for _ in 0..flips {
                    let i = (rng.next() as usize) % v.len();
                    v[i] = rng.byte();
                }
                let cut = (rng.next() as usize) % (v.len() + 1);
                feed_all(&v[..cut]);
                feed_all(&v);
            }
        }
        let mut buf = [0u8; 200];
        for _ in 0..5000 {
            let len = (rng.next() % 200) as usize;
            for b in buf.iter_mut().take(len) {
                *b = rng.byte();
            }
            let mut off = DATAGRAM_HEADER_LEN;
            while off + SEGMENT_HEADER_LEN <= len {
                buf[off + 4] = 81 + (rng.next() % 5) as u8;
                let seg_len = (rng.next() % 40) as u32;
                buf[off + 20..off + 24].copy_from_slice(&seg_len.to_le_bytes());
                off += SEGMENT_HEADER_LEN + seg_len as usize;
            }
            if len > 0 {
                buf[0] = 1 + (rng.next() % 2) as u8;
            }
            feed_all(&buf[..len]);
            feed_all(&buf[DATAGRAM_HEADER_LEN.min(len)..len]);
        }
    }

    #[test]
    fn error_display_and_trait() {
        let errs = [
            WireError::TooShort,
            WireError::BadLength {
                len: 7,
                available: 3,
            },
            WireError::UnknownCommand(9),
            WireError::InvalidChannel(0),
            WireError::InvalidHeader(6),
            WireError::BufferTooSmall {
                needed: 24,
                available: 1,
            },
        ];
        for e in errs {
            let s = e.to_string();
            assert!(!s.is_empty());
            let _: &dyn std::error::Error = &e;
        }
        assert_eq!(
            WireError::BadLength {
                len: 7,
                available: 3
            }
            .to_string(),
            "segment length 7 exceeds the 3 bytes available"
        );
    }

    #[test]
    fn read_u32_le_bounds() {
        let b = [1u8, 2, 3, 4, 5];
        assert_eq!(read_u32_le(&b, 0), Some(0x0403_0201));
        assert_eq!(read_u32_le(&b, 1), Some(0x0504_0302));
        assert_eq!(read_u32_le(&b, 2), None);
        assert_eq!(read_u32_le(&b, usize::MAX), None);
    }
}
