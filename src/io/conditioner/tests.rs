use super::control::SplitMix64;
use super::*;
use crate::io::{ManualClock, MemoryNetwork, MemorySocket};

const MS: Duration = Duration::from_millis(1);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn a_addr() -> SocketAddr {
    addr("10.0.0.1:1000")
}

fn b_addr() -> SocketAddr {
    addr("10.0.0.2:2000")
}

/// A conditioned socket `a` and a plain socket `b` on a fresh network.
fn pair(seed: u64) -> (MemoryNetwork, LinkConditioner<MemorySocket>, MemorySocket) {
    let net = MemoryNetwork::with_queue_capacity(usize::MAX);
    let a = net.bind(a_addr()).unwrap();
    let b = net.bind(b_addr()).unwrap();
    (net, LinkConditioner::new(a, seed), b)
}

fn drain<T: Transport>(t: &mut T, now: Duration) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Some((n, _)) = t.recv_from(&mut buf, now).unwrap() {
        out.push(buf[..n].to_vec());
    }
    out
}

fn numbered(i: u32) -> [u8; 4] {
    i.to_be_bytes()
}

fn number(d: &[u8]) -> u32 {
    u32::from_be_bytes(d.try_into().unwrap())
}

#[test]
fn perfect_conditions_pass_through() {
    let (_net, mut a, mut b) = pair(1);
    let now = Duration::from_secs(5);
    assert!(a.send_to(b"out", b_addr(), now).unwrap());
    assert_eq!(drain(&mut b, now), vec![b"out".to_vec()]);
    b.send_to(b"in", a_addr(), now).unwrap();
    let mut buf = [0u8; 8];
    let (n, from) = a.recv_from(&mut buf, now).unwrap().unwrap();
    assert_eq!((&buf[..n], from), (&b"in"[..], b_addr()));
    assert_eq!(a.next_wakeup(), None);
    assert_eq!(a.queued(Direction::Both), 0);
    assert!(a.scratch.is_empty(), "perfect path needs no scratch buffer");
    let s = a.conditioner_stats();
    assert_eq!((s.sent, s.received, s.dropped, s.delayed), (1, 1, 0, 0));
}

#[test]
fn send_latency_holds_until_due() {
    let (_net, mut a, mut b) = pair(2);
    let clock = ManualClock::starting_at(Duration::from_secs(1));
    a.set_conditions(Direction::Send, Conditions::default().with_latency(50 * MS))
        .unwrap();
    let t0 = clock.now();
    assert!(a.send_to(b"late", b_addr(), t0).unwrap());
    assert_eq!(a.next_wakeup(), Some(t0 + 50 * MS));
    clock.advance(49 * MS);
    a.poll(clock.now()).unwrap();
    assert!(drain(&mut b, clock.now()).is_empty());
    clock.advance(MS);
    a.poll(clock.now()).unwrap();
    assert_eq!(drain(&mut b, clock.now()), vec![b"late".to_vec()]);
    assert_eq!(a.next_wakeup(), None);
    assert_eq!(a.stats(Direction::Send).delayed, 1);
}

#[test]
fn receive_latency_holds_until_due() {
    let (_net, mut a, mut b) = pair(3);
    let clock = ManualClock::starting_at(Duration::from_secs(1));
    a.set_conditions(
        Direction::Receive,
        Conditions::default().with_latency(50 * MS),
    )
    .unwrap();
    let t0 = clock.now();
    b.send_to(b"x", a_addr(), t0).unwrap();
    b.send_to(b"y", a_addr(), t0).unwrap();
    let mut buf = [0u8; 8];
    assert!(a.recv_from(&mut buf, t0).unwrap().is_none());
    assert_eq!(a.next_wakeup(), Some(t0 + 50 * MS));
    assert!(a.recv_from(&mut buf, t0 + 49 * MS).unwrap().is_none());
    assert_eq!(
        drain(&mut a, t0 + 50 * MS),
        vec![b"x".to_vec(), b"y".to_vec()]
    );
}

#[test]
fn opportunistic_flush_on_send_and_recv() {
    let (_net, mut a, mut b) = pair(4);
    a.set_conditions(Direction::Send, Conditions::default().with_latency(10 * MS))
        .unwrap();
    a.send_to(b"1", b_addr(), Duration::ZERO).unwrap();
    let mut buf = [0u8; 8];
    assert!(a.recv_from(&mut buf, 10 * MS).unwrap().is_none());
    assert_eq!(drain(&mut b, 10 * MS), vec![b"1".to_vec()]);
    a.send_to(b"2", b_addr(), 10 * MS).unwrap();
    a.send_to(b"3", b_addr(), 20 * MS).unwrap();
    assert_eq!(drain(&mut b, 20 * MS), vec![b"2".to_vec()]);
}

#[test]
fn loss_rate_is_close_to_setting() {
    let (_net, mut a, mut b) = pair(5);
    a.set_conditions(Direction::Send, Conditions::lossy(0.2))
        .unwrap();
    let n = 20_000;
    let mut received = 0usize;
    for i in 0..n {
        assert!(a.send_to(&numbered(i), b_addr(), Duration::ZERO).unwrap());
        received += drain(&mut b, Duration::ZERO).len();
    }
    let loss = 1.0 - received as f64 / f64::from(n);
    assert!((0.18..=0.22).contains(&loss), "observed loss {loss}");
    let s = a.stats(Direction::Send);
    assert_eq!(s.sent, u64::from(n));
    assert_eq!(s.dropped as usize, n as usize - received);
    assert_eq!(
        s.delayed, 0,
        "lost or zero-delay datagrams are never queued"
    );
}

#[test]
fn receive_loss_rate_is_close_to_setting() {
    let (_net, mut a, mut b) = pair(6);
    a.set_conditions(Direction::Receive, Conditions::lossy(0.2))
        .unwrap();
    let n = 20_000u32;
    let mut received = 0usize;
    for i in 0..n {
        b.send_to(&numbered(i), a_addr(), Duration::ZERO).unwrap();
        if i % 100 == 99 {
            received += drain(&mut a, Duration::ZERO).len();
        }
    }
    let loss = 1.0 - received as f64 / f64::from(n);
    assert!((0.18..=0.22).contains(&loss), "observed loss {loss}");
    assert_eq!(a.stats(Direction::Receive).received, u64::from(n));
}

#[test]
fn duplicate_delivers_twice() {
    let (_net, mut a, mut b) = pair(7);
    a.set_conditions(Direction::Both, Conditions::default().with_duplicate(1.0))
        .unwrap();
    for i in 0..100 {
        a.send_to(&numbered(i), b_addr(), Duration::ZERO).unwrap();
    }
    let got: Vec<u32> = drain(&mut b, Duration::ZERO)
        .iter()
        .map(|d| number(d))
        .collect();
    let expected: Vec<u32> = (0..100).flat_map(|i| [i, i]).collect();
    assert_eq!(got, expected);
    for i in 0..50 {
        b.send_to(&numbered(i), a_addr(), Duration::ZERO).unwrap();
    }
    let got: Vec<u32> = drain(&mut a, Duration::ZERO)
        .iter()
        .map(|d| number(d))
        .collect();
    let expected: Vec<u32> = (0..50).flat_map(|i| [i, i]).collect();
    assert_eq!(got, expected);
    assert_eq!(a.conditioner_stats().duplicated, 150);
}

#[test]
fn duplicate_with_jitter_delivers_each_twice() {
    let (_net, mut a, mut b) = pair(8);
    let c = Conditions::default()
        .with_duplicate(1.0)
        .with_latency(5 * MS)
        .with_jitter(20 * MS);
    a.set_conditions(Direction::Send, c).unwrap();
    for i in 0..200 {
        a.send_to(&numbered(i), b_addr(), i * MS).unwrap();
    }
    a.poll(Duration::from_secs(1)).unwrap();
    let mut got: Vec<u32> = drain(&mut b, Duration::ZERO)
        .iter()
        .map(|d| number(d))
        .collect();
    got.sort_unstable();
    let expected: Vec<u32> = (0..200).flat_map(|i| [i, i]).collect();
    assert_eq!(got, expected);
}

#[test]
fn reorder_produces_out_of_order_delivery() {
    let (_net, mut a, mut b) = pair(9);
    let clock = ManualClock::new();
    a.set_conditions(
        Direction::Send,
        Conditions::default().with_reorder(0.3, 10 * MS),
    )
    .unwrap();
    let mut got = Vec::new();
    for i in 0..200 {
        a.send_to(&numbered(i), b_addr(), clock.now()).unwrap();
        clock.advance(MS);
        a.poll(clock.now()).unwrap();
        got.extend(drain(&mut b, clock.now()).iter().map(|d| number(d)));
    }
    clock.advance(Duration::from_secs(1));
    a.poll(clock.now()).unwrap();
    got.extend(drain(&mut b, clock.now()).iter().map(|d| number(d)));
    assert_eq!(got.len(), 200);
    assert!(got.windows(2).any(|w| w[0] > w[1]), "expected reordering");
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..200).collect::<Vec<_>>());
    let reordered = a.stats(Direction::Send).reordered;
    assert!((30..=90).contains(&reordered), "reordered {reordered}");
}

#[test]
fn receive_reorder_returns_in_due_order() {
    let (_net, mut a, mut b) = pair(10);
    a.set_conditions(
        Direction::Receive,
        Conditions::default().with_reorder(0.5, 5 * MS),
    )
    .unwrap();
    let mut got = Vec::new();
    for i in 0..100u32 {
        let now = Duration::from_millis(u64::from(i));
        b.send_to(&numbered(i), a_addr(), now).unwrap();
        got.extend(drain(&mut a, now).iter().map(|d| number(d)));
    }
    got.extend(
        drain(&mut a, Duration::from_secs(1))
            .iter()
            .map(|d| number(d)),
    );
    assert_eq!(got.len(), 100);
    assert!(got.windows(2).any(|w| w[0] > w[1]));
}

/// A run with every kind of impairment, recording (time, payload) deliveries.
fn simulate(seed: u64) -> Vec<(Duration, bool, u32, usize)> {
    let (_net, mut a, mut b) = pair(seed);
    let c = Conditions::lossy(0.1)
        .with_latency(20 * MS)
        .with_jitter(15 * MS)
        .with_reorder(0.1, 30 * MS)
        .with_duplicate(0.05)
        .with_bandwidth(200_000);
    a.set_conditions(Direction::Both, c).unwrap();
    let clock = ManualClock::new();
    let mut log = Vec::new();
    for i in 0..2_000u32 {
        let size = 20 + (i as usize * 7) % 500;
        let mut payload = vec![0u8; size];
        payload[..4].copy_from_slice(&numbered(i));
        a.send_to(&payload, b_addr(), clock.now()).unwrap();
        b.send_to(&payload, a_addr(), clock.now()).unwrap();
        clock.advance(Duration::from_micros(700));
        a.poll(clock.now()).unwrap();
        let mut buf = [0u8; 600];
        while let Some((n, _)) = b.recv_from(&mut buf, clock.now()).unwrap() {
            log.push((clock.now(), false, number(&buf[..4]), n));
        }
        while let Some((n, _)) = a.recv_from(&mut buf, clock.now()).unwrap() {
            log.push((clock.now(), true, number(&buf[..4]), n));
        }
    }
    log
}

#[test]
fn same_seed_same_fates() {
    let first = simulate(1234);
    let second = simulate(1234);
    assert!(first.len() > 1000);
    assert_eq!(first, second);
    assert_ne!(first, simulate(4321));
}

#[test]
fn reseeding_makes_fates_reproducible() {
    let fates = |c: &mut LinkConditioner<MemorySocket>, b: &mut MemorySocket| {
        let t = Duration::ZERO;
        (0..2000u32)
            .map(|i| {
                c.send_to(&i.to_le_bytes(), b_addr(), t).unwrap();
                !drain(b, t).is_empty()
            })
            .collect::<Vec<bool>>()
    };
    let (_n1, mut a1, mut b1) = pair(1);
    let (_n2, mut a2, mut b2) = pair(2);
    for a in [&mut a1, &mut a2] {
        a.set_conditions(Direction::Send, Conditions::lossy(0.3))
            .unwrap();
    }
    assert_ne!(fates(&mut a1, &mut b1), fates(&mut a2, &mut b2));
    a1.reseed(77);
    a2.reseed(77);
    let (f1, f2) = (fates(&mut a1, &mut b1), fates(&mut a2, &mut b2));
    assert_eq!(f1, f2);
    let lost = f1.iter().filter(|ok| !**ok).count();
    assert!((500..700).contains(&lost), "{lost} of 2000 lost at 30%");
}

#[test]
fn per_peer_conditions_override_global() {
    let net = MemoryNetwork::new();
    let mut a = LinkConditioner::new(net.bind(a_addr()).unwrap(), 11);
    let mut b = net.bind(b_addr()).unwrap();
    let c_addr = addr("10.0.0.3:3000");
    let mut c = net.bind(c_addr).unwrap();
    a.set_conditions(Direction::Both, Conditions::lossy(1.0))
        .unwrap();
    a.set_peer_conditions(c_addr, Direction::Both, Conditions::default())
        .unwrap();
    let t = Duration::ZERO;
    for _ in 0..10 {
        a.send_to(b"m", b_addr(), t).unwrap();
        a.send_to(b"m", c_addr, t).unwrap();
        b.send_to(b"from b", a_addr(), t).unwrap();
        c.send_to(b"from c", a_addr(), t).unwrap();
    }
    assert_eq!(drain(&mut b, t).len(), 0);
    assert_eq!(drain(&mut c, t).len(), 10);
    assert_eq!(drain(&mut a, t), vec![b"from c".to_vec(); 10]);

    // Send-only override: receiving from c is lossy again.
    a.clear_peer_conditions(c_addr);
    a.set_peer_conditions(c_addr, Direction::Send, Conditions::default())
        .unwrap();
    a.send_to(b"m", c_addr, t).unwrap();
    c.send_to(b"from c", a_addr(), t).unwrap();
    assert_eq!(drain(&mut c, t).len(), 1);
    assert!(drain(&mut a, t).is_empty());

    a.clear_peer_conditions(c_addr);
    a.send_to(b"m", c_addr, t).unwrap();
    assert!(drain(&mut c, t).is_empty());

    // A lossy override under perfect global conditions.
    a.set_conditions(Direction::Both, Conditions::default())
        .unwrap();
    a.set_peer_conditions(b_addr(), Direction::Send, Conditions::lossy(1.0))
        .unwrap();
    a.send_to(b"m", b_addr(), t).unwrap();
    a.send_to(b"m", c_addr, t).unwrap();
    assert!(drain(&mut b, t).is_empty());
    assert_eq!(drain(&mut c, t).len(), 1);
}

#[test]
fn validate_rejects_bad_values() {
    let bad = [
        Conditions::lossy(1.5),
        Conditions::lossy(f64::NAN),
        Conditions::lossy(-0.1),
        Conditions::lossy(f64::INFINITY),
        Conditions::default().with_duplicate(2.0),
        Conditions::default().with_reorder(f64::NAN, MS),
        Conditions::default().with_reorder(0.5, Duration::ZERO),
        Conditions::default().with_latency(Duration::MAX),
        Conditions::default().with_jitter(Duration::from_secs(7200)),
        Conditions::default().with_bandwidth(0),
        Conditions::default().with_burst_loss(GilbertElliott::new(0.1, 0.5, 0.0, 1.1)),
        Conditions::default().with_burst_loss(GilbertElliott::new(-1.0, 0.5, 0.0, 1.0)),
    ];
    for c in bad {
        assert!(
            matches!(c.validate(), Err(Error::InvalidConfig(_))),
            "{c:?} should be rejected"
        );
    }
    let good = [
        Conditions::default(),
        Conditions::lossy(1.0),
        Conditions::lossy(0.0)
            .with_latency(Duration::from_secs(3600))
            .with_reorder(1.0, MS)
            .with_bandwidth(1),
        Conditions::default().with_burst_loss(GilbertElliott::new(0.0, 0.0, 0.0, 1.0)),
    ];
    for c in good {
        assert!(c.validate().is_ok(), "{c:?} should be accepted");
    }

    let (_net, mut a, mut b) = pair(12);
    assert!(a
        .set_conditions(Direction::Both, Conditions::lossy(1.5))
        .is_err());
    assert!(a
        .set_peer_conditions(b_addr(), Direction::Send, Conditions::lossy(-1.0))
        .is_err());
    a.send_to(b"still perfect", b_addr(), Duration::ZERO)
        .unwrap();
    assert_eq!(drain(&mut b, Duration::ZERO).len(), 1);
}

#[test]
fn is_perfect() {
    assert!(Conditions::default().is_perfect());
    assert!(!Conditions::lossy(0.1).is_perfect());
    assert!(!Conditions::default().with_latency(MS).is_perfect());
    assert!(!Conditions::default().with_bandwidth(1000).is_perfect());
    assert!(!Conditions::default()
        .with_burst_loss(GilbertElliott::new(0.1, 0.1, 0.0, 1.0))
        .is_perfect());
}

#[test]
fn bandwidth_cap_delays_then_drops() {
    let (_net, mut a, mut b) = pair(13);
    // 10 000 B/s: a 1000-byte datagram takes 100 ms to serialise.
    a.set_conditions(
        Direction::Send,
        Conditions::default().with_bandwidth(10_000),
    )
    .unwrap();
    let data = [0u8; 1000];
    for _ in 0..12 {
        assert!(a.send_to(&data, b_addr(), Duration::ZERO).unwrap());
    }
    // 10 fit in the 1 s backlog; the 11th would finish at 1.1 s.
    let s = a.stats(Direction::Send);
    assert_eq!((s.sent, s.delayed, s.dropped), (12, 10, 2));
    a.poll(99 * MS).unwrap();
    assert_eq!(drain(&mut b, Duration::ZERO).len(), 0);
    a.poll(100 * MS).unwrap();
    assert_eq!(drain(&mut b, Duration::ZERO).len(), 1);
    a.poll(999 * MS).unwrap();
    assert_eq!(drain(&mut b, Duration::ZERO).len(), 8);
    a.poll(1000 * MS).unwrap();
    assert_eq!(drain(&mut b, Duration::ZERO).len(), 1);
    // Once the link is idle again, a datagram waits only its own 100 ms.
    let t = Duration::from_secs(2);
    a.send_to(&data, b_addr(), t).unwrap();
    assert_eq!(a.next_wakeup(), Some(t + 100 * MS));
    // Half-way through, the link accepts more, queued behind it.
    a.send_to(&data[..500], b_addr(), t + 50 * MS).unwrap();
    assert_eq!(a.queued(Direction::Send), 2);
    a.poll(t + 149 * MS).unwrap();
    assert_eq!(drain(&mut b, t).len(), 1);
    a.poll(t + 150 * MS).unwrap();
    assert_eq!(drain(&mut b, t).len(), 1);
}

#[test]
fn bandwidth_throughput_matches_cap() {
    let (_net, mut a, mut b) = pair(14);
    a.set_conditions(
        Direction::Send,
        Conditions::default().with_bandwidth(100_000),
    )
    .unwrap();
    let clock = ManualClock::new();
    let mut bytes = 0usize;
    // Offer 1 MB/s for 5 s; only ~100 kB/s gets through.
    for _ in 0..5_000 {
        a.send_to(&[0u8; 1000], b_addr(), clock.now()).unwrap();
        clock.advance(MS);
        a.poll(clock.now()).unwrap();
        bytes += drain(&mut b, clock.now())
            .iter()
            .map(Vec::len)
            .sum::<usize>();
    }
    assert!((490_000..=510_000).contains(&bytes), "{bytes} bytes in 5 s");
}

#[test]
fn gilbert_elliott_produces_bursts() {
    let (_net, mut a, mut b) = pair(15);
    let ge = GilbertElliott::new(0.05, 0.25, 0.0, 1.0);
    a.set_conditions(Direction::Send, Conditions::default().with_burst_loss(ge))
        .unwrap();
    let n = 20_000u32;
    for i in 0..n {
        a.send_to(&numbered(i), b_addr(), Duration::ZERO).unwrap();
    }
    let got: Vec<u32> = drain(&mut b, Duration::ZERO)
        .iter()
        .map(|d| number(d))
        .collect();
    let mut delivered = vec![false; n as usize];
    for i in &got {
        delivered[*i as usize] = true;
    }
    let mut bursts = Vec::new();
    let mut run = 0u32;
    for d in delivered {
        if d {
            if run > 0 {
                bursts.push(run);
            }
            run = 0;
        } else {
            run += 1;
        }
    }
    let mean = f64::from(bursts.iter().sum::<u32>()) / bursts.len() as f64;
    assert!(mean > 2.0, "mean burst length {mean}");
    let loss = 1.0 - got.len() as f64 / f64::from(n);
    let expected = ge.average_loss();
    assert!(
        (loss - expected).abs() < 0.04,
        "loss {loss}, expected {expected}"
    );
}

#[test]
fn burst_loss_replaces_loss() {
    let (_net, mut a, mut b) = pair(16);
    let c = Conditions::lossy(1.0).with_burst_loss(GilbertElliott::new(0.0, 0.0, 0.0, 1.0));
    a.set_conditions(Direction::Send, c).unwrap();
    for i in 0..100 {
        a.send_to(&numbered(i), b_addr(), Duration::ZERO).unwrap();
    }
    assert_eq!(drain(&mut b, Duration::ZERO).len(), 100);
}

#[test]
fn delay_queue_is_bounded() {
    let (_net, mut a, b) = pair(17);
    a.set_conditions(
        Direction::Send,
        Conditions::default().with_latency(Duration::from_secs(1)),
    )
    .unwrap();
    let extra = 100;
    for _ in 0..(MAX_QUEUED_DATAGRAMS + extra) {
        a.send_to(b"q", b_addr(), Duration::ZERO).unwrap();
    }
    assert_eq!(a.queued(Direction::Send), MAX_QUEUED_DATAGRAMS);
    assert_eq!(a.stats(Direction::Send).dropped, extra as u64);
    a.poll(Duration::from_secs(1)).unwrap();
    assert_eq!(a.queued(Direction::Send), 0);
    assert_eq!(b.pending(), MAX_QUEUED_DATAGRAMS);
    assert!(a.send.free.len() <= MAX_FREE_BUFFERS);
}

#[test]
fn steady_state_reuses_buffers() {
    let (_net, mut a, mut b) = pair(18);
    a.set_conditions(Direction::Send, Conditions::default().with_latency(MS))
        .unwrap();
    for i in 0..100u32 {
        let now = Duration::from_millis(u64::from(i));
        a.send_to(&[1u8; 100], b_addr(), now).unwrap();
        a.poll(now).unwrap();
    }
    a.poll(Duration::from_secs(1)).unwrap();
    assert_eq!(drain(&mut b, Duration::ZERO).len(), 100);
    assert!(
        a.send.free.len() <= 2,
        "buffers reused: {}",
        a.send.free.len()
    );
}

#[test]
fn a_handle_controls_a_boxed_conditioner() {
    let (_net, a, mut b) = pair(19);
    let handle = a.handle();
    let mut t: Box<dyn Transport> = Box::new(a);
    handle
        .set_conditions(Direction::Send, Conditions::default().with_latency(5 * MS))
        .unwrap();
    t.send_to(b"boxed", b_addr(), Duration::ZERO).unwrap();
    assert_eq!(t.next_wakeup(), Some(5 * MS));
    assert_eq!(t.poll(5 * MS).unwrap(), PollReport::default());
    assert_eq!(drain(&mut b, Duration::ZERO), vec![b"boxed".to_vec()]);
    assert_eq!(handle.conditioner_stats().delayed, 1);
    assert_eq!(t.local_addr().unwrap(), a_addr());
    // Clones share the settings: back to perfect, from another thread.
    let clone = handle.clone();
    std::thread::spawn(move || {
        clone
            .set_conditions(Direction::Both, Conditions::default())
            .unwrap()
    })
    .join()
    .unwrap();
    t.send_to(b"direct", b_addr(), 5 * MS).unwrap();
    assert_eq!(drain(&mut b, Duration::ZERO), vec![b"direct".to_vec()]);
    assert_eq!(t.next_wakeup(), None);
    let s = handle.stats(Direction::Send);
    assert_eq!((s.sent, s.delayed), (2, 1));
    // Through the trait, as code taking either does.
    let ctl: &dyn ConditionerControl = &handle;
    assert_eq!(ctl.conditioner_stats(), handle.stats(Direction::Both));
}

#[test]
fn per_peer_settings_through_a_handle_reach_the_conditioner() {
    let (_net, mut a, mut b) = pair(24);
    let handle = a.handle();
    handle
        .set_peer_conditions(b_addr(), Direction::Send, Conditions::lossy(1.0))
        .unwrap();
    assert!(a.send_to(b"x", b_addr(), Duration::ZERO).unwrap());
    assert!(drain(&mut b, Duration::ZERO).is_empty());
    assert_eq!(a.stats(Direction::Send).dropped, 1);
    handle.clear_peer_conditions(b_addr());
    assert!(a.send_to(b"y", b_addr(), Duration::ZERO).unwrap());
    assert_eq!(drain(&mut b, Duration::ZERO), vec![b"y".to_vec()]);
    let err = handle
        .set_conditions(Direction::Both, Conditions::lossy(2.0))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
}

/// A transport that refuses every datagram with `Ok(false)` (a full socket buffer) and
/// reports a refused peer and one drop of its own at each poll.
struct Refusing;

impl Transport for Refusing {
    fn recv_from(&mut self, _: &mut [u8], _: Duration) -> io::Result<Option<(usize, SocketAddr)>> {
        Ok(None)
    }

    fn send_to(&mut self, _: &[u8], _: SocketAddr, _: Duration) -> io::Result<bool> {
        Ok(false)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(a_addr())
    }

    fn poll(&mut self, _: Duration) -> io::Result<PollReport> {
        Ok(PollReport::new(1, true))
    }

    fn next_wakeup(&self) -> Option<Duration> {
        None
    }

    fn wait(&mut self, _: Duration) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn delayed_datagrams_the_inner_transport_refuses_are_send_drops() {
    let mut a = LinkConditioner::new(Refusing, 25);
    // Undelayed: the refusal is `send_to`'s own result, not a later drop.
    assert!(!a.send_to(b"now", b_addr(), Duration::ZERO).unwrap());
    assert_eq!(a.poll(Duration::ZERO).unwrap(), PollReport::new(1, true));
    // Delayed, with every datagram duplicated: `send_to` accepts it, and the refusal
    // at release counts once (the copy is not the application's datagram).
    a.set_conditions(
        Direction::Send,
        Conditions::default()
            .with_latency(10 * MS)
            .with_duplicate(1.0),
    )
    .unwrap();
    for _ in 0..3 {
        assert!(a.send_to(b"later", b_addr(), Duration::ZERO).unwrap());
    }
    assert_eq!(a.queued(Direction::Send), 6);
    assert_eq!(a.poll(9 * MS).unwrap(), PollReport::new(1, true));
    assert_eq!(a.poll(10 * MS).unwrap(), PollReport::new(4, true));
    assert_eq!(a.queued(Direction::Send), 0);
}

#[test]
fn nested_conditioners_poll_through() {
    let net = MemoryNetwork::new();
    let inner = LinkConditioner::new(net.bind(a_addr()).unwrap(), 20);
    let mut b = net.bind(b_addr()).unwrap();
    let mut outer = LinkConditioner::new(inner, 21);
    outer
        .set_conditions(Direction::Send, Conditions::default().with_latency(10 * MS))
        .unwrap();
    outer
        .inner_mut()
        .set_conditions(Direction::Send, Conditions::default().with_latency(10 * MS))
        .unwrap();
    outer.send_to(b"deep", b_addr(), Duration::ZERO).unwrap();
    outer.poll(10 * MS).unwrap();
    assert_eq!(outer.next_wakeup(), Some(20 * MS));
    assert!(drain(&mut b, Duration::ZERO).is_empty());
    outer.poll(20 * MS).unwrap();
    assert_eq!(drain(&mut b, Duration::ZERO).len(), 1);
    let inner = outer.into_inner();
    assert_eq!(inner.stats(Direction::Send).delayed, 1);
    assert_eq!(inner.inner().local_addr().unwrap(), a_addr());
}

#[test]
fn time_going_backwards_does_not_panic() {
    let (_net, mut a, mut b) = pair(22);
    let c = Conditions::lossy(0.1)
        .with_latency(5 * MS)
        .with_jitter(5 * MS)
        .with_bandwidth(50_000)
        .with_reorder(0.2, 3 * MS)
        .with_duplicate(0.2);
    a.set_conditions(Direction::Both, c).unwrap();
    let times = [
        Duration::from_secs(10),
        Duration::ZERO,
        Duration::MAX,
        3 * MS,
    ];
    let mut buf = [0u8; 4];
    for (i, t) in times.iter().cycle().take(400).enumerate() {
        a.send_to(&[0u8; 64], b_addr(), *t).unwrap();
        b.send_to(&[1u8; 64], a_addr(), *t).unwrap();
        a.poll(*t).unwrap();
        let _ = a.recv_from(&mut buf[..i % 4], *t).unwrap();
        let _ = a.next_wakeup();
    }
    a.poll(Duration::MAX).unwrap();
    drain(&mut a, Duration::MAX);
    assert_eq!(a.queued(Direction::Both), 0);
}

#[test]
fn dropped_datagrams_still_report_sent() {
    let (_net, mut a, _b) = pair(23);
    a.set_conditions(Direction::Send, Conditions::lossy(1.0))
        .unwrap();
    assert!(a.send_to(b"gone", b_addr(), Duration::ZERO).unwrap());
    assert_eq!(a.stats(Direction::Send).dropped, 1);
    assert_eq!(a.stats(Direction::Receive), ConditionerStats::default());
}

#[test]
fn rng_helpers() {
    let mut r = SplitMix64(0);
    for _ in 0..1000 {
        let f = r.next_f64();
        assert!((0.0..1.0).contains(&f));
        assert!(r.up_to(3) <= 3);
        assert_eq!(r.up_to(0), 0);
        assert!(r.chance(1.0));
        assert!(!r.chance(0.0));
    }
    let _ = r.up_to(u64::MAX);
}
