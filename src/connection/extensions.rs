//! kcpnet's extensions to the kcp2k protocol and their wire format (`docs/PROTOCOL.md`,
//! "Extensions").
//!
//! A kcpnet client offers a set in its Hello payload (kcp2k ignores any payload after the
//! Hello header byte); a kcpnet server answers with the accepted set in its own Hello; a
//! bare Hello on either side means plain kcp2k. The kcpnet-only message headers defined here
//! are sent **only** on a connection that negotiated the extension they belong to: a kcp2k
//! V1.41 peer disconnects on a header it does not know.
//!
//! ```text
//! Hello payload (after the header byte 0x01), both directions:
//!   0  4  magic "KNET" (4B 4E 45 54)
//!   4  1  version: 1
//!   5  4  feature bits, u32 LE (client: offered; server: accepted = offered ∩ supported)
//!   9  …  options (later versions; a version-1 reader ignores everything after byte 9)
//!
//! reliable, after negotiation:
//!   0x10 SendShutdown      (half-close)        no payload
//! unreliable, after negotiation:
//!   0x10 Close             (close reasons)     cause u8, code u32 LE, len u8, message
//!   0x11 QualityReport     (quality reports)   unreliable_sent u32 LE, loss_seen u16 LE,
//!                                              [datagrams_sent u32 LE, datagram_loss u16 LE,
//!                                               datagram_samples u16 LE]
//!   0x14 Batch             (coalescing)        { len u16 LE, message } × n (`wire::batch`)
//! ```

use std::ops::{BitAnd, BitOr};

use crate::event::MAX_CLOSE_MESSAGE;
use crate::wire::datagram::DATAGRAM_HEADER_LEN;

/// The first bytes of the extension block: `"KNET"`.
pub(crate) const MAGIC: [u8; 4] = *b"KNET";
/// The version of the extension block written by this implementation.
pub(crate) const VERSION: u8 = 1;
/// Bytes of the version-1 block: magic, version, feature bits.
pub(crate) const BLOCK_LEN: usize = 9;

/// Reliable header (half-close): the sender sends no more messages; every message it sent
/// precedes this one. Payload: none (a reader ignores any).
pub(crate) const RELIABLE_SEND_SHUTDOWN: u8 = 0x10;
/// Unreliable header (quality reports), sent once per ping interval while it has something
/// new to say (`Reports::should_send`): `unreliable_sent u32 LE`
/// (unreliable messages the sender has sent so far) and `loss_seen u16 LE` (the fraction of
/// the receiver's unreliable messages the sender did not get, in units of 1/10 000;
/// [`LOSS_UNKNOWN`] if it cannot say); then, since the datagram loss estimate,
/// `datagrams_sent u32 LE` (datagrams the sender has sent on the connection so far, this
/// report excluded), `datagram_loss u16 LE` (the fraction of the receiver's datagrams the
/// sender did not get, 1/10 000 or [`LOSS_UNKNOWN`]) and `datagram_samples u16 LE` (the
/// datagrams behind that figure). Unreliable on purpose: it travels exactly like the
/// messages it counts, so a report is never late behind its own retransmission (a lost
/// report only makes the next interval longer).
pub(crate) const UNRELIABLE_QUALITY_REPORT: u8 = 0x11;
/// Payload bytes of a quality report without the datagram fields (the first version): the
/// least a reader accepts.
pub(crate) const QUALITY_REPORT_MIN_LEN: usize = 6;
/// Payload bytes of a quality report as this implementation writes it (a reader ignores any
/// after them).
pub(crate) const QUALITY_REPORT_LEN: usize = 14;
/// `loss_seen` when the sender has no estimate (nothing was sent in the interval).
pub(crate) const LOSS_UNKNOWN: u16 = 0xFFFF;
/// Unreliable header (close reasons): the connection is closing, with a cause, a code and
/// a message. Sent [`super::DISCONNECT_REPEAT`] times, instead of kcp2k's Disconnect (5).
pub(crate) const UNRELIABLE_CLOSE: u8 = 0x10;
/// Bytes of a Close datagram before its message: kcp2k header, Close header, cause, code,
/// message length.
pub(crate) const CLOSE_OVERHEAD: usize = DATAGRAM_HEADER_LEN + 1 + 1 + 4 + 1;

/// A set of kcpnet extensions: what a connection negotiated (see
/// [`crate::Server::extensions`]). Between two kcpnet peers of this version it is
/// [`Extensions::ALL`]; with a kcp2k peer (or `Config::kcpnet_extensions` off on either end)
/// it is [`Extensions::NONE`] and the connection is plain kcp2k on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Extensions(u32);

impl Extensions {
    /// No extension: plain kcp2k.
    pub const NONE: Extensions = Extensions(0);
    /// Bit 0: close reasons ([`crate::Server::disconnect_with`]; the cause of every close
    /// travels with the Disconnect).
    pub const CLOSE_REASONS: Extensions = Extensions(1 << 0);
    /// Bit 1: half-close ([`crate::Server::shutdown_send`]).
    pub const HALF_CLOSE: Extensions = Extensions(1 << 1);
    /// Bit 2: quality reports (each side tells the other, once per ping, how many
    /// unreliable messages it sent and what fraction of the other's it lost).
    pub const QUALITY_REPORTS: Extensions = Extensions(1 << 2);
    /// Bit 3: a secure session (connect token, sealed datagrams, address migration; see
    /// `docs/SECURITY.md`). Offered only by a client that has a token, in a Hello that
    /// carries it; never part of [`Extensions::ALL`].
    pub const SECURE: Extensions = Extensions(1 << 3);
    /// Bit 5: forward error correction (this end decodes data and parity shards; each end
    /// sends parity if its `Config::fec` says so). Offered and accepted by every kcpnet end
    /// built with the `fec` feature.
    pub const FEC: Extensions = Extensions(1 << 5);
    /// Bit 6: coalesced unreliable messages (this end decodes datagrams that carry several
    /// unreliable messages; each end sends them if its `Config::coalesce_unreliable` says
    /// so). Offered and accepted by every kcpnet end.
    pub const COALESCE: Extensions = Extensions(1 << 6);
    /// Bit 7: the slow keepalive. An idle connection pings every
    /// `min(3 s, timeout / 3)` (at least 1 s) instead of kcp2k's every second, its
    /// once-a-second work waits as long while idle, and the server answers an idle client's
    /// Pings with its ACK alone three times in four (a Pong the fourth time): a quarter of
    /// the idle datagrams. Offered and accepted by every kcpnet end.
    pub const SLOW_KEEPALIVE: Extensions = Extensions(1 << 7);
    /// Every extension a client without a token offers: close reasons, half-close, quality
    /// reports, coalescing, the slow keepalive, and FEC with the `fec` feature.
    #[cfg(feature = "fec")]
    pub const ALL: Extensions = Extensions(0b1110_0111);
    /// Every extension a client without a token offers: close reasons, half-close, quality
    /// reports, coalescing and the slow keepalive (and FEC with the `fec` feature).
    #[cfg(not(feature = "fec"))]
    pub const ALL: Extensions = Extensions(0b1100_0111);
    /// Bit 4, with [`Extensions::SECURE`] only: the session seals with AES-256-GCM instead of
    /// ChaCha20-Poly1305 (offered by every token client; accepted as
    /// `SecureConfig::cipher` says).
    pub const AES_GCM: Extensions = Extensions(1 << 4);
    /// Every bit this version knows, [`Extensions::SECURE`] and [`Extensions::AES_GCM`]
    /// included.
    pub(crate) const KNOWN: Extensions = Extensions(0b1111_1111);

    /// The bit set as on the wire.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// The extensions of `bits` this version knows; unknown bits are dropped.
    pub const fn from_bits_truncate(bits: u32) -> Extensions {
        Extensions(bits & Extensions::KNOWN.0)
    }

    /// Whether every extension of `other` is in `self`.
    pub const fn contains(self, other: Extensions) -> bool {
        self.0 & other.0 == other.0
    }

    /// No extension at all.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for Extensions {
    type Output = Extensions;
    fn bitor(self, rhs: Extensions) -> Extensions {
        Extensions(self.0 | rhs.0)
    }
}

impl BitAnd for Extensions {
    type Output = Extensions;
    fn bitand(self, rhs: Extensions) -> Extensions {
        Extensions(self.0 & rhs.0)
    }
}

/// Unreliable header (secure sessions): the server asks the client to answer from the
/// address a datagram came from. Payload: 8 random bytes.
pub(crate) const UNRELIABLE_PATH_CHALLENGE: u8 = 0x12;
/// Unreliable header (secure sessions): the client's answer, echoing the challenge's 8 bytes.
pub(crate) const UNRELIABLE_PATH_RESPONSE: u8 = 0x13;
/// Bytes of a path challenge's or response's payload.
pub(crate) const PATH_TOKEN_LEN: usize = 8;
/// Option type of a connect token blob in a Hello's extension block.
pub(crate) const OPTION_TOKEN: u8 = 1;

/// The version-1 extension block announcing `ext`.
pub(crate) fn hello_block(ext: Extensions) -> [u8; BLOCK_LEN] {
    let b = ext.bits().to_le_bytes();
    [
        MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], VERSION, b[0], b[1], b[2], b[3],
    ]
}

/// The extensions a Hello payload (the bytes after the header byte) announces: the known
/// bits of its block, or [`Extensions::NONE`] for a bare Hello, another magic, version 0 or
/// a block cut short. Never fails: a Hello is valid whatever follows its header byte.
pub(crate) fn parse_hello_block(payload: &[u8]) -> Extensions {
    match payload {
        [m0, m1, m2, m3, version, b0, b1, b2, b3, ..]
            if [*m0, *m1, *m2, *m3] == MAGIC && *version >= 1 =>
        {
            Extensions::from_bits_truncate(u32::from_le_bytes([*b0, *b1, *b2, *b3]))
        }
        _ => Extensions::NONE,
    }
}

/// The options after a Hello payload's version-1 block: `type u8, length u16 LE, value`
/// each. Returns the value of the first option of type `kind`, `None` if there is none or
/// the list is cut short.
pub(crate) fn hello_option(payload: &[u8], kind: u8) -> Option<&[u8]> {
    let mut rest = payload.get(BLOCK_LEN..)?;
    while rest.len() >= 3 {
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]]));
        let value = rest.get(3..3 + len)?;
        if rest[0] == kind {
            return Some(value);
        }
        rest = &rest[3 + len..];
    }
    None
}

/// Why a connection closed, as carried by a Close datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum CloseCause {
    /// No cause given: read as a plain Disconnect. Also what unknown values mean.
    Unspecified = 0,
    /// The application closed with a code and a message (`disconnect_with`).
    App = 1,
    /// The sender's endpoint shut down (`Server::shutdown`).
    Shutdown = 2,
    /// The sender saw the receiver violate the protocol; the message is its error text.
    ProtocolError = 3,
    /// The sender heard nothing from the receiver for its timeout, or its link died.
    Timeout = 4,
    /// The sender's queues choked.
    Congestion = 5,
    /// Both ends shut down their sending and everything was delivered (half-close).
    Finished = 6,
}

impl CloseCause {
    /// Reads a cause byte; values this version does not know are `Unspecified`.
    pub(crate) fn from_u8(b: u8) -> CloseCause {
        match b {
            1 => CloseCause::App,
            2 => CloseCause::Shutdown,
            3 => CloseCause::ProtocolError,
            4 => CloseCause::Timeout,
            5 => CloseCause::Congestion,
            6 => CloseCause::Finished,
            _ => CloseCause::Unspecified,
        }
    }
}

/// The bytes of a Close datagram before its message (`message_len` ≤ 255).
pub(crate) fn close_head(
    cookie: u32,
    cause: CloseCause,
    code: u32,
    message_len: usize,
) -> [u8; CLOSE_OVERHEAD] {
    let c = cookie.to_le_bytes();
    let k = code.to_le_bytes();
    [
        crate::wire::datagram::Channel::Unreliable.as_u8(),
        c[0],
        c[1],
        c[2],
        c[3],
        UNRELIABLE_CLOSE,
        cause as u8,
        k[0],
        k[1],
        k[2],
        k[3],
        message_len.min(u8::MAX as usize) as u8,
    ]
}

/// Parses the body of a Close datagram (the bytes after its header byte 0x10): cause, code
/// and message. The message must be exactly `len` bytes of UTF-8, at most
/// [`MAX_CLOSE_MESSAGE`].
pub(crate) fn parse_close(body: &[u8]) -> Result<(CloseCause, u32, &str), &'static str> {
    let [cause, k0, k1, k2, k3, len, message @ ..] = body else {
        return Err("Close datagram shorter than its 6-byte header");
    };
    let len = *len as usize;
    if len > MAX_CLOSE_MESSAGE {
        return Err("Close message longer than 128 bytes");
    }
    if message.len() != len {
        return Err("Close message length does not match the datagram");
    }
    let message = std::str::from_utf8(message).map_err(|_| "Close message is not UTF-8")?;
    Ok((
        CloseCause::from_u8(*cause),
        u32::from_le_bytes([*k0, *k1, *k2, *k3]),
        message,
    ))
}

/// What a quality report says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QualityReport {
    /// Unreliable messages the sender has sent so far.
    pub unreliable_sent: u32,
    /// The fraction of the receiver's unreliable messages the sender did not get.
    pub loss_seen: u16,
    /// The datagram fields (absent in a first-version report): datagrams the sender has
    /// sent so far, the fraction of the receiver's datagrams it did not get, and the
    /// samples behind that fraction.
    pub datagrams: Option<(u32, u16, u16)>,
}

/// The payload of a quality report.
pub(crate) fn quality_report(r: &QualityReport) -> [u8; QUALITY_REPORT_LEN] {
    let mut out = [0u8; QUALITY_REPORT_LEN];
    out[0..4].copy_from_slice(&r.unreliable_sent.to_le_bytes());
    out[4..6].copy_from_slice(&r.loss_seen.to_le_bytes());
    let (sent, loss, samples) = r.datagrams.unwrap_or((0, LOSS_UNKNOWN, 0));
    out[6..10].copy_from_slice(&sent.to_le_bytes());
    out[10..12].copy_from_slice(&loss.to_le_bytes());
    out[12..14].copy_from_slice(&samples.to_le_bytes());
    out
}

/// Reads a quality report's payload: at least [`QUALITY_REPORT_MIN_LEN`] bytes, the
/// datagram fields if all of them are there, extra bytes of later versions ignored.
pub(crate) fn parse_quality_report(payload: &[u8]) -> Option<QualityReport> {
    let u32_at =
        |i: usize| u32::from_le_bytes([payload[i], payload[i + 1], payload[i + 2], payload[i + 3]]);
    let u16_at = |i: usize| u16::from_le_bytes([payload[i], payload[i + 1]]);
    if payload.len() < QUALITY_REPORT_MIN_LEN {
        return None;
    }
    Some(QualityReport {
        unreliable_sent: u32_at(0),
        loss_seen: u16_at(4),
        datagrams: (payload.len() >= QUALITY_REPORT_LEN)
            .then(|| (u32_at(6), u16_at(10), u16_at(12))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_block_round_trips_and_ignores_what_it_does_not_know() {
        let b = hello_block(Extensions::ALL);
        assert_eq!(
            b,
            [
                0x4B,
                0x4E,
                0x45,
                0x54,
                1,
                Extensions::ALL.bits() as u8,
                0,
                0,
                0
            ]
        );
        assert_eq!(parse_hello_block(&b), Extensions::ALL);
        // A later version with more bits and options: the known bits are read.
        let later = [0x4B, 0x4E, 0x45, 0x54, 7, 0xFF, 0xFF, 0, 0, 3, 2, 0, 9, 9];
        assert_eq!(parse_hello_block(&later), Extensions::KNOWN);
        // Its options: type 3, two bytes.
        assert_eq!(hello_option(&later, 3), Some(&[9u8, 9][..]));
        assert_eq!(hello_option(&later, 1), None);
        assert_eq!(hello_option(&later[..12], 3), None);
        // A bare Hello, a short block, another magic, version 0: no extensions.
        assert_eq!(parse_hello_block(&[]), Extensions::NONE);
        assert_eq!(parse_hello_block(&b[..8]), Extensions::NONE);
        assert_eq!(
            parse_hello_block(&[b'X', 0x4E, 0x45, 0x54, 1, 7, 0, 0, 0]),
            Extensions::NONE
        );
        assert_eq!(
            parse_hello_block(&[0x4B, 0x4E, 0x45, 0x54, 0, 7, 0, 0, 0]),
            Extensions::NONE
        );
    }

    #[test]
    fn close_datagram_round_trips_and_rejects_bad_lengths() {
        let head = close_head(0xAABB_CCDD, CloseCause::App, 42, 3);
        assert_eq!(head, [2, 0xDD, 0xCC, 0xBB, 0xAA, 0x10, 1, 42, 0, 0, 0, 3]);
        let mut body = head[6..].to_vec();
        body.extend_from_slice(b"bye");
        assert_eq!(parse_close(&body), Ok((CloseCause::App, 42, "bye")));
        assert!(parse_close(&body[..body.len() - 1]).is_err());
        assert!(parse_close(&body[..3]).is_err());
        let mut extra = body.clone();
        extra.push(b'!');
        assert!(parse_close(&extra).is_err());
        let mut bad = head[6..].to_vec();
        bad.extend_from_slice(&[0xFF, 0xFE, 0xFD]);
        assert!(parse_close(&bad).is_err());
        let mut long = close_head(1, CloseCause::App, 0, 200)[6..].to_vec();
        long.extend_from_slice(&[b'a'; 200]);
        assert!(parse_close(&long).is_err());
        assert_eq!(CloseCause::from_u8(200), CloseCause::Unspecified);
    }

    #[test]
    fn quality_reports_round_trip_and_read_the_first_version() {
        let r = QualityReport {
            unreliable_sent: 0x0403_0201,
            loss_seen: 250,
            datagrams: Some((0x0807_0605, 123, 4096)),
        };
        let b = quality_report(&r);
        assert_eq!(b, [1, 2, 3, 4, 250, 0, 5, 6, 7, 8, 123, 0, 0x00, 0x10]);
        assert_eq!(parse_quality_report(&b), Some(r));
        // Later versions may append: ignored.
        let mut later = b.to_vec();
        later.extend_from_slice(&[9, 9, 9]);
        assert_eq!(parse_quality_report(&later), Some(r));
        // The first version (6 bytes), or a cut datagram field: no datagram figures.
        for n in 6..QUALITY_REPORT_LEN {
            let p = parse_quality_report(&b[..n]).unwrap();
            assert_eq!(
                (p.unreliable_sent, p.loss_seen, p.datagrams),
                (0x0403_0201, 250, None)
            );
        }
        assert_eq!(parse_quality_report(&b[..5]), None);
    }
}
