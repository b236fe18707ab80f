//! Tests of the sn-indexed windows inside a running `Kcp`: `check` from the timer heap
//! against ikcp's full scan, flushes that skip the walk of the send buffer against flushes
//! that always walk it, and sequence numbers and clocks that wrap around `u32::MAX`.

use super::window::SendBuf;
use super::*;
use crate::wire::segment::{Command, SegmentHeader};

const CONV: u32 = 0xC0FFEE;

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

/// ikcp's `ikcp_check`, scanning every segment in flight.
fn scan_check(k: &Kcp, current: u32) -> u32 {
    if !k.updated {
        return current;
    }
    let mut ts_flush = k.ts_flush;
    if !(-10000..10000).contains(&time_diff(current, ts_flush)) {
        ts_flush = current;
    }
    if time_diff(current, ts_flush) >= 0 {
        return current;
    }
    let tm_flush = time_diff(ts_flush, current);
    let mut tm_packet = i32::MAX;
    for seg in k.snd_buf.iter() {
        let diff = time_diff(seg.resendts(), current);
        if diff <= 0 {
            return current;
        }
        tm_packet = tm_packet.min(diff);
    }
    current.wrapping_add((tm_packet.min(tm_flush) as u32).min(k.interval))
}

/// Makes both directions of `k` start at sequence number `sn`.
fn start_at_sn(k: &mut Kcp, sn: u32) {
    k.snd_una = sn;
    k.snd_nxt = sn;
    k.snd_buf = SendBuf::starting_at(sn);
    k.rcv_nxt = sn;
}

/// Settings of one simulated run.
#[derive(Clone, Copy, Debug)]
struct Setup {
    nodelay: i32,
    interval: i32,
    resend: i32,
    nc: i32,
    conserve: bool,
    loss: u32,
    start_sn: u32,
    start_time: u32,
}

/// Two peers over a lossy, duplicating, reordering link, both driven by `update` every
/// `step` ms. `twin` runs a copy of each peer that walks the send buffer in every flush.
struct Sim {
    peers: [Kcp; 2],
    twins: Option<[Kcp; 2]>,
    link: Vec<(u32, usize, Vec<u8>)>,
    rng: Rng,
    now: u32,
    setup: Setup,
    received: [usize; 2],
}

impl Sim {
    fn new(setup: Setup, seed: u32, twin: bool) -> Sim {
        let make = |always_walk: bool| {
            let mut k = Kcp::new(CONV);
            k.set_nodelay(setup.nodelay, setup.interval, setup.resend, setup.nc);
            k.set_fastack_conserve(setup.conserve);
            k.set_wndsize(64, 128);
            start_at_sn(&mut k, setup.start_sn);
            k.always_walk = always_walk;
            k
        };
        Sim {
            peers: [make(false), make(false)],
            twins: twin.then(|| [make(true), make(true)]),
            link: Vec::new(),
            rng: Rng(seed.wrapping_mul(0x9E37_79B9) | 1),
            now: setup.start_time,
            setup,
            received: [0; 2],
        }
    }

    /// Every check we can make of the peer `i` at time `t`.
    fn verify(&self, i: usize) {
        let k = &self.peers[i];
        for off in [0u32, 1, 7, 30, 250, 4000] {
            let t = self.now.wrapping_add(off);
            assert_eq!(k.check(t), scan_check(k, t), "check at now+{off}");
        }
        if let Some(twins) = &self.twins {
            assert_eq!(k.snapshot(), twins[i].snapshot(), "peer {i} vs its twin");
            assert_eq!(k.check(self.now), twins[i].check(self.now));
        }
    }

    fn step(&mut self) {
        for i in 0..2 {
            if self.rng.below(3) == 0 && self.peers[i].wait_snd() < 200 {
                let len = 1 + self.rng.below(3000) as usize;
                let msg = vec![(self.now % 251) as u8; len];
                self.peers[i].send(&msg).unwrap();
                if let Some(t) = &mut self.twins {
                    t[i].send(&msg).unwrap();
                }
            }
            let mut out = Vec::new();
            self.peers[i].update(self.now, |d| out.push(d.to_vec()));
            if let Some(t) = &mut self.twins {
                let mut twin_out = Vec::new();
                t[i].update(self.now, |d| twin_out.push(d.to_vec()));
                assert_eq!(out, twin_out, "peer {i} flushed differently from its twin");
            }
            self.verify(i);
            for d in out {
                if self.rng.below(100) < self.setup.loss {
                    continue;
                }
                let copies = if self.rng.below(50) == 0 { 2 } else { 1 };
                for _ in 0..copies {
                    let at = self.now.wrapping_add(10 + self.rng.below(40));
                    self.link.push((at, 1 - i, d.clone()));
                }
            }
        }
        // Deliver what is due, in arrival order (jitter reorders).
        self.link.sort_by_key(|(at, _, _)| time_diff(*at, self.now));
        while let Some(pos) = self
            .link
            .iter()
            .position(|(at, _, _)| time_diff(*at, self.now) <= 0)
        {
            let (_, to, d) = self.link.remove(pos);
            self.peers[to].input(&d).unwrap();
            if let Some(t) = &mut self.twins {
                t[to].input(&d).unwrap();
            }
            self.verify(to);
        }
        let mut buf = vec![0u8; 1 << 18];
        for i in 0..2 {
            while let Ok(n) = self.peers[i].recv(&mut buf) {
                assert!(buf[..n].iter().all(|&b| b == buf[0]));
                self.received[i] += 1;
                if let Some(t) = &mut self.twins {
                    assert_eq!(t[i].recv(&mut buf), Ok(n));
                }
            }
        }
        self.now = self.now.wrapping_add(5 + self.rng.below(10));
    }
}

fn setups() -> Vec<Setup> {
    let base = Setup {
        nodelay: 1,
        interval: 10,
        resend: 2,
        nc: 1,
        conserve: false,
        loss: 10,
        start_sn: 0,
        start_time: 0,
    };
    vec![
        base,
        Setup {
            conserve: true,
            ..base
        },
        Setup {
            nodelay: 0,
            interval: 20,
            resend: 0,
            nc: 0,
            loss: 5,
            ..base
        },
        Setup {
            nodelay: 2,
            resend: 1,
            conserve: true,
            loss: 25,
            ..base
        },
        // Sequence numbers and the clock cross u32::MAX during the run.
        Setup {
            start_sn: u32::MAX - 150,
            start_time: u32::MAX - 3000,
            ..base
        },
        Setup {
            start_sn: u32::MAX - 10,
            start_time: u32::MAX - 500,
            conserve: true,
            nodelay: 0,
            interval: 10,
            resend: 3,
            nc: 0,
            ..base
        },
    ]
}

/// `check` answers from the timer heap (O(1)); ikcp scans the send buffer. Both must give
/// the same time, after every update and every input, including across the wrap of the
/// clock and of the sequence numbers.
#[test]
fn check_matches_the_full_scan() {
    for (n, setup) in setups().into_iter().enumerate() {
        for seed in 0..3u32 {
            let mut sim = Sim::new(setup, n as u32 + 1 + 1000 * seed, false);
            for _ in 0..1500 {
                sim.step();
            }
            assert!(
                sim.received.iter().all(|&r| r > 100),
                "{setup:?}: {:?}",
                sim.received
            );
        }
    }
}

/// A flush skips the walk of the send buffer when no timer is due and no fast-ack count
/// grew. A twin that always walks (as ikcp does) must emit the same datagrams and reach the
/// same state.
#[test]
fn skipping_the_walk_changes_nothing() {
    for (n, setup) in setups().into_iter().enumerate() {
        for seed in 0..3u32 {
            let mut sim = Sim::new(setup, 100 + n as u32 + 1000 * seed, true);
            for _ in 0..1500 {
                sim.step();
            }
            assert!(sim.received.iter().all(|&r| r > 100), "{setup:?}");
        }
    }
}

/// A segment whose own RTO grew past 2^31 ms (nodelay 0 doubles it on every timeout, and
/// ikcp does not clamp it) makes its timer ambiguous; `check` then falls back to the scan
/// and still agrees with ikcp.
#[test]
fn check_with_a_runaway_rto_agrees_with_the_scan() {
    let mut k = Kcp::new(CONV);
    k.set_nodelay(0, 10, 0, 1);
    k.set_dead_link(u32::MAX);
    k.send(b"lost forever").unwrap();
    k.send(b"lost too").unwrap();
    let mut t = 0u32;
    for _ in 0..200_000 {
        k.update(t, |_| {});
        for off in [0u32, 5, 1 << 30, 1 << 31, 3 << 30] {
            let c = t.wrapping_add(off);
            assert_eq!(k.check(c), scan_check(&k, c));
        }
        let rto = k.snd_buf.iter().map(|s| s.rto).max().unwrap_or(0);
        if rto >= 1 << 31 {
            return;
        }
        // Jump straight to the next retransmission.
        t = k.check(t).max(t + 1);
        t = k
            .snd_buf
            .iter()
            .map(|s| s.resendts())
            .min()
            .unwrap_or(t)
            .max(t);
    }
    panic!("the rto never grew past 2^31");
}

fn push(sn: u32, frg: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = SegmentHeader {
        conv: CONV,
        cmd: Command::Push,
        frg,
        wnd: 128,
        ts: 0,
        sn,
        una: 0,
        len: payload.len() as u32,
    }
    .to_bytes()
    .to_vec();
    v.extend_from_slice(payload);
    v
}

/// Out-of-order, duplicate and out-of-window PUSH segments while `rcv_nxt` crosses
/// `u32::MAX`: each sn is stored once, only inside the window, and delivered in order.
#[test]
fn receive_window_across_the_sn_wrap() {
    let mut k = Kcp::new(CONV);
    let start = u32::MAX - 2;
    start_at_sn(&mut k, start);
    let sns: Vec<u32> = (0..6).map(|i| start.wrapping_add(i)).collect();
    // 2, 4, 4 (duplicate), 1, beyond the window, before the window.
    for &i in &[2usize, 4, 4, 1] {
        k.input(&push(sns[i], 0, &[i as u8])).unwrap();
    }
    k.input(&push(start.wrapping_add(k.rcv_wnd()), 0, b"far"))
        .unwrap();
    k.input(&push(start.wrapping_sub(1), 0, b"old")).unwrap();
    let s = k.snapshot();
    assert_eq!((s.nrcv_buf, s.nrcv_que, s.rcv_nxt), (3, 0, start));
    // Both duplicates and the old one are acked again; the far one is not.
    assert_eq!(s.ackcount, 5);
    assert!(k.recv(&mut [0u8; 8]).is_err());
    // The missing first one releases 0, 1, 2; 3 is missing, so 4 waits.
    k.input(&push(sns[0], 0, &[0])).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8];
    while let Ok(n) = k.recv(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    assert_eq!(got, vec![vec![0], vec![1], vec![2]]);
    assert_eq!(k.snapshot().rcv_nxt, 0, "rcv_nxt wrapped");
    assert_eq!(k.snapshot().nrcv_buf, 1);
    k.input(&push(sns[3], 0, &[3])).unwrap();
    while let Ok(n) = k.recv(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    assert_eq!(got.len(), 5);
    assert_eq!(got[3..], [vec![3], vec![4]]);
    assert_eq!(k.snapshot().nrcv_buf, 0);
}

/// A flush with data in flight but nothing due sends nothing (the walk is skipped) and the
/// next retransmission still happens at its time.
#[test]
fn idle_flush_between_retransmissions() {
    let mut k = Kcp::new(CONV);
    k.set_nodelay(1, 10, 0, 1);
    k.send(b"x").unwrap();
    let mut sent = 0;
    k.update(0, |_| sent += 1);
    assert_eq!(sent, 1);
    let due = k.snd_buf.iter().next().map(|s| s.resendts()).unwrap();
    let mut t = 10;
    while time_diff(due, t) > 0 {
        k.update(t, |_| sent += 1);
        assert_eq!(sent, 1, "nothing is due at {t}");
        t += 10;
    }
    k.update(t, |_| sent += 1);
    assert_eq!(sent, 2, "the retransmission at {t}");
    assert_eq!(k.snapshot().xmit, 1);
}
