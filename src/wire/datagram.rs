//! The kcp2k datagram layer: the 5-byte channel + cookie header, the
//! unreliable message header, and the header byte of reassembled reliable
//! messages.
//!
//! | off | size | field |
//! |---|---|---|
//! | 0 | 1 | channel ([`Channel`]) |
//! | 1 | 4 | cookie, `u32` little-endian |
//! | 5 | … | reliable: KCP segments; unreliable: [`UnreliableHeader`] byte + payload |

use std::fmt;

use super::segment::{segments, Command};
use super::{read_u32_le, WireError};

/// Size in bytes of the kcp2k datagram header (channel byte + 4-byte cookie).
pub const DATAGRAM_HEADER_LEN: usize = 5;

/// The kcp2k channel a datagram travels on (its first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Channel {
    /// The payload is a run of KCP segments.
    Reliable = 1,
    /// The payload is an [`UnreliableHeader`] byte followed by the user payload.
    Unreliable = 2,
}

impl Channel {
    /// The wire value of this channel.
    #[inline]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

impl TryFrom<u8> for Channel {
    type Error = WireError;

    /// Converts a channel byte; anything but 1 or 2 is [`WireError::InvalidChannel`].
    #[inline]
    fn try_from(b: u8) -> Result<Self, WireError> {
        match b {
            1 => Ok(Channel::Reliable),
            2 => Ok(Channel::Unreliable),
            other => Err(WireError::InvalidChannel(other)),
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Channel::Reliable => "reliable",
            Channel::Unreliable => "unreliable",
        })
    }
}

/// The first byte of a reassembled reliable kcp2k message (`KcpHeaderReliable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReliableHeader {
    /// Handshake; any payload is ignored.
    Hello = 1,
    /// Keepalive; payload is the sender's time in ms as a 4-byte LE `u32`.
    Ping = 2,
    /// User data; the payload must not be empty.
    Data = 3,
    /// Reply to a ping; payload echoes the ping's 4-byte LE `u32` timestamp.
    Pong = 4,
}

impl ReliableHeader {
    /// The wire value of this header.
    #[inline]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

impl TryFrom<u8> for ReliableHeader {
    type Error = WireError;

    /// Converts a header byte; anything but 1..=4 is [`WireError::InvalidHeader`].
    #[inline]
    fn try_from(b: u8) -> Result<Self, WireError> {
        match b {
            1 => Ok(ReliableHeader::Hello),
            2 => Ok(ReliableHeader::Ping),
            3 => Ok(ReliableHeader::Data),
            4 => Ok(ReliableHeader::Pong),
            other => Err(WireError::InvalidHeader(other)),
        }
    }
}

/// The header byte of an unreliable kcp2k message (`KcpHeaderUnreliable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum UnreliableHeader {
    /// User data (may be empty on receive).
    Data = 4,
    /// The peer is disconnecting; no payload.
    Disconnect = 5,
}

impl UnreliableHeader {
    /// The wire value of this header.
    #[inline]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

impl TryFrom<u8> for UnreliableHeader {
    type Error = WireError;

    /// Converts a header byte; anything but 4 or 5 is [`WireError::InvalidHeader`].
    #[inline]
    fn try_from(b: u8) -> Result<Self, WireError> {
        match b {
            4 => Ok(UnreliableHeader::Data),
            5 => Ok(UnreliableHeader::Disconnect),
            other => Err(WireError::InvalidHeader(other)),
        }
    }
}

/// A parsed kcp2k datagram; `payload` borrows the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// The channel (first byte).
    pub channel: Channel,
    /// The sender's cookie (bytes 1..5, little-endian).
    pub cookie: u32,
    /// Everything after the 5-byte header (never empty).
    pub payload: &'a [u8],
}

impl<'a> Datagram<'a> {
    /// Splits a received datagram into channel, cookie and payload.
    ///
    /// Datagrams of 5 bytes or fewer are [`WireError::TooShort`] (kcp2k
    /// ignores them); an invalid channel byte is [`WireError::InvalidChannel`].
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<Datagram<'a>, WireError> {
        if buf.len() <= DATAGRAM_HEADER_LEN {
            return Err(WireError::TooShort);
        }
        let channel_byte = *buf.first().ok_or(WireError::TooShort)?;
        let channel = Channel::try_from(channel_byte)?;
        let cookie = read_u32_le(buf, 1).ok_or(WireError::TooShort)?;
        let payload = buf.get(DATAGRAM_HEADER_LEN..).ok_or(WireError::TooShort)?;
        Ok(Datagram {
            channel,
            cookie,
            payload,
        })
    }
}

/// Writes the 5-byte datagram header (channel, cookie LE) into `buf[..5]` and
/// returns 5. Fails with [`WireError::BufferTooSmall`] if `buf` is shorter.
#[inline]
pub fn write_datagram_header(
    buf: &mut [u8],
    channel: Channel,
    cookie: u32,
) -> Result<usize, WireError> {
    let available = buf.len();
    let dst: &mut [u8; DATAGRAM_HEADER_LEN] = buf
        .get_mut(..DATAGRAM_HEADER_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(WireError::BufferTooSmall {
            needed: DATAGRAM_HEADER_LEN,
            available,
        })?;
    let c = cookie.to_le_bytes();
    *dst = [channel.as_u8(), c[0], c[1], c[2], c[3]];
    Ok(DATAGRAM_HEADER_LEN)
}

/// Splits an unreliable datagram's payload into its header byte and the user
/// payload. Empty input is [`WireError::TooShort`]; an undefined header byte is
/// [`WireError::InvalidHeader`].
#[inline]
pub fn parse_unreliable(payload: &[u8]) -> Result<(UnreliableHeader, &[u8]), WireError> {
    let (&first, rest) = payload.split_first().ok_or(WireError::TooShort)?;
    Ok((UnreliableHeader::try_from(first)?, rest))
}

/// Splits a reassembled reliable message into its header byte and payload.
/// Empty input is [`WireError::TooShort`]; an undefined header byte is
/// [`WireError::InvalidHeader`].
#[inline]
pub fn parse_reliable_message(msg: &[u8]) -> Result<(ReliableHeader, &[u8]), WireError> {
    let (&first, rest) = msg.split_first().ok_or(WireError::TooShort)?;
    Ok((ReliableHeader::try_from(first)?, rest))
}

/// Reads a Ping/Pong timestamp: `Some` only if `payload` is exactly 4 bytes
/// (little-endian `u32`).
#[inline]
pub fn parse_u32_payload(payload: &[u8]) -> Option<u32> {
    if payload.len() != 4 {
        return None;
    }
    read_u32_le(payload, 0)
}

/// Whether `buf` is a datagram a server may accept from an unknown endpoint:
/// it parses, is on the reliable channel, every KCP segment in it parses
/// (there is at least one), and some segment is a PUSH with conv 0, sn 0,
/// frg 0 and a payload whose first byte is [`ReliableHeader::Hello`]. The
/// cookie is ignored.
pub fn is_hello_datagram(buf: &[u8]) -> bool {
    let Ok(d) = Datagram::parse(buf) else {
        return false;
    };
    if d.channel != Channel::Reliable {
        return false;
    }
    let mut any = false;
    let mut hello = false;
    for item in segments(d.payload) {
        let Ok((h, payload)) = item else {
            return false;
        };
        any = true;
        if h.cmd == Command::Push
            && h.conv == 0
            && h.sn == 0
            && h.frg == 0
            && payload.first() == Some(&ReliableHeader::Hello.as_u8())
        {
            hello = true;
        }
    }
    any && hello
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::segment::SegmentHeader;
    use crate::wire::tests::hex;

    const HELLO: &str = "010000000000000000510080006800000000000000000000000100000001";
    const SERVER_REPLY: &str = "0128435cf700000000520080006800000000000000010000000000000000000000510080000c00000000000000010000000100000001";

    #[test]
    fn parse_too_short() {
        let buf = [1u8, 2, 3, 4, 5, 6];
        for n in 0..=DATAGRAM_HEADER_LEN {
            assert_eq!(Datagram::parse(&buf[..n]), Err(WireError::TooShort));
        }
        let d = Datagram::parse(&buf).unwrap();
        assert_eq!(d.channel, Channel::Reliable);
        assert_eq!(d.cookie, 0x0504_0302);
        assert_eq!(d.payload, &[6]);
    }

    #[test]
    fn parse_every_channel_byte() {
        let mut buf = [0u8, 0x11, 0x22, 0x33, 0x44, 4, 9];
        for b in 0..=255u8 {
            buf[0] = b;
            let r = Datagram::parse(&buf);
            match b {
                1 | 2 => {
                    let d = r.unwrap();
                    assert_eq!(d.channel.as_u8(), b);
                    assert_eq!(d.cookie, 0x4433_2211);
                    assert_eq!(d.payload, &[4, 9]);
                    assert_eq!(d.payload.as_ptr(), buf[5..].as_ptr());
                    assert_eq!(Channel::try_from(b), Ok(d.channel));
                }
                _ => {
                    assert_eq!(r, Err(WireError::InvalidChannel(b)));
                    assert_eq!(Channel::try_from(b), Err(WireError::InvalidChannel(b)));
                }
            }
        }
    }

    #[test]
    fn channel_display() {
        assert_eq!(Channel::Reliable.to_string(), "reliable");
        assert_eq!(Channel::Unreliable.to_string(), "unreliable");
    }

    #[test]
    fn write_header() {
        let mut buf = [0xAAu8; 8];
        assert_eq!(
            write_datagram_header(&mut buf, Channel::Unreliable, 4150018856),
            Ok(5)
        );
        assert_eq!(buf, [2, 0x28, 0x43, 0x5c, 0xf7, 0xAA, 0xAA, 0xAA]);
        for n in 0..DATAGRAM_HEADER_LEN {
            let mut b = vec![0u8; n];
            assert_eq!(
                write_datagram_header(&mut b, Channel::Reliable, 1),
                Err(WireError::BufferTooSmall {
                    needed: 5,
                    available: n
                })
            );
        }
        let mut b = [0u8; 5];
        write_datagram_header(&mut b, Channel::Reliable, 7).unwrap();
        let mut full = b.to_vec();
        full.push(4);
        let d = Datagram::parse(&full).unwrap();
        assert_eq!((d.channel, d.cookie), (Channel::Reliable, 7));
    }

    #[test]
    fn every_unreliable_header_byte() {
        assert_eq!(parse_unreliable(&[]), Err(WireError::TooShort));
        for b in 0..=255u8 {
            let buf = [b, 42, 43];
            let r = parse_unreliable(&buf);
            match b {
                4 => assert_eq!(r, Ok((UnreliableHeader::Data, &[42u8, 43][..]))),
                5 => assert_eq!(r, Ok((UnreliableHeader::Disconnect, &[42u8, 43][..]))),
                _ => assert_eq!(r, Err(WireError::InvalidHeader(b))),
            }
            if let Ok(h) = UnreliableHeader::try_from(b) {
                assert_eq!(h.as_u8(), b);
            }
        }
        assert_eq!(
            parse_unreliable(&[4]),
            Ok((UnreliableHeader::Data, &[][..]))
        );
    }

    #[test]
    fn every_reliable_header_byte() {
        assert_eq!(parse_reliable_message(&[]), Err(WireError::TooShort));
        for b in 0..=255u8 {
            let buf = [b, 7];
            let r = parse_reliable_message(&buf);
            let expect = match b {
                1 => Some(ReliableHeader::Hello),
                2 => Some(ReliableHeader::Ping),
                3 => Some(ReliableHeader::Data),
                4 => Some(ReliableHeader::Pong),
                _ => None,
            };
            match expect {
                Some(h) => {
                    assert_eq!(r, Ok((h, &[7u8][..])));
                    assert_eq!(h.as_u8(), b);
                }
                None => assert_eq!(r, Err(WireError::InvalidHeader(b))),
            }
        }
    }

    #[test]
    fn u32_payload_lengths() {
        let buf = [0x78u8, 0x56, 0x34, 0x12, 1, 2, 3, 4];
        for n in 0..=8 {
            let expect = if n == 4 { Some(0x1234_5678) } else { None };
            assert_eq!(parse_u32_payload(&buf[..n]), expect, "len {n}");
        }
    }

    #[test]
    fn hello_real_capture() {
        let buf = hex(HELLO);
        assert_eq!(buf.len(), 30);
        assert!(is_hello_datagram(&buf));
        let d = Datagram::parse(&buf).unwrap();
        assert_eq!((d.channel, d.cookie), (Channel::Reliable, 0));
        let (h, pl) = SegmentHeader::parse(d.payload).unwrap();
        assert_eq!((h.cmd, h.ts, h.wnd, h.len), (Command::Push, 104, 128, 1));
        assert_eq!(
            parse_reliable_message(pl),
            Ok((ReliableHeader::Hello, &[][..]))
        );
    }

    #[test]
    fn hello_variants() {
        let base = hex(HELLO);
        let seg = DATAGRAM_HEADER_LEN;

        // Cookie is ignored.
        let mut v = base.clone();
        v[1..5].copy_from_slice(&0xDEAD_BEEFu32.to_le_bytes());
        assert!(is_hello_datagram(&v));

        // Trailing short tail is ignored (as KCP does).
        let mut v = base.clone();
        v.extend_from_slice(&[0; 10]);
        assert!(is_hello_datagram(&v));

        // sn = 1
        let mut v = base.clone();
        v[seg + 12] = 1;
        assert!(!is_hello_datagram(&v));
        // frg = 1
        let mut v = base.clone();
        v[seg + 5] = 1;
        assert!(!is_hello_datagram(&v));
        // conv = 1
        let mut v = base.clone();
        v[seg] = 1;
        assert!(!is_hello_datagram(&v));
        // header byte 3 (Data)
        let mut v = base.clone();
        *v.last_mut().unwrap() = 3;
        assert!(!is_hello_datagram(&v));
        // cmd ACK
        let mut v = base.clone();
        v[seg + 4] = 82;
        assert!(!is_hello_datagram(&v));
        // unreliable channel
        let mut v = base.clone();
        v[0] = 2;
        assert!(!is_hello_datagram(&v));
        // invalid channel
        let mut v = base.clone();
        v[0] = 0;
        assert!(!is_hello_datagram(&v));
        // len = 0 (no header byte), still a valid segment
        let mut v = base.clone();
        v[seg + 20] = 0;
        v.pop();
        assert!(!is_hello_datagram(&v));
        // Truncated at every length.
        for n in 0..base.len() {
            assert!(!is_hello_datagram(&base[..n]), "len {n}");
        }
        // A valid Hello followed by a bad segment is rejected.
        let mut v = base.clone();
        v.extend_from_slice(&[0xFF; 24]);
        assert!(!is_hello_datagram(&v));
        // An ACK before the Hello PUSH is fine.
        let ack = SegmentHeader {
            conv: 0,
            cmd: Command::Ack,
            frg: 0,
            wnd: 128,
            ts: 0,
            sn: 0,
            una: 0,
            len: 0,
        };
        let mut v = base[..seg].to_vec();
        v.extend_from_slice(&ack.to_bytes());
        v.extend_from_slice(&base[seg..]);
        assert!(is_hello_datagram(&v));
    }

    #[test]
    fn server_reply_real_capture() {
        let buf = hex(SERVER_REPLY);
        let d = Datagram::parse(&buf).unwrap();
        assert_eq!(d.channel, Channel::Reliable);
        assert_eq!(d.cookie, 4150018856);
        let items: Vec<_> = segments(d.payload).collect();
        assert_eq!(items.len(), 2);
        let (ack, pl) = items[0].unwrap();
        assert_eq!(ack.cmd, Command::Ack);
        assert_eq!(ack.conv, 0);
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
        // The server's Hello reply also carries a conv-0, sn-0 PUSH whose
        // message is Hello, so the structural check accepts it too.
        assert!(is_hello_datagram(&buf));
    }
}
