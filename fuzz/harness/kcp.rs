//! Harness of the `kcp` fuzz target: two `kcpnet::kcp::Kcp` peers, configured from the
//! input, exchange datagrams through two paths the input controls (delivery, loss,
//! duplication, reordering, mutation, injection of raw and crafted datagrams) while the
//! input also sends, receives, updates, flushes, checks and moves the clock.
//!
//! Checked: no panic; `peek_size` agrees with `recv` (and a too small buffer leaves the
//! message in place); `check` is never in the past nor beyond one interval; the window
//! structures never exceed their windows; what a peer holds apart from its send queue stays
//! within the library's own `Kcp::memory_bound`; on a path where nothing was forged the
//! messages (or, in stream mode, the bytes) arrive exactly once and in order, never
//! `BadFragments`; and when nothing was forged and no setting changed, everything sent
//! arrives once an honest network had 20 minutes (if no segment was retransmitted more
//! than 4 times, so no timer can lie beyond that).
//!
//! Shared by `fuzz/fuzz_targets/kcp.rs` and the corpus replay in `tests/fuzz_corpus.rs`.

use std::collections::VecDeque;

use kcpnet::fuzzing::{message, Input};
use kcpnet::kcp::{time_diff, FragmentLimit, Kcp, KcpError};
use kcpnet::wire::{Command, SegmentHeader};

const QUEUE_LIMIT: usize = 4096;
const MAX_OPS: usize = 3000;
/// The application stops sending while this many segments wait (the send queue is the
/// application's memory, not the peer's).
const APP_BACKLOG: usize = 256;

struct Peer {
    kcp: Kcp,
    tag: u8,
    /// Datagrams this peer sent, on their way to the other.
    outbox: VecDeque<Vec<u8>>,
    /// Lengths of the messages this peer's `send` accepted (contents: `message(tag, i, len)`).
    sent: Vec<usize>,
    /// Messages (message mode) or bytes (stream mode) received from the other.
    received_msgs: usize,
    received_bytes: usize,
    /// Something forged reached this peer: its delivery checks are off.
    forged: bool,
}

struct Pair {
    peers: [Peer; 2],
    now: u32,
    stream: bool,
    conv: u32,
    /// A setting changed during the run, or the peers differ: no completeness check.
    changed: bool,
}

fn configure(kcp: &mut Kcp, input: &mut Input<'_>, stream: bool) {
    let a = input.u8();
    let b = input.u8();
    let _ = kcp.set_mtu(50 + input.u16() as u32 % 1451);
    kcp.set_wndsize(
        [32, 1, 4, 128][(a & 3) as usize],
        [128, 256, 1, 512][((a >> 2) & 3) as usize],
    );
    kcp.set_nodelay(
        ((a >> 4) % 3) as i32,
        [10, 1, 40, 100][((a >> 6) & 3) as usize],
        [0, 2, 1, 5][(b & 3) as usize],
        ((b >> 2) & 1) as i32,
    );
    kcp.set_stream(stream);
    kcp.set_fragment_limit(if b & 8 != 0 {
        FragmentLimit::Kcp2k
    } else {
        FragmentLimit::Classic
    });
    kcp.set_fastack_conserve(b & 16 == 0);
    kcp.set_dead_link([20, 3][((b >> 5) & 1) as usize]);
    if b & 64 != 0 {
        kcp.set_ack_limit(16);
    }
    if b & 128 != 0 {
        kcp.set_pool_limit(4);
    }
}

impl Pair {
    fn new(input: &mut Input<'_>) -> Pair {
        let flags = input.u8();
        let stream = flags & 1 != 0;
        let conv = if flags & 2 != 0 { 0x1122_3344 } else { 0 };
        let now = match (flags >> 2) & 3 {
            0 => 0,
            1 => u32::MAX - 2_000, // the clock wraps early in the run
            _ => input.u32(),
        };
        let mut a = Kcp::new(conv);
        let mut b = Kcp::new(conv);
        // The same settings on both ends unless the input asks for two.
        let start = input.clone();
        configure(&mut a, input, stream);
        let differ = flags & 16 != 0;
        if differ {
            configure(&mut b, input, stream);
        } else {
            configure(&mut b, &mut start.clone(), stream);
        }
        let peer = |kcp, tag| Peer {
            kcp,
            tag,
            outbox: VecDeque::new(),
            sent: Vec::new(),
            received_msgs: 0,
            received_bytes: 0,
            forged: false,
        };
        Pair {
            peers: [peer(a, 0xA0), peer(b, 0xB0)],
            now,
            stream,
            conv,
            changed: differ,
        }
    }

    /// A forged datagram reached a peer: it can carry data for it and ACKs for what it sent,
    /// so both directions' delivery checks are off.
    fn forged(&mut self) {
        self.peers[0].forged = true;
        self.peers[1].forged = true;
    }

    fn update(&mut self, p: usize) {
        let now = self.now;
        let peer = &mut self.peers[p];
        let outbox = &mut peer.outbox;
        peer.kcp.update(now, |d| {
            if outbox.len() < QUEUE_LIMIT {
                outbox.push_back(d.to_vec());
            }
        });
    }

    fn flush_at(&mut self, p: usize) {
        let now = self.now;
        let peer = &mut self.peers[p];
        let outbox = &mut peer.outbox;
        peer.kcp.flush_at(now, |d| {
            if outbox.len() < QUEUE_LIMIT {
                outbox.push_back(d.to_vec());
            }
        });
    }

    fn input_to(&mut self, p: usize, d: &[u8]) {
        let kcp = &mut self.peers[p].kcp;
        kcp.set_current(self.now);
        let _ = kcp.input(d);
    }

    fn deliver(&mut self, from: usize) {
        if let Some(d) = self.peers[from].outbox.pop_front() {
            self.input_to(1 - from, &d);
        }
    }

    fn send(&mut self, p: usize, len: u16, big: bool) {
        let peer = &mut self.peers[p];
        if peer.kcp.wait_snd() >= APP_BACKLOG {
            return;
        }
        let mss = peer.kcp.mss() as usize;
        let max = if big { 130 * mss } else { 4 * mss };
        let len = 5 + len as usize % max.max(1);
        let m = message(peer.tag, peer.sent.len() as u32, len);
        match peer.kcp.send(&m) {
            Ok(n) => {
                if self.stream {
                    // Stream mode may queue only part of it when the fragment limit hits.
                    peer.sent.push(n);
                } else {
                    assert_eq!(n, len, "send queued part of a message");
                    peer.sent.push(len);
                }
            }
            Err(KcpError::TooManyFragments { .. }) => {}
            Err(e) => panic!("send: unexpected error {e:?}"),
        }
    }

    /// The byte at `offset` of the other peer's stream of sent messages.
    fn sent_stream_matches(&self, from: usize, offset: usize, data: &[u8]) -> bool {
        let sender = &self.peers[from];
        let mut start = 0usize;
        let mut at = offset;
        let mut k = 0usize;
        for (i, &len) in sender.sent.iter().enumerate() {
            if at >= start + len {
                start += len;
                continue;
            }
            let m = message(sender.tag, i as u32, len.max(5));
            while k < data.len() && at < start + len {
                if m[at - start] != data[k] {
                    return false;
                }
                at += 1;
                k += 1;
            }
            if k == data.len() {
                return true;
            }
            start += len;
        }
        k == data.len()
    }

    fn recv_all(&mut self, p: usize, probe_small: bool) {
        for _ in 0..600 {
            let size = match self.peers[p].kcp.peek_size() {
                Ok(n) => n,
                Err(KcpError::RecvEmpty | KcpError::RecvIncomplete) => return,
                Err(KcpError::BadFragments) => {
                    assert!(self.peers[p].forged, "BadFragments on an unforged path");
                    let mut buf = vec![0u8; 1 << 20];
                    assert_eq!(
                        self.peers[p].kcp.recv(&mut buf),
                        Err(KcpError::BadFragments)
                    );
                    continue;
                }
                Err(e) => panic!("peek_size: unexpected error {e:?}"),
            };
            let kcp = &mut self.peers[p].kcp;
            if probe_small && size > 0 {
                let mut small = vec![0u8; size - 1];
                assert_eq!(
                    kcp.recv(&mut small),
                    Err(KcpError::BufferTooSmall { needed: size })
                );
                assert_eq!(
                    kcp.peek_size(),
                    Ok(size),
                    "a failed recv consumed the message"
                );
            }
            let mut buf = vec![0u8; size];
            assert_eq!(
                kcp.recv(&mut buf),
                Ok(size),
                "recv disagrees with peek_size"
            );
            self.check_delivery(p, &buf);
        }
    }

    fn check_delivery(&mut self, p: usize, data: &[u8]) {
        if self.peers[p].forged {
            return;
        }
        let from = 1 - p;
        if self.stream {
            let offset = self.peers[p].received_bytes;
            assert!(
                self.sent_stream_matches(from, offset, data),
                "stream bytes at {offset} ({} bytes) were not sent there",
                data.len()
            );
            self.peers[p].received_bytes += data.len();
        } else {
            let i = self.peers[p].received_msgs;
            let sender = &self.peers[from];
            let len = *sender
                .sent
                .get(i)
                .unwrap_or_else(|| panic!("message {i} received, {} sent", sender.sent.len()));
            assert!(
                data == message(sender.tag, i as u32, len).as_slice(),
                "message {i} received with other contents ({} bytes, sent {len})",
                data.len()
            );
            self.peers[p].received_msgs += 1;
        }
    }

    fn all_delivered(&self, p: usize) -> bool {
        let sender = &self.peers[1 - p];
        if self.stream {
            self.peers[p].received_bytes == sender.sent.iter().sum::<usize>()
        } else {
            self.peers[p].received_msgs == sender.sent.len()
        }
    }

    fn check_invariants(&self) {
        for (i, p) in self.peers.iter().enumerate() {
            let k = &p.kcp;
            let held = k.heap_bytes() - k.snd_queue_heap_bytes();
            assert!(
                held <= k.memory_bound(),
                "peer {i} holds {held} bytes besides its send queue, memory_bound {}",
                k.memory_bound()
            );
            let s = k.snapshot();
            assert!(
                s.nsnd_buf <= k.snd_wnd(),
                "peer {i}: send buffer beyond the window"
            );
            assert!(
                s.nrcv_buf <= k.rcv_wnd(),
                "peer {i}: receive buffer beyond the window"
            );
            assert!(
                s.nrcv_que <= k.rcv_wnd(),
                "peer {i}: receive queue beyond the window"
            );
        }
    }

    fn check_time(&self, p: usize) {
        let k = &self.peers[p].kcp;
        let due = k.check(self.now);
        let d = time_diff(due, self.now);
        assert!(
            d >= 0 && d as u32 <= k.interval(),
            "check({}) = {due}: {d} ms away, interval {}",
            self.now,
            k.interval()
        );
    }

    fn crafted(&self, input: &mut Input<'_>) -> Vec<u8> {
        let mut d = Vec::new();
        for _ in 0..1 + (input.u8() & 1) {
            let flags = input.u8();
            let cmd = [
                Command::Push,
                Command::Ack,
                Command::WindowAsk,
                Command::WindowTell,
            ][(flags & 3) as usize];
            let small = |v: u32| if flags & 0x80 != 0 { v } else { v % 300 };
            let len = input.u8() as u32 * 6;
            let h = SegmentHeader {
                conv: if flags & 4 != 0 {
                    input.u32()
                } else {
                    self.conv
                },
                cmd,
                frg: if flags & 8 != 0 { input.u8() } else { 0 },
                wnd: input.u16(),
                ts: input.u32(),
                sn: small(input.u32()),
                una: small(input.u32()),
                len: if flags & 16 != 0 { input.u32() } else { len },
            };
            d.extend_from_slice(&h.to_bytes());
            let fill = input.u8();
            d.extend((0..len).map(|i| fill.wrapping_add(i as u8)));
        }
        d
    }

    fn op(&mut self, input: &mut Input<'_>) {
        let code = input.u8();
        let p = (code >> 7) as usize;
        match code & 0x1f {
            0..=2 => self.deliver(p),
            3 => {
                self.peers[p].outbox.pop_front();
            }
            4 => {
                let q = &mut self.peers[p].outbox;
                if let Some(d) = q.front().cloned() {
                    if q.len() < QUEUE_LIMIT {
                        q.push_back(d);
                    }
                }
            }
            5 => {
                let q = &mut self.peers[p].outbox;
                if q.len() >= 2 {
                    let i = 1 + input.u8() as usize % (q.len() - 1);
                    q.swap(0, i);
                }
            }
            6 => {
                let (pos, value, kind) = (input.u16() as usize, input.u8(), input.u8());
                if let Some(d) = self.peers[p].outbox.front_mut() {
                    mutate(d, pos, value, kind);
                    self.forged();
                }
            }
            7 => {
                let len = input.u8() as usize * 4;
                let d = input.bytes(len).to_vec();
                self.forged();
                self.input_to(p, &d);
            }
            8 => {
                let d = self.crafted(input);
                self.forged();
                self.input_to(p, &d);
            }
            9 | 10 => self.now = self.now.wrapping_add(input.u8() as u32),
            11 => self.now = self.now.wrapping_add(input.u16() as u32 * 4),
            12..=14 => self.update(p),
            15 => self.flush_at(p),
            16 | 17 => {
                let len = input.u16();
                self.send(p, len, code & 0x20 != 0);
            }
            18 | 19 => self.recv_all(p, code & 0x20 != 0),
            20 => self.check_time(p),
            21 => {
                // A setting changed mid-run (allowed by ikcp; delivery may stall).
                let mtu = 50 + input.u16() as u32 % 1451;
                let _ = self.peers[p].kcp.set_mtu(mtu);
                self.changed = true;
            }
            _ => self.step(),
        }
        self.check_invariants();
    }

    /// An honest network for one round: deliver everything, update, receive, 10 ms.
    fn step(&mut self) {
        for _ in 0..QUEUE_LIMIT {
            if self.peers[0].outbox.is_empty() && self.peers[1].outbox.is_empty() {
                break;
            }
            self.deliver(0);
            self.deliver(1);
        }
        self.update(0);
        self.update(1);
        self.recv_all(0, false);
        self.recv_all(1, false);
        self.now = self.now.wrapping_add(10);
    }

    fn finish(mut self) {
        let honest = !self.changed && !self.peers[0].forged && !self.peers[1].forged;
        // Bounded in steps and in virtual time (at most ~20 minutes: RTOs back off to 60 s).
        let mut waited = 0u64;
        // Nothing to check for completeness once something was forged: a short run suffices.
        let (rounds, horizon) = if honest {
            (20_000, 1_200_000)
        } else {
            (500, 60_000)
        };
        for _ in 0..rounds {
            if (self.all_delivered(0) && self.all_delivered(1))
                || self.peers.iter().any(|p| p.kcp.is_dead())
                || waited > horizon
            {
                break;
            }
            for _ in 0..QUEUE_LIMIT {
                if self.peers[0].outbox.is_empty() && self.peers[1].outbox.is_empty() {
                    break;
                }
                self.deliver(0);
                self.deliver(1);
            }
            self.update(0);
            self.update(1);
            self.recv_all(0, false);
            self.recv_all(1, false);
            self.check_invariants();
            // Jump to the next timer of either peer.
            let next = [0, 1]
                .map(|p| time_diff(self.peers[p].kcp.check(self.now), self.now).max(1) as u32);
            let dt = next[0].min(next[1]);
            self.now = self.now.wrapping_add(dt);
            waited += dt as u64;
        }
        // A segment's timeout doubles (about) on every retransmission, from an RTO of at most
        // 60 s: after more than 4 it may lie beyond the 20 minutes waited.
        let retransmits: u32 = self.peers.iter().map(|p| p.kcp.snapshot().xmit).sum();
        if honest && retransmits <= 4 && !self.peers.iter().any(|p| p.kcp.is_dead()) {
            for p in 0..2 {
                assert!(
                    self.all_delivered(p),
                    "peer {p}: not everything arrived over an honest network ({} of {} \
                     messages, {} bytes)",
                    self.peers[p].received_msgs,
                    self.peers[1 - p].sent.len(),
                    self.peers[p].received_bytes
                );
            }
        }
    }
}

fn mutate(d: &mut Vec<u8>, pos: usize, value: u8, kind: u8) {
    if d.is_empty() {
        return;
    }
    let i = pos % d.len();
    match kind % 5 {
        0 => d[i] ^= 1 << (value % 8),
        1 => d[i] = value,
        2 => d.insert(i, value),
        3 => d.truncate(i),
        _ => {
            let i = i.min(d.len().saturating_sub(4));
            let v = [0u32, 1, u32::MAX, 0x8000_0000][(value % 4) as usize].to_le_bytes();
            for (k, b) in v.iter().enumerate() {
                if let Some(x) = d.get_mut(i + k) {
                    *x = *b;
                }
            }
        }
    }
}

/// One fuzz case.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mut pair = Pair::new(&mut input);
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        pair.op(&mut input);
    }
    pair.finish();
}
