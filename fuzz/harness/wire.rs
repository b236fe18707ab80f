//! Harness of the `wire` fuzz target: every parser of `kcpnet::wire` on the same bytes,
//! each checked against the wire format written out independently here (offsets and
//! values from `docs/PROTOCOL.md`), plus encode/parse round trips.
//!
//! Shared by `fuzz/fuzz_targets/wire.rs` and the corpus replay in `tests/fuzz_corpus.rs`.

use kcpnet::wire::{
    is_hello_datagram, parse_reliable_message, parse_u32_payload, parse_unreliable, read_conv,
    segments, write_datagram_header, Channel, Command, Datagram, ReliableHeader, SegmentHeader,
    UnreliableHeader, WireError, DATAGRAM_HEADER_LEN, SEGMENT_HEADER_LEN,
};

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// One fuzz case: `data` as a datagram, as a datagram payload, as segments and as messages.
pub fn run(data: &[u8]) {
    datagram(data);
    // The payload parsers on the raw bytes too (not only behind a valid header).
    segment_run(data);
    unreliable(data);
    reliable_message(data);
    assert_eq!(parse_u32_payload(data).is_some(), data.len() == 4);
    if data.len() == 4 {
        assert_eq!(parse_u32_payload(data), Some(le32(data, 0)));
    }
    assert_eq!(read_conv(data), (data.len() >= 4).then(|| le32(data, 0)));
    assert_eq!(is_hello_datagram(data), reference_is_hello(data));
}

fn datagram(data: &[u8]) {
    match Datagram::parse(data) {
        Ok(d) => {
            assert!(data.len() > DATAGRAM_HEADER_LEN);
            assert_eq!(d.channel.as_u8(), data[0]);
            assert!(matches!(data[0], 1 | 2));
            assert_eq!(d.cookie, le32(data, 1));
            assert_eq!(d.payload, &data[DATAGRAM_HEADER_LEN..]);
            let mut head = [0u8; DATAGRAM_HEADER_LEN];
            assert_eq!(
                write_datagram_header(&mut head, d.channel, d.cookie),
                Ok(DATAGRAM_HEADER_LEN)
            );
            assert_eq!(&head[..], &data[..DATAGRAM_HEADER_LEN]);
            match d.channel {
                Channel::Reliable => segment_run(d.payload),
                Channel::Unreliable => unreliable(d.payload),
            }
        }
        Err(WireError::TooShort) => assert!(data.len() <= DATAGRAM_HEADER_LEN),
        Err(WireError::InvalidChannel(c)) => {
            assert!(data.len() > DATAGRAM_HEADER_LEN);
            assert_eq!(c, data[0]);
            assert!(!matches!(c, 1 | 2));
        }
        Err(e) => panic!("Datagram::parse: unexpected error {e:?}"),
    }
    let mut small = [0u8; DATAGRAM_HEADER_LEN - 1];
    assert!(write_datagram_header(&mut small, Channel::Reliable, 7).is_err());
}

/// The segment iterator against a by-hand walk: same headers, payloads, stop point.
fn segment_run(payload: &[u8]) {
    let mut at = 0usize;
    let mut seen = 0usize;
    for item in segments(payload) {
        seen += 1;
        assert!(
            seen <= payload.len() / SEGMENT_HEADER_LEN + 1,
            "the iterator does not stop"
        );
        let rest = &payload[at..];
        assert!(
            rest.len() >= SEGMENT_HEADER_LEN,
            "yielded from a short tail"
        );
        let len = le32(rest, 20);
        let available = rest.len() - SEGMENT_HEADER_LEN;
        match item {
            Ok((h, body)) => {
                assert!(len as usize <= available);
                assert_eq!(h.len, len);
                assert_eq!(
                    body,
                    &rest[SEGMENT_HEADER_LEN..SEGMENT_HEADER_LEN + len as usize]
                );
                assert_eq!(&h.to_bytes()[..], &rest[..SEGMENT_HEADER_LEN]);
                assert_eq!(h.cmd.as_u8(), rest[4]);
                assert_eq!(
                    (h.conv, h.frg, h.wnd, h.ts, h.sn, h.una),
                    (
                        le32(rest, 0),
                        rest[5],
                        u16::from_le_bytes([rest[6], rest[7]]),
                        le32(rest, 8),
                        le32(rest, 12),
                        le32(rest, 16)
                    )
                );
                let mut out = vec![0u8; SEGMENT_HEADER_LEN + 3];
                h.emit(&mut out).expect("emit into a large enough buffer");
                assert_eq!(&out[..SEGMENT_HEADER_LEN], &rest[..SEGMENT_HEADER_LEN]);
                assert!(h.emit(&mut out[..SEGMENT_HEADER_LEN - 1]).is_err());
                assert_eq!(SegmentHeader::parse(rest), Ok((h, body)));
                at += SEGMENT_HEADER_LEN + len as usize;
            }
            Err(WireError::BadLength {
                len: l,
                available: a,
            }) => {
                // ikcp's precedence: the length is checked before the command.
                assert_eq!((l, a), (len, available));
                assert!(len as usize > available);
                at = payload.len() + 1; // must be the last item
            }
            Err(WireError::UnknownCommand(c)) => {
                assert!(len as usize <= available);
                assert_eq!(c, rest[4]);
                assert!(!(81..=84).contains(&c));
                at = payload.len() + 1;
            }
            Err(e) => panic!("segments: unexpected error {e:?}"),
        }
    }
    if at <= payload.len() {
        // Stopped on a short tail (fewer than 24 bytes left), which ikcp ignores.
        assert!(payload.len() - at < SEGMENT_HEADER_LEN);
    }
}

fn unreliable(p: &[u8]) {
    match parse_unreliable(p) {
        Ok((h, rest)) => {
            assert_eq!(h.as_u8(), p[0]);
            assert_eq!(rest, &p[1..]);
            assert_eq!(UnreliableHeader::try_from(p[0]), Ok(h));
        }
        Err(WireError::TooShort) => assert!(p.is_empty()),
        Err(WireError::InvalidHeader(b)) => {
            assert_eq!(b, p[0]);
            assert!(!matches!(b, 4 | 5));
        }
        Err(e) => panic!("parse_unreliable: unexpected error {e:?}"),
    }
}

fn reliable_message(m: &[u8]) {
    match parse_reliable_message(m) {
        Ok((h, rest)) => {
            assert_eq!(h.as_u8(), m[0]);
            assert_eq!(rest, &m[1..]);
            assert_eq!(ReliableHeader::try_from(m[0]), Ok(h));
        }
        Err(WireError::TooShort) => assert!(m.is_empty()),
        Err(WireError::InvalidHeader(b)) => {
            assert_eq!(b, m[0]);
            assert!(!(1..=4).contains(&b));
        }
        Err(e) => panic!("parse_reliable_message: unexpected error {e:?}"),
    }
}

/// `is_hello_datagram` from the spec: more than 5 bytes, channel 1, every segment well
/// formed (at least one), and some PUSH conv 0 sn 0 frg 0 whose payload starts with 1.
fn reference_is_hello(b: &[u8]) -> bool {
    if b.len() <= DATAGRAM_HEADER_LEN || b[0] != 1 {
        return false;
    }
    let p = &b[DATAGRAM_HEADER_LEN..];
    let (mut at, mut any, mut hello) = (0usize, false, false);
    while p.len() - at >= SEGMENT_HEADER_LEN {
        let s = &p[at..];
        let len = le32(s, 20) as usize;
        if len > s.len() - SEGMENT_HEADER_LEN || !(81..=84).contains(&s[4]) {
            return false;
        }
        any = true;
        let body = &s[SEGMENT_HEADER_LEN..SEGMENT_HEADER_LEN + len];
        if s[4] == Command::Push.as_u8()
            && le32(s, 0) == 0
            && le32(s, 12) == 0
            && s[5] == 0
            && body.first() == Some(&1)
        {
            hello = true;
        }
        at += SEGMENT_HEADER_LEN + len;
    }
    any && hello
}
