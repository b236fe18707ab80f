//! Unit tests of the KCP core for edge cases the conformance vectors do not cover.
//!
//! `tests/conformance.rs` proves byte-identical behaviour against ikcp traces for ordinary
//! traffic. The tests here cover what those traces do not reach: every `input`/`recv`/`send`
//! error path and the state left behind by it, zero-length messages, the fragment limits
//! (classic and kcp2k), `send_with_header`, the reserved datagram prefix, setter clamps,
//! clock wrap-around, `check`/`is_idle`/`has_pending_output`, dead-link detection, the
//! pending-ACK cap, memory trimming and pool reuse, and robustness against hostile input.
//!
//! Tests are grouped by topic in sub-modules; the shared helpers below build segments by
//! hand with [`SegmentHeader`] or move real datagrams between two [`Kcp`] instances.

use super::*;
use crate::wire::segment::{segments, Command, SegmentHeader, SEGMENT_HEADER_LEN};

// ------------------------------------------------------------------------- helpers

const CONV: u32 = 0x1234_5678;

/// Bytes of one segment with the given command byte (any value, valid or not) and payload.
/// `len` is the payload length unless `len_override` is given.
fn raw_segment(
    conv: u32,
    cmd: u8,
    frg: u8,
    sn: u32,
    payload: &[u8],
    len_override: Option<u32>,
) -> Vec<u8> {
    let hdr = SegmentHeader {
        conv,
        cmd: Command::Push,
        frg,
        wnd: 128,
        ts: 0,
        sn,
        una: 0,
        len: len_override.unwrap_or(payload.len() as u32),
    };
    let mut v = hdr.to_bytes().to_vec();
    v[4] = cmd;
    v.extend_from_slice(payload);
    v
}

/// A well-formed PUSH segment.
fn push(conv: u32, sn: u32, frg: u8, payload: &[u8]) -> Vec<u8> {
    raw_segment(conv, Command::Push.as_u8(), frg, sn, payload, None)
}

/// A well-formed ACK segment for `sn`, echoing `ts`.
fn ack(conv: u32, sn: u32, ts: u32, una: u32) -> Vec<u8> {
    SegmentHeader {
        conv,
        cmd: Command::Ack,
        frg: 0,
        wnd: 128,
        ts,
        sn,
        una,
        len: 0,
    }
    .to_bytes()
    .to_vec()
}

/// No-delay mode with a 10 ms interval, fast resend 2 and no congestion window: data moves
/// on the first flush, which keeps the simulations short.
fn turbo(k: &mut Kcp) {
    k.set_nodelay(1, 10, 2, 1);
}

/// Updates `k` at `t` and returns the datagrams it emitted.
fn out(k: &mut Kcp, t: u32) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    k.update(t, |d| v.push(d.to_vec()));
    v
}

/// One lossless round: `a` flushes into `b`, then `b` flushes into `a`.
fn step(a: &mut Kcp, b: &mut Kcp, t: u32) {
    for d in out(a, t) {
        b.input(&d).unwrap();
    }
    for d in out(b, t) {
        a.input(&d).unwrap();
    }
}

/// Every complete message currently receivable from `k`.
fn drain(k: &mut Kcp) -> Vec<Vec<u8>> {
    let mut msgs = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    while let Ok(n) = k.recv(&mut buf) {
        msgs.push(buf[..n].to_vec());
    }
    msgs
}

/// All segments of a datagram; panics if it does not parse completely.
fn parse_all(d: &[u8]) -> Vec<(SegmentHeader, Vec<u8>)> {
    let mut it = segments(d);
    let v: Vec<_> = it
        .by_ref()
        .map(|r| {
            let (h, p) = r.expect("datagram must parse");
            (h, p.to_vec())
        })
        .collect();
    assert!(it.remainder().is_empty(), "trailing bytes in datagram");
    v
}

/// Deterministic xorshift32.
struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u32) -> u32 {
        self.next() % n
    }
}

/// A receiver that has already taken sn 0 ("a") and acked it, so its snapshot is not the
/// all-default one.
fn receiver_with_history() -> Kcp {
    let mut k = Kcp::new(CONV);
    k.update(0, |_| {});
    k.input(&push(CONV, 0, 0, b"a")).unwrap();
    k.update(100, |_| {});
    assert_eq!(drain(&mut k), vec![b"a".to_vec()]);
    k
}

// ------------------------------------------------------------------- input errors

mod input_errors {
    use super::*;

    #[test]
    fn wrong_conv_is_rejected_without_state_change() {
        let mut k = receiver_with_history();
        let before = k.snapshot();
        let err = k.input(&push(CONV + 1, 1, 0, b"x")).unwrap_err();
        assert_eq!(err, KcpError::ConvMismatch);
        assert_eq!(err.code(), -1);
        assert_eq!(k.snapshot(), before);
        assert_eq!(k.peek_size(), Err(KcpError::RecvEmpty));
    }

    #[test]
    fn shorter_than_a_header_is_rejected() {
        let mut k = receiver_with_history();
        let before = k.snapshot();
        let full = push(CONV, 1, 0, b"");
        for n in [0, 1, 4, 23] {
            let err = k.input(&full[..n]).unwrap_err();
            assert_eq!(err, KcpError::InputTooShort, "len {n}");
            assert_eq!(err.code(), -1);
        }
        assert_eq!(k.snapshot(), before);
    }

    #[test]
    fn len_past_the_end_is_truncated() {
        let mut k = receiver_with_history();
        let before = k.snapshot();
        // len says 100, 99 bytes follow.
        let d = raw_segment(CONV, 81, 0, 1, &[7u8; 99], Some(100));
        let err = k.input(&d).unwrap_err();
        assert_eq!(err, KcpError::InputTruncated);
        assert_eq!(err.code(), -2);
        // A len that does not even fit an i32.
        let d = raw_segment(CONV, 81, 0, 1, &[7u8; 8], Some(u32::MAX));
        assert_eq!(k.input(&d), Err(KcpError::InputTruncated));
        assert_eq!(k.snapshot(), before);
        assert_eq!(k.peek_size(), Err(KcpError::RecvEmpty));
    }

    #[test]
    fn unknown_command_is_rejected() {
        let mut k = receiver_with_history();
        let before = k.snapshot();
        for cmd in [0u8, 80, 85, 255] {
            let err = k
                .input(&raw_segment(CONV, cmd, 0, 1, b"zz", None))
                .unwrap_err();
            assert_eq!(err, KcpError::UnknownCommand(cmd));
            assert_eq!(err.code(), -3);
        }
        assert_eq!(k.snapshot(), before);
    }

    #[test]
    fn error_precedence_follows_ikcp() {
        let mut k = receiver_with_history();
        // conv is checked before len and cmd.
        let d = raw_segment(CONV ^ 1, 99, 0, 1, b"", Some(50));
        assert_eq!(k.input(&d), Err(KcpError::ConvMismatch));
        // len is checked before cmd.
        let d = raw_segment(CONV, 99, 0, 1, b"", Some(50));
        assert_eq!(k.input(&d), Err(KcpError::InputTruncated));
    }

    #[test]
    fn short_junk_after_a_valid_segment_is_ignored() {
        let mut k = Kcp::new(CONV);
        k.update(0, |_| {});
        let mut d = push(CONV, 0, 0, b"hello");
        d.extend_from_slice(&[0xAB; 10]);
        assert_eq!(k.input(&d), Ok(()));
        assert_eq!(k.snapshot().ackcount, 1);
        assert_eq!(drain(&mut k), vec![b"hello".to_vec()]);
    }

    #[test]
    fn bad_second_segment_keeps_the_first_processed() {
        let mut k = Kcp::new(CONV);
        k.update(0, |_| {});
        let mut d = push(CONV, 0, 0, b"first");
        d.extend_from_slice(&raw_segment(CONV, 200, 0, 1, b"second", None));
        let err = k.input(&d).unwrap_err();
        assert_eq!(err, KcpError::UnknownCommand(200));
        assert_eq!(err.code(), -3);
        let s = k.snapshot();
        assert_eq!(s.ackcount, 1);
        assert_eq!(s.rcv_nxt, 1);
        assert!(k.has_pending_output());
        assert_eq!(drain(&mut k), vec![b"first".to_vec()]);
        // The pending ACK for sn 0 goes out at the next flush.
        let dgrams = out(&mut k, 100);
        let segs: Vec<_> = dgrams.iter().flat_map(|d| parse_all(d)).collect();
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].0.cmd, Command::Ack);
        assert_eq!(segs[0].0.sn, 0);
    }

    #[test]
    fn wrong_conv_in_second_segment_keeps_the_first_processed() {
        let mut k = Kcp::new(CONV);
        k.update(0, |_| {});
        let mut d = push(CONV, 0, 0, b"one");
        d.extend_from_slice(&push(CONV + 7, 1, 0, b"two"));
        assert_eq!(k.input(&d), Err(KcpError::ConvMismatch));
        assert_eq!(k.snapshot().ackcount, 1);
        assert_eq!(drain(&mut k), vec![b"one".to_vec()]);
    }

    /// A sender with sn 0 in flight (sent at t=100, cwnd 1).
    fn sender_in_flight() -> Kcp {
        let mut k = Kcp::new(CONV);
        k.update(0, |_| {});
        k.send(b"data").unwrap();
        let sent = out(&mut k, 100);
        assert_eq!(sent.len(), 1);
        assert_eq!(k.snapshot().nsnd_buf, 1);
        assert_eq!(k.snapshot().cwnd, 1);
        k
    }

    #[test]
    fn error_skips_the_post_loop_congestion_update() {
        // Control: a clean ACK advances snd_una and grows cwnd (slow start).
        let mut ok = sender_in_flight();
        ok.input(&ack(CONV, 0, 100, 1)).unwrap();
        assert_eq!(ok.snapshot().snd_una, 1);
        assert_eq!(ok.snapshot().cwnd, 2);

        // Same ACK followed by a bad segment: the ACK is applied, cwnd is not grown.
        let mut bad = sender_in_flight();
        let mut d = ack(CONV, 0, 100, 1);
        d.extend_from_slice(&raw_segment(CONV, 1, 0, 0, b"", None));
        assert_eq!(bad.input(&d), Err(KcpError::UnknownCommand(1)));
        let s = bad.snapshot();
        assert_eq!(s.snd_una, 1);
        assert_eq!(s.nsnd_buf, 0);
        assert_eq!(s.cwnd, 1);
    }
}

// ------------------------------------------------------------------------ receive

mod receive {
    use super::*;

    #[test]
    fn buffer_too_small_leaves_the_message_queued() {
        let mut k = Kcp::new(CONV);
        k.update(0, |_| {});
        let msg: Vec<u8> = (0..100u8).collect();
        k.input(&push(CONV, 0, 0, &msg)).unwrap();
        let before = k.snapshot();
        let mut small = [0u8; 99];
        let err = k.recv(&mut small).unwrap_err();
        assert_eq!(err, KcpError::BufferTooSmall { needed: 100 });
        assert_eq!(err.code(), -3);
        assert_eq!(k.snapshot(), before);
        assert_eq!(k.peek_size(), Ok(100));
        let mut big = [0u8; 100];
        assert_eq!(k.recv(&mut big), Ok(100));
        assert_eq!(&big[..], &msg[..]);
        assert_eq!(k.recv(&mut big), Err(KcpError::RecvEmpty));
    }

    #[test]
    fn buffer_too_small_for_a_fragmented_message() {
        let mut k = Kcp::new(CONV);
        k.update(0, |_| {});
        let mut d = push(CONV, 0, 1, b"abc");
        d.extend_from_slice(&push(CONV, 1, 0, b"de"));
        k.input(&d).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(
            k.recv(&mut buf),
            Err(KcpError::BufferTooSmall { needed: 5 })
        );
        assert_eq!(k.snapshot().nrcv_que, 2);
        let mut buf = [0u8; 5];
        assert_eq!(k.recv(&mut buf), Ok(5));
        assert_eq!(&buf, b"abcde");
    }

    #[test]
    fn empty_and_incomplete_queues() {
        let mut k = Kcp::new(CONV);
        k.update(0, |_| {});
        let mut buf = [0u8; 64];
        assert_eq!(k.peek_size(), Err(KcpError::RecvEmpty));
        assert_eq!(k.recv(&mut buf), Err(KcpError::RecvEmpty));
        assert_eq!(KcpError::RecvEmpty.code(), -1);

        // Out of order: sn 1 waits in rcv_buf, the queue is still empty.
        k.input(&push(CONV, 1, 1, b"bb")).unwrap();
        assert_eq!(k.peek_size(), Err(KcpError::RecvEmpty));

        // sn 0 completes two of three fragments: incomplete.
        k.input(&push(CONV, 0, 2, b"aa")).unwrap();
        assert_eq!(k.snapshot().nrcv_que, 2);
        assert_eq!(k.peek_size(), Err(KcpError::RecvIncomplete));
        let err = k.recv(&mut buf).unwrap_err();
        assert_eq!(err, KcpError::RecvIncomplete);
        assert_eq!(err.code(), -2);
        assert_eq!(k.snapshot().nrcv_que, 2);

        k.input(&push(CONV, 2, 0, b"c")).unwrap();
        assert_eq!(k.peek_size(), Ok(5));
        assert_eq!(k.recv(&mut buf), Ok(5));
        assert_eq!(&buf[..5], b"aabbc");
    }

    #[test]
    fn zero_length_message_round_trips_in_message_mode() {
        let mut a = Kcp::new(CONV);
        let mut b = Kcp::new(CONV);
        turbo(&mut a);
        turbo(&mut b);
        assert_eq!(a.send(&[]), Ok(0));
        assert_eq!(a.wait_snd(), 1);
        assert_eq!(a.send(b"x"), Ok(1));
        assert_eq!(a.send(&[]), Ok(0));
        assert_eq!(a.wait_snd(), 3);

        let dgrams = out(&mut a, 0);
        let segs: Vec<_> = dgrams.iter().flat_map(|d| parse_all(d)).collect();
        let lens: Vec<u32> = segs.iter().map(|(h, _)| h.len).collect();
        assert_eq!(lens, vec![0, 1, 0]);
        assert!(segs
            .iter()
            .all(|(h, _)| h.cmd == Command::Push && h.frg == 0));
        for d in &dgrams {
            b.input(d).unwrap();
        }
        assert_eq!(b.peek_size(), Ok(0));
        assert_eq!(b.recv(&mut []), Ok(0));
        let mut one = [0u8; 1];
        assert_eq!(b.recv(&mut one), Ok(1));
        assert_eq!(b.recv(&mut []), Ok(0));
        assert_eq!(b.recv(&mut one), Err(KcpError::RecvEmpty));
    }

    #[test]
    fn zero_length_send_queues_nothing_in_stream_mode() {
        let mut k = Kcp::new(CONV);
        k.set_stream(true);
        assert_eq!(k.send(&[]), Ok(0));
        assert_eq!(k.wait_snd(), 0);
        assert_eq!(k.send_with_header(&[], &[]), Ok(0));
        assert_eq!(k.wait_snd(), 0);
        k.send(b"ab").unwrap();
        assert_eq!(k.send(&[]), Ok(0));
        assert_eq!(k.wait_snd(), 1);
    }
}

// ---------------------------------------------------------------- fragment limits

mod fragments {
    use super::*;

    #[test]
    fn classic_limit_is_128_fragments_whatever_the_window() {
        for rcv in [0, 4096] {
            let mut k = Kcp::new(CONV);
            k.set_wndsize(0, rcv);
            let mss = k.mss() as usize;
            assert_eq!(k.max_message_size(), 127 * mss);
            let err = k.send(&vec![0u8; 128 * mss]).unwrap_err();
            assert_eq!(
                err,
                KcpError::TooManyFragments {
                    count: 128,
                    limit: 128
                }
            );
            assert_eq!(err.code(), -2);
            assert_eq!(k.send(&vec![0u8; 127 * mss + 1]), Err(err));
            assert_eq!(k.wait_snd(), 0);
            assert_eq!(k.send(&vec![0u8; 127 * mss]), Ok(127 * mss));
            assert_eq!(k.wait_snd(), 127);
        }
    }

    #[test]
    fn kcp2k_limit_follows_the_receive_window_up_to_255() {
        let mut k = Kcp::new(CONV);
        k.set_fragment_limit(FragmentLimit::Kcp2k);
        k.set_wndsize(0, 4096);
        let mss = k.mss() as usize;
        assert_eq!(k.max_message_size(), 255 * mss);
        assert_eq!(
            k.send(&vec![0u8; 255 * mss + 1]),
            Err(KcpError::TooManyFragments {
                count: 256,
                limit: 256
            })
        );
        assert_eq!(k.wait_snd(), 0);
        assert_eq!(k.send(&vec![0u8; 255 * mss]), Ok(255 * mss));
        assert_eq!(k.wait_snd(), 255);

        let mut k = Kcp::new(CONV);
        k.set_fragment_limit(FragmentLimit::Kcp2k);
        assert_eq!(k.rcv_wnd(), 128);
        assert_eq!(k.max_message_size(), 127 * mss);
        assert_eq!(
            k.send(&vec![0u8; 128 * mss]),
            Err(KcpError::TooManyFragments {
                count: 128,
                limit: 128
            })
        );
        assert_eq!(k.send(&vec![0u8; 127 * mss]), Ok(127 * mss));

        // An intermediate window: limit = rcv_wnd.
        let mut k = Kcp::new(CONV);
        k.set_fragment_limit(FragmentLimit::Kcp2k);
        k.set_wndsize(0, 200);
        assert_eq!(k.max_message_size(), 199 * mss);
        assert!(k.send(&vec![0u8; 199 * mss + 1]).is_err());
        assert!(k.send(&vec![0u8; 199 * mss]).is_ok());
    }

    #[test]
    fn max_message_size_tracks_the_mtu() {
        let mut k = Kcp::new(CONV);
        k.set_mtu(200).unwrap();
        assert_eq!(k.max_message_size(), 127 * 176);
        assert!(k.send(&vec![1u8; k.max_message_size()]).is_ok());
        assert!(k.send(&vec![1u8; k.max_message_size() + 1]).is_err());
    }

    #[test]
    fn message_of_255_fragments_round_trips() {
        let mut a = Kcp::new(CONV);
        let mut b = Kcp::new(CONV);
        for k in [&mut a, &mut b] {
            turbo(k);
            k.set_fragment_limit(FragmentLimit::Kcp2k);
            k.set_wndsize(512, 4096);
        }
        let mss = a.mss() as usize;
        let msg: Vec<u8> = (0..255 * mss).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(a.send(&msg), Ok(msg.len()));

        let mut frg_by_sn = vec![None; 255];
        let mut got = Vec::new();
        for tick in 0..200u32 {
            let t = tick * 10;
            for d in out(&mut a, t) {
                for (h, p) in parse_all(&d) {
                    if h.cmd == Command::Push {
                        assert_eq!(p.len(), mss);
                        let prev = frg_by_sn[h.sn as usize].replace(h.frg);
                        assert!(prev.is_none() || prev == Some(h.frg));
                    }
                }
                b.input(&d).unwrap();
            }
            for d in out(&mut b, t) {
                a.input(&d).unwrap();
            }
            got.extend(drain(&mut b));
            if !got.is_empty() && a.wait_snd() == 0 {
                break;
            }
        }
        let frgs: Vec<u8> = frg_by_sn.iter().map(|f| f.expect("sn sent")).collect();
        let expected: Vec<u8> = (0..=254u8).rev().collect();
        assert_eq!(frgs, expected);
        assert_eq!(got.len(), 1);
        assert!(got[0] == msg, "content differs");
        assert_eq!(a.wait_snd(), 0);
    }
}

// ----------------------------------------------------------------- send variants

mod send_variants {
    use super::*;

    /// First-flush output of a fresh instance after `queue` ran on it.
    fn wire_of(stream: bool, queue: impl FnOnce(&mut Kcp)) -> Vec<Vec<u8>> {
        let mut k = Kcp::new(CONV);
        turbo(&mut k);
        k.set_wndsize(256, 0);
        k.set_stream(stream);
        queue(&mut k);
        out(&mut k, 0)
    }

    #[test]
    fn send_with_header_matches_send_of_the_concatenation() {
        let mss = Kcp::new(CONV).mss() as usize;
        for total in [1, 2, mss - 1, mss, mss + 1, 2 * mss, 3 * mss - 1, 3 * mss] {
            let data: Vec<u8> = (0..total - 1).map(|i| (i % 253) as u8).collect();
            let mut joined = vec![3u8];
            joined.extend_from_slice(&data);
            for stream in [false, true] {
                let mut r1 = None;
                let mut r2 = None;
                let w1 = wire_of(stream, |k| r1 = Some(k.send_with_header(&[3], &data)));
                let w2 = wire_of(stream, |k| r2 = Some(k.send(&joined)));
                assert_eq!(r1, Some(Ok(total)));
                assert_eq!(r1, r2);
                assert!(w1 == w2, "total {total} stream {stream}: wire differs");
                let payload: usize = w1
                    .iter()
                    .flat_map(|d| parse_all(d))
                    .map(|(_, p)| p.len())
                    .sum();
                assert_eq!(payload, total);
            }
        }
    }

    #[test]
    fn send_with_header_appends_like_send_in_stream_mode() {
        let mss = Kcp::new(CONV).mss() as usize;
        // Message sizes (header byte included) chosen so that the header alone fills the last
        // queued segment, or the header fits and the data straddles the boundary, or the
        // last segment is already full.
        let cases: Vec<Vec<usize>> = vec![
            vec![mss - 1, 10],
            vec![mss - 1, mss + 5],
            vec![10, mss - 5],
            vec![10, 2 * mss],
            vec![mss, 7],
            vec![1, 1, 1, mss],
        ];
        for sizes in cases {
            let msgs: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(m, &n)| (0..n - 1).map(|i| (i + 31 * m) as u8).collect())
                .collect();
            let mut r1 = Vec::new();
            let mut r2 = Vec::new();
            let w1 = wire_of(true, |k| {
                for m in &msgs {
                    r1.push(k.send_with_header(&[3], m));
                }
            });
            let w2 = wire_of(true, |k| {
                for m in &msgs {
                    let mut j = vec![3u8];
                    j.extend_from_slice(m);
                    r2.push(k.send(&j));
                }
            });
            assert_eq!(r1, r2, "sizes {sizes:?}");
            assert!(w1 == w2, "sizes {sizes:?}: wire differs");
            let segs: Vec<_> = w1.iter().flat_map(|d| parse_all(d)).collect();
            let total: usize = sizes.iter().sum();
            assert_eq!(segs.len(), total.div_ceil(mss), "sizes {sizes:?}");
            assert!(segs.iter().all(|(h, _)| h.frg == 0));
        }
    }
}

// ------------------------------------------------------------- reserved prefix

mod reserved {
    use super::*;

    #[test]
    fn reserved_prefix_is_left_to_the_caller() {
        const R: usize = 5;
        const MARK: [u8; R] = [0xEE, 0xDD, 0xCC, 0xBB, 0xAA];
        let mtu = 200usize;
        let mut a = Kcp::new(CONV);
        let mut b = Kcp::new(CONV);
        for k in [&mut a, &mut b] {
            turbo(k);
            k.set_mtu(mtu as u32).unwrap();
        }
        a.set_reserved(R);
        let mss = a.mss() as usize;

        // Full-size, small and multi-fragment messages in both directions so that `a` emits
        // data, ACKs, and mixed datagrams.
        let mut sent = Vec::new();
        for i in 0..30usize {
            let len = [mss, 3, 2 * mss + 9, 60][i % 4];
            let m: Vec<u8> = (0..len).map(|j| (i * 13 + j) as u8).collect();
            a.send(&m).unwrap();
            b.send(&m).unwrap();
            sent.push(m);
        }

        let mut got_b = Vec::new();
        let mut got_a = Vec::new();
        let mut max_len = 0;
        let mut acks_seen = 0;
        for tick in 0..300u32 {
            let t = tick * 10;
            let mut from_a = Vec::new();
            a.update(t, |d| {
                assert!(d.len() > R + SEGMENT_HEADER_LEN - 1);
                assert!(d.len() <= mtu + R, "datagram of {} bytes", d.len());
                d[..R].copy_from_slice(&MARK);
                from_a.push(d.to_vec());
            });
            for d in &from_a {
                assert_eq!(d[..R], MARK);
                max_len = max_len.max(d.len());
                let segs = parse_all(&d[R..]);
                assert!(!segs.is_empty());
                acks_seen += segs.iter().filter(|(h, _)| h.cmd == Command::Ack).count();
                assert!(segs.iter().all(|(h, _)| h.conv == CONV));
                b.input(&d[R..]).unwrap();
            }
            for d in out(&mut b, t) {
                assert!(d.len() <= mtu);
                a.input(&d).unwrap();
            }
            got_a.extend(drain(&mut a));
            got_b.extend(drain(&mut b));
            if got_a.len() == sent.len() && got_b.len() == sent.len() {
                break;
            }
        }
        assert!(got_b == sent, "b received different messages");
        assert!(got_a == sent, "a received different messages");
        assert!(acks_seen > 0);
        // A full-mss segment fills the datagram up to mtu + reserved.
        assert_eq!(max_len, mtu + R);
    }
}

// ------------------------------------------------------------------ settings

mod settings {
    use super::*;

    #[test]
    fn mtu_minimum_is_50() {
        let mut k = Kcp::new(CONV);
        let err = k.set_mtu(49).unwrap_err();
        assert_eq!(err, KcpError::InvalidMtu(49));
        assert_eq!(err.code(), -1);
        assert_eq!(k.mtu(), 1400);
        assert_eq!(k.mss(), 1376);
        assert_eq!(k.set_mtu(0), Err(KcpError::InvalidMtu(0)));
        assert_eq!(k.set_mtu(50), Ok(()));
        assert_eq!(k.mtu(), 50);
        assert_eq!(k.mss(), 26);
        // 26 bytes are one fragment, 27 are two.
        k.send(&[0u8; 26]).unwrap();
        assert_eq!(k.wait_snd(), 1);
        k.send(&[0u8; 27]).unwrap();
        assert_eq!(k.wait_snd(), 3);
    }

    #[test]
    fn interval_is_clamped() {
        let mut k = Kcp::new(CONV);
        assert_eq!(k.interval(), 100);
        k.set_nodelay(-1, 1, -1, -1);
        assert_eq!(k.interval(), 10);
        k.set_nodelay(-1, 0, -1, -1);
        assert_eq!(k.interval(), 10);
        k.set_nodelay(-1, 99_999, -1, -1);
        assert_eq!(k.interval(), 5000);
        k.set_nodelay(-1, -1, -1, -1);
        assert_eq!(k.interval(), 5000);
        k.set_nodelay(-1, 37, -1, -1);
        assert_eq!(k.interval(), 37);
    }

    #[test]
    fn nodelay_negative_arguments_leave_settings_alone() {
        let mut k = Kcp::new(CONV);
        turbo(&mut k);
        k.set_nodelay(-1, -1, -1, -1);
        // nocwnd is still on: data goes out on the very first flush (cwnd 0 otherwise).
        k.send(b"x").unwrap();
        let d = out(&mut k, 0);
        assert_eq!(d.len(), 1);
        assert_eq!(k.interval(), 10);
    }

    #[test]
    fn receive_window_has_a_floor_of_128() {
        let mut k = Kcp::new(CONV);
        k.set_wndsize(0, 16);
        assert_eq!(k.rcv_wnd(), 128);
        assert_eq!(k.snd_wnd(), 32);
        k.set_wndsize(64, 0);
        assert_eq!(k.snd_wnd(), 64);
        assert_eq!(k.rcv_wnd(), 128);
        k.set_wndsize(0, 300);
        assert_eq!(k.rcv_wnd(), 300);
        k.set_wndsize(0, 0);
        assert_eq!(k.rcv_wnd(), 300);
    }
}

// ----------------------------------------------------------------- time and timers

mod timing {
    use super::*;

    /// Sends 200 messages from `a` to `b` with the clock starting 500 ms before it wraps,
    /// dropping every `drop_every`-th datagram from `a` (0 = none). Checks in-order delivery
    /// and returns the sender.
    fn wrap_exchange(drop_every: u32) -> Kcp {
        let start = u32::MAX - 500;
        let mut a = Kcp::new(CONV);
        let mut b = Kcp::new(CONV);
        turbo(&mut a);
        turbo(&mut b);
        let total = 200u32;
        let mut next = 0u32;
        let mut got: Vec<u32> = Vec::new();
        let mut got_at_wrap = None;
        let mut buf = [0u8; 256];
        let mut n_ab = 0u32;
        let mut back: Vec<Vec<u8>> = Vec::new();
        for tick in 0..3000u32 {
            let t = start.wrapping_add(tick * 10);
            if t < start && got_at_wrap.is_none() {
                got_at_wrap = Some(got.len());
            }
            for _ in 0..2 {
                if next < total {
                    let mut m = next.to_le_bytes().to_vec();
                    m.resize(4 + (next as usize % 50), next as u8);
                    a.send(&m).unwrap();
                    next += 1;
                }
            }
            for d in out(&mut a, t) {
                n_ab += 1;
                if drop_every == 0 || !n_ab.is_multiple_of(drop_every) {
                    b.input(&d).unwrap();
                }
            }
            // b's datagrams reach a one tick later, so RTT samples are 10 ms, not 0.
            for d in back.drain(..) {
                a.input(&d).unwrap();
            }
            back = out(&mut b, t);
            while let Ok(n) = b.recv(&mut buf) {
                let id = u32::from_le_bytes(buf[..4].try_into().unwrap());
                assert_eq!(n, 4 + (id as usize % 50));
                assert!(buf[4..n].iter().all(|&x| x == id as u8));
                got.push(id);
            }
            if got.len() == total as usize && a.wait_snd() == 0 {
                break;
            }
        }
        assert_eq!(got, (0..total).collect::<Vec<_>>());
        assert_eq!(a.wait_snd(), 0);
        let at_wrap = got_at_wrap.expect("clock wrapped");
        assert!(
            at_wrap > 0 && at_wrap < total as usize,
            "at wrap: {at_wrap}"
        );
        // The RTT estimate survived the wrap (a bad time_diff gives ~4e9 ms, clamped 60 s).
        assert!(a.srtt() >= 10 && a.srtt() < 200, "srtt {}", a.srtt());
        assert!(a.rto() < 1000, "rto {}", a.rto());
        assert!(!a.is_dead());
        a
    }

    #[test]
    fn clock_wrap_delivers_everything_in_order() {
        // Loss makes retransmission timers straddle the wrap too.
        let a = wrap_exchange(5);
        assert!(
            a.snapshot().xmit > 0,
            "the loss was never repaired by timeout"
        );
    }

    #[test]
    fn clock_wrap_causes_no_spurious_retransmission() {
        // Lossless: a resend deadline computed across the wrap must not look overdue.
        let a = wrap_exchange(0);
        assert_eq!(a.snapshot().xmit, 0);
        assert_eq!(a.fast_retransmits(), 0);
    }

    #[test]
    fn check_schedule() {
        let mut k = Kcp::new(CONV);
        assert_eq!(k.check(12_345), 12_345);
        assert_eq!(k.check(0), 0);
        k.update(1000, |_| {});
        let before = k.snapshot();
        assert_eq!(k.check(1000), 1100);
        assert_eq!(k.check(1050), 1100);
        assert_eq!(k.check(1100), 1100);
        assert_eq!(k.check(1234), 1234);
        // check() changes nothing.
        assert_eq!(k.snapshot(), before);

        // Across the wrap.
        let mut k = Kcp::new(CONV);
        k.update(u32::MAX - 20, |_| {});
        assert_eq!(k.check(u32::MAX - 20), 79);
        assert_eq!(k.check(u32::MAX), 79);
        assert_eq!(k.check(79), 79);
    }

    #[test]
    fn check_honours_an_earlier_retransmission() {
        let mut k = Kcp::new(CONV);
        k.set_nodelay(1, 5000, 0, 1);
        k.send(b"x").unwrap();
        assert_eq!(out(&mut k, 0).len(), 1);
        // resendts = 0 + rx_rto (200), sooner than the next flush at 5000.
        assert_eq!(k.check(0), 200);
        assert_eq!(k.check(150), 200);
        assert_eq!(k.check(200), 200);
        assert_eq!(k.check(201), 201);
    }

    #[test]
    fn idle_and_pending_output() {
        let mut k = Kcp::new(CONV);
        assert!(!k.has_pending_output(), "nothing before the first update");
        k.update(0, |_| {});
        assert!(k.is_idle());
        assert!(!k.has_pending_output());

        // A PUSH leaves an ACK pending.
        k.input(&push(CONV, 0, 0, b"p")).unwrap();
        assert!(k.has_pending_output());
        assert!(!k.is_idle());
        assert_eq!(out(&mut k, 100).len(), 1);
        assert!(!k.has_pending_output());
        assert!(k.is_idle());

        // Queued data.
        k.send(b"q").unwrap();
        assert!(!k.is_idle());
        assert!(k.has_pending_output());
        out(&mut k, 200);
        // In flight: still not idle, nothing new to send.
        assert_eq!(k.snapshot().nsnd_buf, 1);
        assert!(!k.is_idle());
        assert!(!k.has_pending_output());
        k.input(&ack(CONV, 0, 200, 1)).unwrap();
        assert!(k.is_idle());
    }

    #[test]
    fn zero_remote_window_is_not_idle() {
        let mut k = Kcp::new(CONV);
        k.update(0, |_| {});
        let mut d = ack(CONV, 5, 0, 0);
        d[6] = 0;
        d[7] = 0;
        k.input(&d).unwrap();
        assert_eq!(k.snapshot().rmt_wnd, 0);
        assert!(!k.is_idle());
    }

    #[test]
    fn dead_link_after_n_transmissions() {
        let mut k = Kcp::new(CONV);
        k.set_dead_link(5);
        assert_eq!(k.dead_link(), 5);
        k.send(b"lost").unwrap();
        let mut xmits = 0;
        let mut dead_at = None;
        for tick in 0..2000u32 {
            for d in out(&mut k, tick * 10) {
                xmits += parse_all(&d)
                    .iter()
                    .filter(|(h, _)| h.cmd == Command::Push && h.sn == 0)
                    .count();
            }
            if xmits < 5 {
                assert!(!k.is_dead(), "dead after {xmits} transmissions");
            } else if dead_at.is_none() {
                assert_eq!(xmits, 5);
                assert!(k.is_dead());
                assert_eq!(k.snapshot().state, u32::MAX);
                dead_at = Some(tick);
            }
            if xmits == 6 {
                break;
            }
        }
        assert!(dead_at.is_some(), "never declared dead");
        // KCP keeps retransmitting after declaring the link dead.
        assert_eq!(xmits, 6);
        assert!(k.is_dead());
    }
}

// ------------------------------------------------------------------- ACK cap

mod ack_cap {
    use super::*;

    #[test]
    fn ack_list_is_capped() {
        let mut k = Kcp::new(CONV);
        k.set_ack_limit(4);
        k.update(0, |_| {});
        let mut d = Vec::new();
        for sn in 0..10u32 {
            d.extend_from_slice(&push(CONV, sn, 0, &[sn as u8]));
        }
        k.input(&d).unwrap();
        assert_eq!(k.snapshot().ackcount, 4);
        assert_eq!(k.acks_dropped(), 6);
        // The data itself is not dropped.
        let msgs = drain(&mut k);
        assert_eq!(msgs.len(), 10);
        // Only the first four ACKs go out; una covers the rest.
        let segs: Vec<_> = out(&mut k, 100).iter().flat_map(|d| parse_all(d)).collect();
        let sns: Vec<u32> = segs.iter().map(|(h, _)| h.sn).collect();
        assert_eq!(sns, vec![0, 1, 2, 3]);
        assert!(segs
            .iter()
            .all(|(h, _)| h.cmd == Command::Ack && h.una == 10));
    }

    #[test]
    fn ack_limit_floor_is_one() {
        let mut k = Kcp::new(CONV);
        k.set_ack_limit(0);
        k.update(0, |_| {});
        let mut d = push(CONV, 0, 0, b"a");
        d.extend_from_slice(&push(CONV, 1, 0, b"b"));
        k.input(&d).unwrap();
        assert_eq!(k.snapshot().ackcount, 1);
        assert_eq!(k.acks_dropped(), 1);
    }
}

// -------------------------------------------------------------------- memory

mod memory {
    use super::*;

    #[test]
    fn trim_memory_releases_a_burst() {
        let mut a = Kcp::new(CONV);
        let mut b = Kcp::new(CONV);
        turbo(&mut a);
        turbo(&mut b);
        a.set_wndsize(128, 0);
        for i in 0..300u32 {
            a.send(&vec![i as u8; 1000]).unwrap();
        }
        let mut n = 0;
        for tick in 0..500u32 {
            step(&mut a, &mut b, tick * 10);
            n += drain(&mut b).len();
            if n == 300 && a.wait_snd() == 0 {
                break;
            }
        }
        assert_eq!(n, 300);
        step(&mut a, &mut b, 10_000);
        assert!(a.is_idle() && b.is_idle());

        for k in [&mut a, &mut b] {
            let before = k.heap_bytes();
            k.trim_memory(0);
            let after = k.heap_bytes();
            assert!(after < before, "{after} !< {before}");
            // What stays is the output buffer.
            assert!(after <= 2 * (k.mtu() as usize), "{after} bytes after trim");
        }
        // Still works after trimming.
        a.send(b"again").unwrap();
        step(&mut a, &mut b, 10_010);
        assert_eq!(drain(&mut b), vec![b"again".to_vec()]);
    }

    #[test]
    fn steady_traffic_does_not_grow_the_heap() {
        let mut a = Kcp::new(CONV);
        let mut b = Kcp::new(CONV);
        turbo(&mut a);
        turbo(&mut b);
        let mut t = 0u32;
        let mut run = |a: &mut Kcp, b: &mut Kcp, count: u32| {
            for i in 0..count {
                a.send(&[i as u8; 40]).unwrap();
                b.send(&[i as u8; 20]).unwrap();
                step(a, b, t);
                t += 10;
                assert_eq!(drain(b).len(), 1);
                assert_eq!(drain(a).len(), 1);
            }
            // Settle: everything acked.
            for _ in 0..5 {
                step(a, b, t);
                t += 10;
            }
            assert!(a.is_idle() && b.is_idle());
            a.heap_bytes() + b.heap_bytes()
        };
        let warm = run(&mut a, &mut b, 100);
        let steady = run(&mut a, &mut b, 1000);
        assert!(steady <= warm, "heap grew from {warm} to {steady}");
    }
}

// --------------------------------------------------------------- robustness

mod robustness {
    use super::*;

    /// Real datagrams of a conversation (both directions), for mutation.
    fn corpus() -> Vec<Vec<u8>> {
        let mut a = Kcp::new(CONV);
        let mut b = Kcp::new(CONV);
        turbo(&mut a);
        turbo(&mut b);
        let mut all = Vec::new();
        for tick in 0..60u32 {
            if tick < 40 {
                a.send(&vec![tick as u8; (tick as usize * 97) % 3000])
                    .unwrap();
                b.send(&[tick as u8; 9]).unwrap();
            }
            let t = tick * 10;
            for d in out(&mut a, t) {
                b.input(&d).unwrap();
                all.push(d);
            }
            for d in out(&mut b, t) {
                a.input(&d).unwrap();
                all.push(d);
            }
            drain(&mut a);
            drain(&mut b);
        }
        assert!(all.len() > 50);
        all
    }

    /// ikcp bounds `rcv_queue` and `rcv_buf` by `rcv_wnd` each, not their sum: a message
    /// whose first fragment claims more fragments than the window holds can never be
    /// reassembled, fills `rcv_queue`, and `rcv_buf` then fills behind it. Memory stays at
    /// `2 * rcv_wnd` segments and nothing beyond the window is stored or acked.
    #[test]
    fn receive_queues_are_each_bounded_by_the_window() {
        let mut k = Kcp::new(CONV);
        k.update(0, |_| {});
        let wnd = k.rcv_wnd();
        // Fragments 200, 199, ... (a well-formed countdown, just too long).
        let mut d = push(CONV, 0, 200, b"head");
        for sn in 1..2 * wnd {
            d.extend_from_slice(&push(CONV, sn, 200u8.saturating_sub(sn as u8), b"x"));
        }
        k.input(&d).unwrap();
        let s = k.snapshot();
        assert_eq!(s.nrcv_que, wnd);
        assert_eq!(s.nrcv_buf, wnd);
        assert_eq!(s.ackcount, 2 * wnd);
        assert_eq!(k.peek_size(), Err(KcpError::RecvIncomplete));
        assert!(k.is_recv_stalled());
        // Beyond rcv_nxt + rcv_wnd: neither stored nor acked.
        k.input(&push(CONV, 2 * wnd, 0, b"y")).unwrap();
        let s = k.snapshot();
        assert_eq!((s.nrcv_que, s.nrcv_buf, s.ackcount), (wnd, wnd, 2 * wnd));
        // The advertised window is 0.
        let segs: Vec<_> = out(&mut k, 100).iter().flat_map(|d| parse_all(d)).collect();
        assert!(segs.iter().all(|(h, _)| h.wnd == 0 && h.una == wnd));
    }

    #[test]
    fn hostile_input_does_not_panic_and_stays_bounded() {
        let corpus = corpus();
        let mut rng = Rng(0x9E37_79B9);
        let mut k = Kcp::new(CONV);
        turbo(&mut k);
        k.set_ack_limit(16);
        let mut buf = vec![0u8; 1 << 16];
        let mut t = 0u32;
        let mut accepted = 0;
        for i in 0..20_000u32 {
            let d: Vec<u8> = if i % 2 == 0 {
                let len = rng.below(1400) as usize;
                let mut d: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if rng.below(2) == 0 && len >= 4 {
                    d[..4].copy_from_slice(&CONV.to_le_bytes());
                }
                d
            } else {
                let mut d = corpus[rng.below(corpus.len() as u32) as usize].clone();
                for _ in 0..1 + rng.below(4) {
                    let pos = rng.below(d.len() as u32) as usize;
                    d[pos] = rng.next() as u8;
                }
                match rng.below(4) {
                    0 => d.truncate(rng.below(d.len() as u32 + 1) as usize),
                    // Large frg / sn values, inside or outside the window.
                    1 if d.len() >= 24 => {
                        d[5] = rng.next() as u8;
                        let sn = rng.below(300);
                        d[12..16].copy_from_slice(&sn.to_le_bytes());
                    }
                    _ => {}
                }
                if d.len() >= 4 {
                    d[..4].copy_from_slice(&CONV.to_le_bytes());
                }
                d
            };
            if k.input(&d).is_ok() {
                accepted += 1;
            }
            if i % 7 == 0 {
                k.send(&[i as u8; 30]).unwrap();
            }
            if i % 50 == 0 {
                t = t.wrapping_add(10 + rng.below(500));
                k.update(t, |d| assert!(d.len() <= 1400));
                let _ = k.check(t);
            }
            if i % 3 == 0 {
                let _ = k.peek_size();
                while k.recv(&mut buf).is_ok() {}
                let mut small = [0u8; 8];
                let _ = k.recv(&mut small);
            }
            let s = k.snapshot();
            assert!(s.nrcv_que <= k.rcv_wnd(), "rcv_queue {}", s.nrcv_que);
            assert!(s.nrcv_buf <= k.rcv_wnd(), "rcv_buf {}", s.nrcv_buf);
            assert!(s.nrcv_que + s.nrcv_buf <= 2 * k.rcv_wnd());
            assert!(s.ackcount <= 16, "ackcount {}", s.ackcount);
        }
        assert!(accepted > 1000, "only {accepted} datagrams accepted");
        k.update(t.wrapping_add(100), |_| {});
        let _ = k.check(t);
        let _ = k.peek_size();
    }
}

mod stall {
    use crate::kcp::Kcp;
    use crate::wire::segment::{Command, SegmentHeader};

    fn push(sn: u32, frg: u8) -> Vec<u8> {
        let mut d = SegmentHeader {
            conv: 1,
            cmd: Command::Push,
            frg,
            wnd: 128,
            ts: 0,
            sn,
            una: 0,
            len: 4,
        }
        .to_bytes()
        .to_vec();
        d.extend_from_slice(&[sn as u8; 4]);
        d
    }

    #[test]
    fn a_message_larger_than_the_window_is_reported_as_stalled() {
        let mut k = Kcp::new(1);
        k.input(&push(0, 200)).unwrap();
        assert!(
            k.is_recv_stalled(),
            "frg 200 needs 201 segments, window is 128"
        );
        let mut ok = Kcp::new(1);
        ok.input(&push(0, 127)).unwrap();
        assert!(!ok.is_recv_stalled(), "128 segments fit a window of 128");
        ok.set_wndsize(0, 256);
        let mut big = Kcp::new(1);
        big.set_wndsize(0, 256);
        big.input(&push(0, 200)).unwrap();
        assert!(!big.is_recv_stalled());
        assert!(!Kcp::new(1).is_recv_stalled(), "empty queue");
    }
}

mod admit_budget {
    use super::*;

    /// Data segments in the datagrams `k` emits at `t`.
    fn pushes(k: &mut Kcp, t: u32) -> Vec<u32> {
        out(k, t)
            .iter()
            .flat_map(|d| parse_all(d))
            .filter(|(h, _)| h.cmd == Command::Push)
            .map(|(h, _)| h.sn)
            .collect()
    }

    #[test]
    fn a_budget_admits_whole_segments_it_covers_and_none_admits_all() {
        let mut k = Kcp::new(CONV);
        turbo(&mut k);
        k.set_wndsize(64, 64);
        for _ in 0..10 {
            k.send(&[1u8; 100]).unwrap();
        }
        // 124 bytes a segment: 300 covers two, not three.
        k.set_admit_budget(Some(300));
        assert!(k.has_pending_output() || !k.updated);
        assert_eq!(pushes(&mut k, 0), vec![0, 1]);
        // What is left (52) covers nothing: no pending output, nothing admitted.
        assert!(!k.has_pending_output());
        assert!(pushes(&mut k, 10).is_empty());
        k.set_admit_budget(Some(124));
        assert!(k.has_pending_output());
        assert_eq!(pushes(&mut k, 20), vec![2]);
        // No budget: ikcp's admission, the window alone.
        k.set_admit_budget(None);
        assert_eq!(pushes(&mut k, 30), (3..10).collect::<Vec<_>>());
    }
}

mod next_due {
    use super::*;
    use std::collections::VecDeque;

    /// A sender and a receiver over a link that loses `loss_pct` % of the datagrams each
    /// way (from `seed`) and delays each by `delay` ms; the receiver is updated every ms.
    /// The sender is updated every ms when `every_ms`, else only when a datagram arrives,
    /// when it queues a message, and at [`Kcp::next_due`]. Returns the sender's datagrams
    /// with their times, and how many updates it got.
    fn run(
        every_ms: bool,
        setup: Setup,
        loss_pct: u32,
        delay: u32,
        seed: u32,
    ) -> (Vec<(u32, Vec<u8>)>, u32) {
        let mut s = Kcp::new(CONV);
        let mut r = Kcp::new(CONV);
        setup(&mut s);
        setup(&mut r);
        let mut rng = Rng(seed);
        // One delay for every datagram: each direction is a FIFO.
        let mut to_r: VecDeque<(u32, Vec<u8>)> = VecDeque::new();
        let mut to_s: VecDeque<(u32, Vec<u8>)> = VecDeque::new();
        let mut sent = Vec::new();
        let mut updates = 0;
        let mut due = 0u32;
        let mut msg = vec![0u8; 4096];
        for t in 0..15_000u32 {
            let mut poke = every_ms || t >= due;
            // A message every 700 ms for the first 10 s, some of them several segments.
            if t % 700 == 0 && t < 10_000 {
                let len = 1 + (t as usize / 700 % 4) * 500;
                s.send(&vec![t as u8; len]).unwrap();
                poke = true;
            }
            while let Some((_, d)) = to_s.pop_front_if(|(at, _)| *at <= t) {
                // As the connection does: the arrival time for the RTT sample.
                s.set_current(t);
                s.input(&d).unwrap();
                poke = true;
            }
            if poke {
                updates += 1;
                s.update(t, |d| {
                    sent.push((t, d.to_vec()));
                    if rng.below(100) >= loss_pct {
                        to_r.push_back((t + delay, d.to_vec()));
                    }
                });
                due = s.next_due(t);
                assert!(time_diff(due, t) >= 0, "next_due is never in the past");
            }
            while let Some((_, d)) = to_r.pop_front_if(|(at, _)| *at <= t) {
                r.input(&d).unwrap();
            }
            r.update(t, |d| {
                if rng.below(100) >= loss_pct {
                    to_s.push_back((t + delay, d.to_vec()));
                }
            });
            while r.recv(&mut msg).is_ok() {}
        }
        (sent, updates)
    }

    /// Configures both ends of a run.
    type Setup = fn(&mut Kcp);

    fn classic(_: &mut Kcp) {}

    fn kcp2k_like(k: &mut Kcp) {
        turbo(k);
        k.set_wndsize(32, 128);
    }

    fn fast_resend_conserving(k: &mut Kcp) {
        k.set_nodelay(1, 20, 1, 0);
        k.set_fastack_conserve(true);
    }

    #[test]
    fn sleeping_until_next_due_sends_what_updating_every_ms_sends() {
        let setups: [(&str, Setup); 3] = [
            ("classic", classic),
            ("kcp2k-like", kcp2k_like),
            ("fast resend", fast_resend_conserving),
        ];
        let mut skipped_total = 0;
        for (name, setup) in setups {
            for (loss, delay, seed) in [(0, 5, 1), (10, 20, 7), (40, 3, 99), (100, 1, 5)] {
                let (every, n_every) = run(true, setup, loss, delay, seed);
                let (sparse, n_sparse) = run(false, setup, loss, delay, seed);
                assert!(!every.is_empty(), "{name}: the sender sent something");
                assert_eq!(
                    every.len(),
                    sparse.len(),
                    "{name}, {loss}% loss: datagram count"
                );
                for (i, (a, b)) in every.iter().zip(&sparse).enumerate() {
                    assert_eq!(a, b, "{name}, {loss}% loss: datagram {i} (time, bytes)");
                }
                assert!(n_sparse < n_every);
                skipped_total += n_every - n_sparse;
            }
        }
        assert!(skipped_total > 0);
    }

    #[test]
    fn waiting_for_an_ack_is_due_at_the_first_flush_after_the_retransmission_time() {
        let mut k = Kcp::new(CONV);
        // Interval 10, no-delay: rx_rto starts at 200 (no RTT sample yet), no minimum added.
        k.set_nodelay(1, 10, 0, 1);
        k.update(3, |_| {});
        k.update(13, |_| {});
        k.send(b"x").unwrap();
        // Sent at once, off the schedule (as `FLUSH` does): the segment resends at
        // 17 + 200 = 217; the schedule (13, 23, ...) first reaches it at 223.
        k.flush_at(17, |_| {});
        assert_eq!(k.check(17), 23);
        assert_eq!(k.next_due(17), 223);
        assert_eq!(k.next_due(100), 223);
        // At 223 the flush resends it, as updating every interval would.
        let mut resent = 0;
        k.update(223, |_| resent += 1);
        assert_eq!(resent, 1);
        // An ACK pending: the next flush, as `check` says.
        k.input(&push(CONV, 0, 0, b"p")).unwrap();
        assert_eq!(k.next_due(100), k.check(100));
    }
}
