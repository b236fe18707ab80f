//! The KCP segment layer: 24-byte little-endian segment headers and the run of
//! segments packed into a reliable datagram's payload.
//!
//! | off | size | field |
//! |---|---|---|
//! | 0 | 4 | conv |
//! | 4 | 1 | cmd ([`Command`]) |
//! | 5 | 1 | frg |
//! | 6 | 2 | wnd |
//! | 8 | 4 | ts |
//! | 12 | 4 | sn |
//! | 16 | 4 | una |
//! | 20 | 4 | len |
//!
//! The header is followed by `len` payload bytes.

use std::fmt;
use std::iter::FusedIterator;

use super::{read_u32_le, WireError};

/// Size in bytes of a KCP segment header (`IKCP_OVERHEAD`).
pub const SEGMENT_HEADER_LEN: usize = 24;

/// The `cmd` byte of a KCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Command {
    /// `IKCP_CMD_PUSH` (81): a data segment.
    Push = 81,
    /// `IKCP_CMD_ACK` (82): acknowledges the segment with sequence number `sn`.
    Ack = 82,
    /// `IKCP_CMD_WASK` (83): asks the peer to tell its window size.
    WindowAsk = 83,
    /// `IKCP_CMD_WINS` (84): tells the peer our window size.
    WindowTell = 84,
}

impl Command {
    /// The wire value of this command.
    #[inline]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

impl TryFrom<u8> for Command {
    type Error = WireError;

    /// Converts a wire `cmd` byte; anything outside 81..=84 is
    /// [`WireError::UnknownCommand`].
    #[inline]
    fn try_from(b: u8) -> Result<Self, WireError> {
        match b {
            81 => Ok(Command::Push),
            82 => Ok(Command::Ack),
            83 => Ok(Command::WindowAsk),
            84 => Ok(Command::WindowTell),
            other => Err(WireError::UnknownCommand(other)),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Command::Push => "PUSH",
            Command::Ack => "ACK",
            Command::WindowAsk => "WASK",
            Command::WindowTell => "WINS",
        })
    }
}

/// A decoded 24-byte KCP segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Conversation id (always 0 in kcp2k).
    pub conv: u32,
    /// Segment command.
    pub cmd: Command,
    /// Fragments remaining after this one (0 = last or only fragment).
    pub frg: u8,
    /// The sender's free receive window, in segments.
    pub wnd: u16,
    /// PUSH: the sender's clock at send time; ACK: echo of the acknowledged PUSH's `ts`.
    pub ts: u32,
    /// PUSH: sequence number; ACK: the sequence number being acknowledged.
    pub sn: u32,
    /// The sender's `rcv_nxt`: every sequence number below this was received.
    pub una: u32,
    /// Payload length in bytes.
    pub len: u32,
}

impl SegmentHeader {
    /// Parses one segment from the start of `buf`, returning its header and
    /// exactly `len` payload bytes (borrowed from `buf`).
    ///
    /// Errors, checked in this order (ikcp's precedence):
    /// fewer than 24 bytes → [`WireError::TooShort`]; `len` larger than the
    /// bytes after the header → [`WireError::BadLength`]; `cmd` not 81..=84 →
    /// [`WireError::UnknownCommand`]. `conv` is not checked.
    #[inline]
    pub fn parse(buf: &[u8]) -> Result<(SegmentHeader, &[u8]), WireError> {
        let h: &[u8; SEGMENT_HEADER_LEN] = buf
            .get(..SEGMENT_HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(WireError::TooShort)?;
        let rest = buf.get(SEGMENT_HEADER_LEN..).unwrap_or(&[]);
        let le32 = |off: usize| read_u32_le(h, off).unwrap_or(0);
        let len = le32(20);
        let payload = usize::try_from(len)
            .ok()
            .and_then(|n| rest.get(..n))
            .ok_or(WireError::BadLength {
                len,
                available: rest.len(),
            })?;
        let cmd = Command::try_from(h[4])?;
        let header = SegmentHeader {
            conv: le32(0),
            cmd,
            frg: h[5],
            wnd: u16::from_le_bytes([h[6], h[7]]),
            ts: le32(8),
            sn: le32(12),
            una: le32(16),
            len,
        };
        Ok((header, payload))
    }

    /// Encodes the header into its 24 wire bytes.
    #[inline]
    pub fn to_bytes(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        self.encode_into(&mut out);
        out
    }

    /// Encodes the header into a 24-byte array (infallible hot-path variant of
    /// [`SegmentHeader::emit`]).
    #[inline]
    pub fn encode_into(&self, out: &mut [u8; SEGMENT_HEADER_LEN]) {
        let c = self.conv.to_le_bytes();
        let w = self.wnd.to_le_bytes();
        let t = self.ts.to_le_bytes();
        let s = self.sn.to_le_bytes();
        let u = self.una.to_le_bytes();
        let l = self.len.to_le_bytes();
        *out = [
            c[0],
            c[1],
            c[2],
            c[3],
            self.cmd.as_u8(),
            self.frg,
            w[0],
            w[1],
            t[0],
            t[1],
            t[2],
            t[3],
            s[0],
            s[1],
            s[2],
            s[3],
            u[0],
            u[1],
            u[2],
            u[3],
            l[0],
            l[1],
            l[2],
            l[3],
        ];
    }

    /// Writes the 24 header bytes into `buf[..24]`, leaving the rest of `buf`
    /// untouched. Fails with [`WireError::BufferTooSmall`] if `buf` is shorter
    /// than 24 bytes.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let available = buf.len();
        let dst: &mut [u8; SEGMENT_HEADER_LEN] = buf
            .get_mut(..SEGMENT_HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(WireError::BufferTooSmall {
                needed: SEGMENT_HEADER_LEN,
                available,
            })?;
        self.encode_into(dst);
        Ok(())
    }
}

/// Reads the `conv` field (first 4 bytes, little-endian) of a segment, or
/// `None` if `buf` is shorter than 4 bytes. Equivalent to `ikcp_getconv`.
#[inline]
pub fn read_conv(buf: &[u8]) -> Option<u32> {
    read_u32_le(buf, 0)
}

/// Iterator over the KCP segments packed in a reliable datagram's payload.
///
/// Created by [`segments`]. It yields `Ok((header, payload))` for each segment
/// and stops when fewer than 24 bytes remain (such a tail is silently ignored,
/// as in ikcp). A malformed segment yields one `Err` and then the iterator
/// stops.
#[derive(Debug, Clone)]
pub struct Segments<'a> {
    rest: &'a [u8],
    done: bool,
}

impl<'a> Segments<'a> {
    /// The bytes not yet consumed by the iterator.
    #[inline]
    pub fn remainder(&self) -> &'a [u8] {
        self.rest
    }
}

/// Iterates over the segments packed back to back in `buf`.
#[inline]
pub fn segments(buf: &[u8]) -> Segments<'_> {
    Segments {
        rest: buf,
        done: false,
    }
}

impl<'a> Iterator for Segments<'a> {
    type Item = Result<(SegmentHeader, &'a [u8]), WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.rest.len() < SEGMENT_HEADER_LEN {
            self.done = true;
            return None;
        }
        match SegmentHeader::parse(self.rest) {
            Ok((header, payload)) => {
                let used = SEGMENT_HEADER_LEN.saturating_add(payload.len());
                self.rest = self.rest.get(used..).unwrap_or(&[]);
                Some(Ok((header, payload)))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl FusedIterator for Segments<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tests::hex;

    fn sample() -> SegmentHeader {
        SegmentHeader {
            conv: 0,
            cmd: Command::Push,
            frg: 0,
            wnd: 128,
            ts: 104,
            sn: 0,
            una: 0,
            len: 1,
        }
    }

    fn with_payload(h: &SegmentHeader, payload: &[u8]) -> Vec<u8> {
        let mut v = h.to_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn round_trips() {
        let cases = [
            sample(),
            SegmentHeader {
                conv: u32::MAX,
                cmd: Command::Ack,
                frg: u8::MAX,
                wnd: u16::MAX,
                ts: u32::MAX,
                sn: u32::MAX,
                una: u32::MAX,
                len: 0,
            },
            SegmentHeader {
                conv: 0x0102_0304,
                cmd: Command::WindowAsk,
                frg: 7,
                wnd: 0x0506,
                ts: 0x0708_090A,
                sn: 0x0B0C_0D0E,
                una: 0x0F10_1112,
                len: 3,
            },
            SegmentHeader {
                conv: 1,
                cmd: Command::WindowTell,
                frg: 0,
                wnd: 0,
                ts: 0,
                sn: 0,
                una: 0,
                len: 0,
            },
        ];
        for h in cases {
            let payload: Vec<u8> = (0..h.len as u8).collect();
            let bytes = with_payload(&h, &payload);
            let (p, pl) = SegmentHeader::parse(&bytes).unwrap();
            assert_eq!(p, h);
            assert_eq!(pl, &payload[..]);
            // Zero-copy: the payload borrows the input.
            if !pl.is_empty() {
                assert_eq!(pl.as_ptr(), bytes[SEGMENT_HEADER_LEN..].as_ptr());
            }
            let mut out = [0xAAu8; 30];
            h.emit(&mut out).unwrap();
            assert_eq!(&out[..24], &h.to_bytes()[..]);
            assert!(out[24..].iter().all(|&b| b == 0xAA));
            let mut arr = [0u8; 24];
            h.encode_into(&mut arr);
            assert_eq!(arr, h.to_bytes());
        }
    }

    #[test]
    fn field_offsets_little_endian() {
        let h = SegmentHeader {
            conv: 0x0403_0201,
            cmd: Command::Ack,
            frg: 0x06,
            wnd: 0x0807,
            ts: 0x0C0B_0A09,
            sn: 0x100F_0E0D,
            una: 0x1413_1211,
            len: 0,
        };
        let b = h.to_bytes();
        assert_eq!(
            b,
            [1, 2, 3, 4, 82, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 0, 0, 0, 0]
        );
    }

    #[test]
    fn extra_bytes_after_payload_not_returned() {
        let mut bytes = with_payload(&sample(), &[1]);
        bytes.extend_from_slice(&[9, 9, 9]);
        let (_, pl) = SegmentHeader::parse(&bytes).unwrap();
        assert_eq!(pl, &[1]);
    }

    #[test]
    fn every_truncation_is_too_short() {
        let bytes = with_payload(&sample(), &[1]);
        for n in 0..SEGMENT_HEADER_LEN {
            assert_eq!(SegmentHeader::parse(&bytes[..n]), Err(WireError::TooShort));
        }
    }

    #[test]
    fn truncated_payload_is_bad_length() {
        let mut h = sample();
        h.len = 10;
        let bytes = with_payload(&h, &[0; 10]);
        for n in SEGMENT_HEADER_LEN..bytes.len() {
            assert_eq!(
                SegmentHeader::parse(&bytes[..n]),
                Err(WireError::BadLength {
                    len: 10,
                    available: n - SEGMENT_HEADER_LEN
                })
            );
        }
        assert!(SegmentHeader::parse(&bytes).is_ok());
        h.len = u32::MAX;
        assert_eq!(
            SegmentHeader::parse(&with_payload(&h, &[0; 5])),
            Err(WireError::BadLength {
                len: u32::MAX,
                available: 5
            })
        );
    }

    #[test]
    fn every_cmd_byte() {
        let mut bytes = sample().to_bytes().to_vec();
        bytes.push(1);
        for b in 0..=255u8 {
            bytes[4] = b;
            let r = SegmentHeader::parse(&bytes);
            match b {
                81..=84 => {
                    let (h, _) = r.unwrap();
                    assert_eq!(h.cmd.as_u8(), b);
                    assert_eq!(Command::try_from(b), Ok(h.cmd));
                }
                _ => {
                    assert_eq!(r, Err(WireError::UnknownCommand(b)));
                    assert_eq!(Command::try_from(b), Err(WireError::UnknownCommand(b)));
                }
            }
        }
    }

    #[test]
    fn error_precedence() {
        // Short payload AND bad cmd: BadLength wins.
        let mut bytes = sample().to_bytes().to_vec();
        bytes[4] = 0;
        bytes[20] = 5;
        bytes.extend_from_slice(&[1, 2]);
        assert_eq!(
            SegmentHeader::parse(&bytes),
            Err(WireError::BadLength {
                len: 5,
                available: 2
            })
        );
        // Too short wins over everything.
        assert_eq!(SegmentHeader::parse(&bytes[..23]), Err(WireError::TooShort));
        // conv is not checked.
        let mut h = sample();
        h.conv = 0xDEAD_BEEF;
        assert!(SegmentHeader::parse(&with_payload(&h, &[1])).is_ok());
    }

    #[test]
    fn emit_too_small() {
        let h = sample();
        for n in 0..SEGMENT_HEADER_LEN {
            let mut buf = vec![0u8; n];
            assert_eq!(
                h.emit(&mut buf),
                Err(WireError::BufferTooSmall {
                    needed: 24,
                    available: n
                })
            );
        }
        let mut buf = [0u8; 24];
        assert_eq!(h.emit(&mut buf), Ok(()));
    }

    #[test]
    fn read_conv_lengths() {
        let b = [0x78u8, 0x56, 0x34, 0x12, 0xFF];
        for n in 0..4 {
            assert_eq!(read_conv(&b[..n]), None);
        }
        assert_eq!(read_conv(&b[..4]), Some(0x1234_5678));
        assert_eq!(read_conv(&b), Some(0x1234_5678));
    }

    #[test]
    fn iterator_two_segments_and_tail() {
        let a = sample();
        let mut b = sample();
        b.cmd = Command::Ack;
        b.sn = 9;
        b.len = 3;
        let mut bytes = with_payload(&a, &[1]);
        bytes.extend_from_slice(&with_payload(&b, &[7, 8, 9]));
        bytes.extend_from_slice(&[0xEE; 10]);
        let mut it = segments(&bytes);
        assert_eq!(it.next(), Some(Ok((a, &[1u8][..]))));
        assert_eq!(it.next(), Some(Ok((b, &[7u8, 8, 9][..]))));
        assert_eq!(it.remainder(), &[0xEE; 10]);
        assert_eq!(it.next(), None);
        assert_eq!(it.next(), None);
    }

    #[test]
    fn iterator_empty_and_short() {
        assert_eq!(segments(&[]).count(), 0);
        assert_eq!(segments(&[0; 23]).count(), 0);
    }

    #[test]
    fn iterator_garbage_after_valid_segment() {
        let a = sample();
        let mut bytes = with_payload(&a, &[1]);
        let mut garbage = [0xFFu8; 30];
        garbage[20..24].copy_from_slice(&2u32.to_le_bytes()); // fits, but cmd 0xFF
        bytes.extend_from_slice(&garbage);
        bytes.extend_from_slice(&with_payload(&a, &[1])); // never reached
        let mut it = segments(&bytes);
        assert_eq!(it.next(), Some(Ok((a, &[1u8][..]))));
        assert_eq!(it.next(), Some(Err(WireError::UnknownCommand(0xFF))));
        assert_eq!(it.next(), None);
        assert_eq!(it.next(), None);

        // Bad length after a valid segment.
        let mut bytes = with_payload(&a, &[1]);
        bytes.extend_from_slice(&[0xFFu8; 30]);
        let items: Vec<_> = segments(&bytes).collect();
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[1],
            Err(WireError::BadLength {
                len: u32::MAX,
                available: 6
            })
        );
    }

    #[test]
    fn server_reply_segments() {
        let d = hex("00000000520080006800000000000000010000000000000000000000510080000c00000000000000010000000100000001");
        let items: Vec<_> = segments(&d).collect();
        assert_eq!(items.len(), 2);
        let (ack, pl) = items[0].unwrap();
        assert_eq!(ack.cmd, Command::Ack);
        assert_eq!(
            (ack.sn, ack.una, ack.wnd, ack.ts, ack.len),
            (0, 1, 128, 104, 0)
        );
        assert!(pl.is_empty());
        let (push, pl) = items[1].unwrap();
        assert_eq!(push.cmd, Command::Push);
        assert_eq!(
            (push.sn, push.una, push.frg, push.wnd, push.ts, push.len),
            (0, 1, 0, 128, 12, 1)
        );
        assert_eq!(pl, &[1]);
    }

    #[test]
    fn command_display() {
        assert_eq!(Command::Push.to_string(), "PUSH");
        assert_eq!(Command::WindowTell.to_string(), "WINS");
    }
}
