//! Hostile and malformed input: the drop counters, the fragment countdown, and the memory
//! bound of [`Kcp::memory_bound`]; and the buffer pool under messages of the largest size.

use super::*;
use crate::wire::segment::{Command, SegmentHeader};

const CONV: u32 = 0xBAD_F00D;

fn segment(cmd: Command, frg: u8, sn: u32, una: u32, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = SegmentHeader {
        conv: CONV,
        cmd,
        frg,
        wnd: 128,
        ts,
        sn,
        una,
        len: payload.len() as u32,
    }
    .to_bytes()
    .to_vec();
    v.extend_from_slice(payload);
    v
}

fn push(sn: u32, frg: u8, payload: &[u8]) -> Vec<u8> {
    segment(Command::Push, frg, sn, 0, 0, payload)
}

fn ack(sn: u32, una: u32, ts: u32) -> Vec<u8> {
    segment(Command::Ack, 0, sn, una, ts, &[])
}

/// Every message `recv` hands out now, or the first error other than "nothing more".
fn recv_all(k: &mut Kcp) -> (Vec<Vec<u8>>, Option<KcpError>) {
    let mut buf = vec![0u8; 1 << 18];
    let mut msgs = Vec::new();
    loop {
        match k.recv(&mut buf) {
            Ok(n) => msgs.push(buf[..n].to_vec()),
            Err(KcpError::RecvEmpty) | Err(KcpError::RecvIncomplete) => return (msgs, None),
            Err(e) => return (msgs, Some(e)),
        }
    }
}

/// A sender with sn 0, 1, 2 in flight (first transmissions at time 0).
fn sender_with_three_in_flight() -> Kcp {
    let mut k = Kcp::new(CONV);
    k.set_nodelay(1, 10, 1, 1);
    for m in [b"a", b"b", b"c"] {
        k.send(m).unwrap();
    }
    k.update(0, |_| {});
    assert_eq!(k.snapshot().nsnd_buf, 3);
    k
}

#[test]
fn oversized_push_is_neither_stored_nor_acked() {
    let mut k = Kcp::new(CONV);
    let mss = k.mss() as usize;
    let mut d = push(0, 0, &vec![1u8; mss + 1]);
    d.extend_from_slice(&push(1, 0, &vec![2u8; mss]));
    k.input(&d).unwrap();
    let s = k.snapshot();
    assert_eq!((s.nrcv_buf, s.nrcv_que, s.ackcount), (1, 0, 1));
    assert_eq!(k.input_drops().oversized, 1);
    assert_eq!(k.input_drops().violations(), 1);
    // The honest retransmission of sn 0 fills the gap.
    k.input(&push(0, 0, b"ok")).unwrap();
    let (msgs, err) = recv_all(&mut k);
    assert_eq!(err, None);
    assert_eq!(msgs, vec![b"ok".to_vec(), vec![2u8; mss]]);
}

#[test]
fn ikcp_drops_are_counted() {
    let mut k = Kcp::new(CONV);
    let wnd = k.rcv_wnd();
    let mut d = push(wnd, 0, b"beyond");
    d.extend_from_slice(&push(u32::MAX / 2, 0, b"far"));
    d.extend_from_slice(&push(3, 0, b"3"));
    d.extend_from_slice(&push(3, 0, b"3 again"));
    d.extend_from_slice(&push(0, 0, b"0"));
    d.extend_from_slice(&push(0, 0, b"0 again"));
    k.input(&d).unwrap();
    let drops = k.input_drops();
    assert_eq!(drops.beyond_window, 2);
    // "3 again" was buffered already; "0 again" arrived after 0 moved to the queue.
    assert_eq!(drops.duplicates, 2);
    assert_eq!(drops.violations(), 0, "ikcp's own rules are not violations");
    // Duplicates are acknowledged again (ikcp), the out-of-window ones are not.
    assert_eq!(k.snapshot().ackcount, 4);
}

#[test]
fn ack_for_data_never_sent_is_ignored() {
    let mut k = sender_with_three_in_flight();
    k.set_current(50);
    let before = k.snapshot();
    // sn 3 is snd_nxt; 1000 and a wrapped value are far beyond it.
    let mut d = ack(3, 0, 10);
    d.extend_from_slice(&ack(1000, 0, 10));
    d.extend_from_slice(&ack(u32::MAX, 0, 10));
    k.input(&d).unwrap();
    let after = k.snapshot();
    assert_eq!(k.input_drops().ack_unsent, 2, "u32::MAX is before snd_una");
    assert_eq!(after.nsnd_buf, 3);
    // No RTT sample from the ACKs of unsent data (u32::MAX is an old ACK: sampled, as ikcp).
    assert_eq!(before.rx_srtt, 0);
    assert_eq!(after.rx_srtt, 40);
    // A real ACK still works.
    k.input(&ack(1, 0, 0)).unwrap();
    assert_eq!(k.snapshot().nsnd_buf, 2);
}

#[test]
fn ack_for_unsent_data_does_not_hide_the_real_maxack() {
    // ikcp would take sn 100 as maxack (first ACK of the datagram) and skip fast-ack
    // accounting; ignoring it, sn 2 is maxack and sn 0 and 1 get a fast ack each, which
    // with fast resend 1 retransmits them at the next flush.
    let mut k = sender_with_three_in_flight();
    let mut d = ack(100, 0, 0);
    d.extend_from_slice(&ack(2, 0, 0));
    k.input(&d).unwrap();
    let mut sns = Vec::new();
    k.update(10, |dg| {
        for seg in crate::wire::segment::segments(dg) {
            let (h, _) = seg.unwrap();
            sns.push(h.sn);
        }
    });
    assert_eq!(sns, vec![0, 1]);
}

#[test]
fn una_beyond_snd_nxt_is_ignored() {
    let mut k = sender_with_three_in_flight();
    k.input(&ack(1000, 10, 0)).unwrap();
    let drops = k.input_drops();
    assert_eq!((drops.una_unsent, drops.ack_unsent), (1, 1));
    assert_eq!(k.snapshot().nsnd_buf, 3, "nothing taken as acknowledged");
    // una == snd_nxt acknowledges everything.
    k.input(&segment(Command::WindowTell, 0, 0, 3, 0, &[]))
        .unwrap();
    assert_eq!(k.snapshot().nsnd_buf, 0);
    assert_eq!(k.snapshot().snd_una, 3);
    assert_eq!(k.input_drops().una_unsent, 1);
}

/// Fragment sequences that do not count down: each broken message is reported once and
/// discarded whole (up to its `frg == 0`), the messages around it are delivered.
#[test]
fn fragments_must_count_down() {
    // (fragments of the broken message, in order)
    let cases: &[&[u8]] = &[
        &[3, 3, 1, 0],
        &[5, 2, 0],
        &[2, 0],
        &[1, 1, 0],
        &[2, 1, 1, 0],
    ];
    for frgs in cases {
        let mut k = Kcp::new(CONV);
        let mut sn = 0;
        let mut d = push(sn, 0, b"before");
        sn += 1;
        for &f in frgs.iter() {
            d.extend_from_slice(&push(sn, f, &[f; 3]));
            sn += 1;
        }
        d.extend_from_slice(&push(sn, 1, b"af"));
        d.extend_from_slice(&push(sn + 1, 0, b"ter"));
        k.input(&d).unwrap();
        let (msgs, err) = recv_all(&mut k);
        assert_eq!(msgs, vec![b"before".to_vec()], "{frgs:?}");
        assert_eq!(err, Some(KcpError::BadFragments), "{frgs:?}");
        assert_eq!(k.peek_size(), Ok(5), "{frgs:?}: the next message follows");
        let (msgs, err) = recv_all(&mut k);
        assert_eq!((msgs, err), (vec![b"after".to_vec()], None), "{frgs:?}");
        assert_eq!(k.input_drops().bad_fragments, 1);
        assert_eq!(k.snapshot().nrcv_que, 0);
    }
}

#[test]
fn a_broken_message_is_discarded_even_when_its_end_arrives_later() {
    let mut k = Kcp::new(CONV);
    // 4, 3, then 1: broken. Its end (frg 0) and then a good message arrive later.
    let mut d = push(0, 4, b"a");
    d.extend_from_slice(&push(1, 3, b"b"));
    d.extend_from_slice(&push(2, 1, b"c"));
    k.input(&d).unwrap();
    assert_eq!(k.peek_size(), Err(KcpError::BadFragments));
    assert_eq!(recv_all(&mut k), (vec![], Some(KcpError::BadFragments)));
    assert_eq!(k.snapshot().nrcv_que, 0, "discarded at once");
    // The countdown looks fine again from here, but it is the broken message's tail.
    let mut d = push(3, 1, b"d");
    d.extend_from_slice(&push(4, 0, b"e"));
    d.extend_from_slice(&push(5, 0, b"good"));
    k.input(&d).unwrap();
    assert_eq!(recv_all(&mut k), (vec![b"good".to_vec()], None));
    assert_eq!(k.snapshot().rcv_nxt, 6);
}

#[test]
fn an_incomplete_but_counting_message_is_not_an_error() {
    let mut k = Kcp::new(CONV);
    k.input(&push(0, 2, b"a")).unwrap();
    k.input(&push(1, 1, b"b")).unwrap();
    assert_eq!(k.peek_size(), Err(KcpError::RecvIncomplete));
    assert_eq!(k.recv(&mut [0u8; 16]), Err(KcpError::RecvIncomplete));
    k.input(&push(2, 0, b"c")).unwrap();
    assert_eq!(k.peek_size(), Ok(3));
    assert_eq!(
        k.recv(&mut [0u8; 2]),
        Err(KcpError::BufferTooSmall { needed: 3 })
    );
    assert_eq!(recv_all(&mut k), (vec![b"abc".to_vec()], None));
    assert_eq!(k.input_drops(), InputDrops::default());
}

/// The counters of an honest exchange: no violations.
#[test]
fn honest_traffic_violates_nothing() {
    let mut a = Kcp::new(CONV);
    let mut b = Kcp::new(CONV);
    for k in [&mut a, &mut b] {
        k.set_nodelay(1, 10, 2, 1);
    }
    let mut delivered = 0;
    for t in 0..300u32 {
        if t < 100 {
            a.send(&vec![t as u8; 1 + (t as usize * 331) % 5000])
                .unwrap();
        }
        let mut ab = Vec::new();
        a.update(t * 10, |d| ab.push(d.to_vec()));
        for (i, d) in ab.iter().enumerate() {
            // Lose some, duplicate some.
            if (t as usize + i) % 7 != 3 {
                b.input(d).unwrap();
            }
            if (t as usize + i).is_multiple_of(11) {
                b.input(d).unwrap();
            }
        }
        let mut ba = Vec::new();
        b.update(t * 10, |d| ba.push(d.to_vec()));
        for d in &ba {
            a.input(d).unwrap();
        }
        delivered += recv_all(&mut b).0.len();
    }
    assert_eq!(delivered, 100);
    assert_eq!(
        a.input_drops().violations() + b.input_drops().violations(),
        0
    );
    assert!(b.input_drops().duplicates > 0);
}

fn assert_bounded(k: &Kcp, what: &str) {
    let used = k.heap_bytes() - k.snd_queue_heap_bytes();
    let bound = k.memory_bound();
    assert!(used <= bound, "{what}: {used} bytes > bound {bound}");
}

/// A flood of hostile segments of every kind, interleaved with the application's traffic:
/// memory stays within `memory_bound()` at every step.
#[test]
fn hostile_input_stays_within_the_memory_bound() {
    for (mtu, snd, rcv, acks) in [
        (1400, 32, 128, 8192),
        (1195, 64, 256, 512),
        (200, 8, 128, 16),
    ] {
        let mut k = Kcp::new(CONV);
        k.set_mtu(mtu).unwrap();
        k.set_wndsize(snd, rcv);
        k.set_ack_limit(acks);
        k.set_reserved(5);
        k.set_nodelay(1, 10, 2, 1);
        let mss = k.mss() as usize;
        let wnd = k.rcv_wnd();
        let mut rng = 0x1234_5678u32;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            rng
        };
        let mut t = 0u32;
        for round in 0..3000u32 {
            let rcv_nxt = k.snapshot().rcv_nxt;
            let snd_nxt = k.snapshot().snd_nxt;
            let mut d = Vec::new();
            for _ in 0..1 + next() % 6 {
                let sn = rcv_nxt.wrapping_add(next() % (2 * wnd));
                let len = (next() as usize) % (mss + 1);
                match next() % 9 {
                    // Oversized PUSH (dropped).
                    0 => d.extend_from_slice(&push(sn, 0, &vec![0u8; mss + 1 + len % 50])),
                    // In or out of the window, with huge or random frg.
                    1 => d.extend_from_slice(&push(sn, 255, &vec![1u8; len])),
                    2 => d.extend_from_slice(&push(sn, next() as u8, &vec![2u8; len])),
                    // Repeated segments.
                    3 => {
                        let p = push(rcv_nxt.wrapping_add(next() % 4), 0, &vec![3u8; len]);
                        for _ in 0..3 {
                            d.extend_from_slice(&p);
                        }
                    }
                    // ACKs and una for unsent data, and old ACKs.
                    4 => d.extend_from_slice(&ack(snd_nxt.wrapping_add(next() % 100), 0, t)),
                    5 => d.extend_from_slice(&ack(next(), snd_nxt.wrapping_add(next() % 9), t)),
                    6 => d.extend_from_slice(&segment(Command::WindowAsk, 0, 0, 0, 0, &[])),
                    // Well-formed countdown far larger than the window.
                    7 => d.extend_from_slice(&push(sn, (200 - (sn % 200)) as u8, &[7u8; 9])),
                    _ => d.extend_from_slice(&push(sn, 0, &vec![8u8; len])),
                }
            }
            // Sometimes too much for one MTU: input does not care.
            let _ = k.input(&d);
            assert_bounded(&k, "after input");
            if round % 5 == 0 {
                let _ = k.send(&vec![9u8; (next() as usize) % (4 * mss)]);
            }
            if round % 3 == 0 {
                t = t.wrapping_add(10);
                k.update(t, |_| {});
                assert_bounded(&k, "after update");
            }
            if round % 4 == 0 {
                let _ = recv_all(&mut k);
                assert_bounded(&k, "after recv");
            }
        }
        let drops = k.input_drops();
        assert!(drops.oversized > 0 && drops.beyond_window > 0 && drops.duplicates > 0);
        assert!(drops.ack_unsent > 0 && drops.una_unsent > 0 && drops.bad_fragments > 0);
    }
}

/// The bound is reached, not just respected: filling both receive structures with full
/// segments and the pool and the ACK list gets close to it.
#[test]
fn memory_bound_is_tight_for_a_full_receive_window() {
    let mut k = Kcp::new(CONV);
    k.set_ack_limit(256);
    let mss = k.mss() as usize;
    let wnd = k.rcv_wnd();
    // A countdown far longer than the window: the queue and the buffer both fill.
    for sn in 0..2 * wnd {
        k.input(&push(sn, 255u8.saturating_sub(sn as u8), &vec![0u8; mss]))
            .unwrap();
    }
    let s = k.snapshot();
    assert_eq!((s.nrcv_que, s.nrcv_buf), (wnd, wnd));
    let used = k.heap_bytes() - k.snd_queue_heap_bytes();
    let segments = 2 * wnd as usize * mss;
    assert!(used >= segments, "{used}");
    assert!(used <= k.memory_bound());
}

#[test]
fn lowering_settings_on_a_fresh_instance_lowers_the_bound() {
    let mut k = Kcp::new(CONV);
    let default = k.memory_bound();
    k.set_ack_limit(16);
    k.set_wndsize(8, 128);
    k.set_mtu(500).unwrap();
    assert!(k.memory_bound() < default);
    // Once buffers hold memory, lowering a setting keeps the larger bound (the pool cap
    // is fixed here; by default it follows the windows, see below).
    k.set_pool_limit(16);
    k.send(&[0u8; 2000]).unwrap();
    k.update(0, |_| {});
    k.update(100, |_| {});
    let used = k.memory_bound();
    k.set_wndsize(4, 0);
    k.set_mtu(100).unwrap();
    assert_eq!(k.memory_bound(), used);
    assert_bounded(&k, "after lowering");
}

/// Two peers set up as the kcp2k connection sets up its `Kcp` (mtu 1200 - 5, windows
/// 32/128, the kcp2k fragment rule, no conservation, reserved prefix 5).
fn kcp2k_peer() -> Kcp {
    let mut k = Kcp::new(CONV);
    k.set_reserved(5);
    k.set_mtu(1195).unwrap();
    k.set_wndsize(32, 128);
    k.set_nodelay(1, 10, 2, 1);
    k.set_fragment_limit(FragmentLimit::Kcp2k);
    k.set_fastack_conserve(false);
    k.set_ack_limit(4 * 128);
    k
}

/// Sends one `len`-byte message from `a` to `b` and back (an echo), over a lossless link,
/// and runs until both are idle.
fn echo(a: &mut Kcp, b: &mut Kcp, len: usize, t: &mut u32) {
    let msg: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    a.send(&msg).unwrap();
    let mut buf = vec![0u8; len + 1];
    let mut back = None;
    for _ in 0..2000 {
        // Strip the reserved prefix (the kcp2k header).
        let mut ab = Vec::new();
        a.update(*t, |d| ab.push(d[5..].to_vec()));
        for d in &ab {
            b.input(d).unwrap();
        }
        if let Ok(n) = b.recv(&mut buf) {
            b.send(&buf[..n]).unwrap();
        }
        let mut ba = Vec::new();
        b.update(*t, |d| ba.push(d[5..].to_vec()));
        for d in &ba {
            a.input(d).unwrap();
        }
        if let Ok(n) = a.recv(&mut buf) {
            back = Some(buf[..n].to_vec());
        }
        *t += 10;
        if back.is_some() && a.is_idle() && b.is_idle() {
            break;
        }
    }
    assert_eq!(back, Some(msg), "echo completed");
}

/// After one warm-up echo of the largest reliable message, further echoes of it do not grow
/// either peer's heap: every segment buffer comes from the pool, which stays within its cap.
/// (With the former cap of 32, all but 32 of the 127 buffers of each message were freed and
/// allocated again.)
#[test]
fn largest_messages_reuse_pooled_buffers() {
    let mut a = kcp2k_peer();
    let mut b = kcp2k_peer();
    let len = a.max_message_size();
    assert_eq!(len, 127 * 1171, "127 fragments of mss 1171");
    let cap = 32 + 128 + FRG_MAX + 1;
    assert_eq!(a.pool_limit(), cap);
    let mut t = 0;
    echo(&mut a, &mut b, len, &mut t);
    let warm = (a.heap_bytes(), b.heap_bytes());
    let pooled = (a.pooled_buffers(), b.pooled_buffers());
    // Each side held a whole message at once.
    assert!(pooled.0 >= 127 && pooled.1 >= 127, "{pooled:?}");
    for _ in 0..5 {
        echo(&mut a, &mut b, len, &mut t);
        assert!(a.heap_bytes() <= warm.0, "{} > {}", a.heap_bytes(), warm.0);
        assert!(b.heap_bytes() <= warm.1, "{} > {}", b.heap_bytes(), warm.1);
        assert_eq!((a.pooled_buffers(), b.pooled_buffers()), pooled);
        assert!(a.pooled_buffers() <= cap && b.pooled_buffers() <= cap);
    }
    // Idle: trimming gives the buffers back.
    a.trim_memory(2);
    assert_eq!(a.pooled_buffers(), 2);
    assert!(a.heap_bytes() < warm.0 / 10);
    echo(&mut a, &mut b, len, &mut t);
}

#[test]
fn pool_cap_follows_the_windows_until_set() {
    let mut k = Kcp::new(CONV);
    assert_eq!(k.pool_limit(), 32 + 128 + 256);
    k.set_wndsize(64, 512);
    assert_eq!(k.pool_limit(), 64 + 512 + 256);
    k.set_pool_limit(8);
    k.set_wndsize(128, 1024);
    assert_eq!(k.pool_limit(), 8);
    k.set_nodelay(1, 10, 0, 1);
    // Freed buffers beyond the cap are released.
    for _ in 0..20 {
        k.send(&[0u8; 10]).unwrap();
    }
    k.update(0, |_| {});
    assert_eq!(k.snapshot().nsnd_buf, 20);
    k.input(&ack(0, 20, 0)).unwrap();
    assert_eq!(k.snapshot().nsnd_buf, 0);
    assert_eq!(k.pooled_buffers(), 8);
}

/// The documented bound of the kcp2k setup, term by term (slot and segment sizes of 64-bit
/// targets).
#[cfg(target_pointer_width = "64")]
#[test]
fn memory_bound_of_the_kcp2k_setup() {
    let k = kcp2k_peer();
    let (m, ws, wr) = (1171, 32, 128);
    let expected = ws * (72 + m)      // send ring
        + (2 * ws + 16) * 16          // retransmission timers
        + wr * (64 + m)               // receive ring
        + wr * (64 + m)               // receive queue
        + 416 * (24 + m)              // pool: 32 + 128 + 256 buffers
        + 512 * 8                     // pending ACKs
        + 5 + m + 24; // output buffer
    assert_eq!(k.memory_bound(), expected);
    assert_eq!(expected, 859_632);
}
