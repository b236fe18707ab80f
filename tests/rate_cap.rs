//! The per-connection send-rate cap (issue 19, item 3): a capped bulk transfer holds the cap
//! within 5 % over 10 s of virtual time, unreliable messages keep flowing (first) during it,
//! `NO_DELAY` drops what the cap holds back, held messages over the FIFO's bound are dropped
//! and counted (nothing vanishes uncounted), the cap is set and lifted per connection and
//! shows in `ConnectionQuality`, and bad caps are typed errors. Virtual clock, memory
//! network.

mod common;

use std::time::Duration;

use common::Sim;
use kcpnet::io::{Conditions, Direction};
use kcpnet::{Channel, Config, ConnectionId, Error, SendFlags};

/// Windows large enough that, uncapped, a bulk transfer over the 1 ms memory link moves
/// several MB/s: whatever holds it to the cap is the cap.
fn bulk_config() -> Config {
    Config {
        send_window_size: 1024,
        receive_window_size: 1024,
        ..Config::default()
    }
}

/// [`bulk_config`] with a send-rate cap of `cap` bytes per second.
fn capped(cap: u32) -> Config {
    Config {
        send_rate_limit: Some(cap),
        ..bulk_config()
    }
}

/// The unreliable messages client 0 received, from the `skip`-th on.
fn unreliable_from(sim: &Sim, skip: usize) -> Vec<&[u8]> {
    common::data_of(&sim.client_events[0], None)
        .into_iter()
        .filter(|(c, _)| *c == Channel::Unreliable)
        .skip(skip)
        .map(|(_, d)| d)
        .collect()
}

/// A message's first four bytes, little-endian (the tests' sequence numbers).
fn seq_of(d: &[u8]) -> u32 {
    u32::from_le_bytes(d[..4].try_into().unwrap())
}

/// Keeps `id`'s reliable send queue topped up with 1000-byte messages (at most 256 KiB
/// queued); returns how many were queued.
fn top_up(sim: &mut Sim, id: ConnectionId) -> u64 {
    let mut n = 0;
    while sim.server.send_capacity(id).unwrap_or(0) > 4 * 1024 * 1024 - 256 * 1024 && n < 1_000 {
        sim.server
            .send(id, &[0xB5; 1000], Channel::Reliable)
            .unwrap();
        n += 1;
    }
    n
}

fn bytes_sent(sim: &Sim, id: ConnectionId) -> u64 {
    sim.server.connection_stats(id).unwrap().bytes_sent
}

/// One connected client; returns the server's id of it.
fn one_client(server: Config, client: Config) -> (Sim, ConnectionId) {
    let mut sim = Sim::new(server, 19);
    let c = sim.add_client(client);
    sim.connect_all(1_000);
    let id = sim.server_id_of(c).unwrap();
    sim.run_for(Duration::from_millis(100));
    (sim, id)
}

#[test]
fn a_capped_bulk_transfer_holds_the_cap_within_5_percent_over_10_s() {
    const CAP: u32 = 100_000;
    let (mut sim, id) = one_client(bulk_config(), bulk_config());

    // Uncapped, the same transfer moves far more than the cap in a second.
    let start = bytes_sent(&sim, id);
    for _ in 0..1_000 {
        top_up(&mut sim, id);
        sim.step();
    }
    let uncapped = bytes_sent(&sim, id) - start;
    assert!(
        uncapped > 10 * CAP as u64,
        "uncapped bulk moved only {uncapped} B/s: the test would not show the cap"
    );

    sim.server.set_send_rate(id, Some(CAP)).unwrap();
    assert_eq!(sim.server.send_rate(id), Some(CAP));
    // Let the backlog the uncapped second left in flight drain into the cap's rhythm.
    for _ in 0..1_000 {
        top_up(&mut sim, id);
        sim.step();
    }
    let start = bytes_sent(&sim, id);
    let delivered_before = common::data_of(&sim.client_events[0], None).len();
    for _ in 0..10_000 {
        top_up(&mut sim, id);
        sim.step();
    }
    let rate = (bytes_sent(&sim, id) - start) as f64 / 10.0;
    let ratio = rate / CAP as f64;
    eprintln!(
        "capped at {CAP} B/s: {rate:.0} B/s over 10 s ({ratio:.4}×); uncapped {uncapped} B/s"
    );
    assert!(
        (0.95..=1.05).contains(&ratio),
        "capped at {CAP} B/s, sent {rate:.0} B/s over 10 s ({ratio:.3}×)"
    );
    // And it is a transfer, not a stall: about the cap's worth of messages arrived.
    let delivered = common::data_of(&sim.client_events[0], None).len() - delivered_before;
    assert!(
        delivered as f64 > 0.9 * 10.0 * CAP as f64 / 1000.0 * 0.95,
        "only {delivered} messages arrived in 10 s"
    );
    let q = sim.server.connection_quality(id).unwrap();
    assert_eq!(q.send_rate_limit, Some(CAP));
    // About 256 KiB waits behind the cap: 2.6 s at 100 kB/s.
    let ms = q.send_queue_ms.unwrap();
    assert!(
        (2_000..=3_500).contains(&ms),
        "send_queue_ms {ms} for ~256 KiB queued at {CAP} B/s"
    );
}

#[test]
fn the_cap_counts_retransmissions_on_a_lossy_link() {
    const CAP: u32 = 80_000;
    let (mut sim, id) = one_client(capped(CAP), bulk_config());
    // 5 % loss and 10 ms each way: KCP retransmits, and those bytes count too.
    sim.set_all_conditions(
        Direction::Send,
        Conditions::lossy(0.05).with_latency(Duration::from_millis(10)),
    );
    for _ in 0..1_000 {
        top_up(&mut sim, id);
        sim.step();
    }
    let before = sim.server.connection_stats(id).unwrap();
    for _ in 0..10_000 {
        top_up(&mut sim, id);
        sim.step();
    }
    let after = sim.server.connection_stats(id).unwrap();
    let rate = (after.bytes_sent - before.bytes_sent) as f64 / 10.0;
    let resent = (after.retransmits + after.fast_retransmits)
        - (before.retransmits + before.fast_retransmits);
    eprintln!("lossy link: {rate:.0} B/s under {CAP} B/s, {resent} segments resent");
    assert!(resent > 0, "no retransmission: the test shows nothing");
    assert!(
        rate <= CAP as f64 * 1.05,
        "sent {rate:.0} B/s under a {CAP} B/s cap on a lossy link"
    );
    assert!(
        rate >= CAP as f64 * 0.5,
        "the lossy transfer stalled at {rate:.0} B/s"
    );
}

#[test]
fn unreliable_messages_keep_flowing_first_during_a_capped_bulk_transfer() {
    const CAP: u32 = 60_000;
    let (mut sim, id) = one_client(capped(CAP), bulk_config());
    assert_eq!(sim.server.send_rate(id), Some(CAP));

    // 60 Hz game state (100 bytes, unreliable) beside a bulk transfer that fills the cap.
    let mut sent_at = Vec::new();
    let start = bytes_sent(&sim, id);
    for step in 0..5_000u64 {
        top_up(&mut sim, id);
        if step % 16 == 0 {
            let seq = sent_at.len() as u32;
            let mut msg = [0u8; 100];
            msg[..4].copy_from_slice(&seq.to_le_bytes());
            sim.server.send(id, &msg, Channel::Unreliable).unwrap();
            sent_at.push(sim.steps);
        }
        sim.step();
    }
    sim.run_for(Duration::from_millis(100));
    let stats = sim.server.connection_stats(id).unwrap();
    assert_eq!(stats.unreliable_dropped_rate, 0);
    assert_eq!(stats.unreliable_sent, sent_at.len() as u64);

    // Every state update arrived, in order (how long they waited: the next test).
    let arrivals: Vec<u32> = unreliable_from(&sim, 0).into_iter().map(seq_of).collect();
    assert_eq!(arrivals, (0..sent_at.len() as u32).collect::<Vec<_>>());
    // The reliable transfer got the rest of the cap, and the total stayed at it.
    let rate = (bytes_sent(&sim, id) - start) as f64 / 5.1;
    assert!(
        rate <= CAP as f64 * 1.05 && rate >= CAP as f64 * 0.9,
        "sent {rate:.0} B/s under a {CAP} B/s cap"
    );
}

#[test]
fn unreliable_messages_wait_at_most_a_tick_or_two_behind_capped_bulk_data() {
    const CAP: u32 = 60_000;
    let (mut sim, id) = one_client(capped(CAP), bulk_config());
    let mut worst = 0u64;
    let mut pending: Option<(u32, u64)> = None;
    let mut seq = 0u32;
    let mut seen = 0usize;
    for step in 0..3_000u64 {
        top_up(&mut sim, id);
        if step % 16 == 0 && step < 2_900 && pending.is_none() {
            sim.server
                .send(id, &seq.to_le_bytes(), Channel::Unreliable)
                .unwrap();
            pending = Some((seq, sim.steps));
            seq += 1;
        }
        sim.step();
        let got: Vec<u32> = unreliable_from(&sim, seen)
            .into_iter()
            .map(seq_of)
            .collect();
        seen += got.len();
        if let Some((s, at)) = pending {
            if got.contains(&s) {
                worst = worst.max(sim.steps - at);
                pending = None;
            }
        }
    }
    eprintln!("{seq} updates, the longest wait {worst} ms");
    assert!(seq > 150, "only {seq} updates went out");
    assert!(pending.is_none(), "an update never arrived");
    // KCP admits a segment only when the tokens cover it, so the bucket is rarely in debt
    // and an update finds tokens at once or within a tick: it waits for the link's 1 ms
    // and at most a few ticks, not behind a 1000-byte segment's 17 ms of cap.
    assert!(
        worst <= 5,
        "an unreliable update waited {worst} ms behind the bulk transfer"
    );
}

#[test]
fn no_delay_drops_what_the_cap_holds_back_and_never_blocks() {
    const CAP: u32 = 20_000;
    let (mut sim, id) = one_client(capped(CAP), bulk_config());
    let before = sim.server.connection_stats(id).unwrap();
    let mut offered = 0u64;
    for _ in 0..2_000 {
        top_up(&mut sim, id);
        for _ in 0..4 {
            sim.server
                .send_with(id, &[7u8; 200], Channel::Unreliable, SendFlags::NO_DELAY)
                .unwrap();
            offered += 1;
        }
        sim.step();
    }
    sim.run_for(Duration::from_millis(100));
    let s = sim.server.connection_stats(id).unwrap();
    let sent = s.unreliable_sent - before.unreliable_sent;
    let dropped = s.unreliable_dropped_no_delay - before.unreliable_dropped_no_delay;
    // 4 × 200 B a ms is 40× the cap: most cannot leave, and none waits.
    assert!(dropped > offered / 2, "{dropped} of {offered} dropped");
    assert!(sent > 0, "the cap let no NO_DELAY message through");
    assert_eq!(
        sent + dropped,
        offered,
        "a NO_DELAY message was neither sent nor counted"
    );
    assert_eq!(s.unreliable_dropped_rate, 0, "NO_DELAY messages were held");
    let received = unreliable_from(&sim, 0).len() as u64;
    assert_eq!(received, sent);
}

#[test]
fn held_messages_beyond_the_bound_are_dropped_and_counted_never_lost_silently() {
    const CAP: u32 = 10_000;
    let (mut sim, id) = one_client(Config::default(), Config::default());
    sim.server.set_send_rate(id, Some(CAP)).unwrap();
    let before = sim.server.connection_stats(id).unwrap();
    // 100 messages of 1000 bytes at once against a 2,400-byte bucket and a 2,500-byte FIFO.
    for i in 0..100u32 {
        let mut m = vec![0u8; 1000];
        m[..4].copy_from_slice(&i.to_le_bytes());
        sim.server.send(id, &m, Channel::Unreliable).unwrap();
    }
    assert!(
        sim.server
            .connection_quality(id)
            .unwrap()
            .send_queue_ms
            .unwrap()
            > 0
    );
    sim.run_for(Duration::from_millis(2_000));
    let s = sim.server.connection_stats(id).unwrap();
    let sent = s.unreliable_sent - before.unreliable_sent;
    let dropped = s.unreliable_dropped_rate - before.unreliable_dropped_rate;
    assert_eq!(sent + dropped, 100, "sent {sent} + dropped {dropped}");
    assert!((2..=6).contains(&sent), "{sent} left under a 10 kB/s cap");
    let got: Vec<u32> = unreliable_from(&sim, 0).into_iter().map(seq_of).collect();
    // The first ones, in order: the held ones left after those the bucket covered.
    assert_eq!(got, (0..sent as u32).collect::<Vec<_>>());
}

#[test]
fn a_client_cap_from_the_config_paces_its_uploads_and_can_be_lifted() {
    const CAP: u32 = 50_000;
    let (mut sim, id) = one_client(bulk_config(), capped(CAP));
    assert_eq!(sim.clients[0].send_rate(), Some(CAP));
    assert_eq!(sim.server.send_rate(id), None);
    assert_eq!(
        sim.server.connection_quality(id).unwrap().send_queue_ms,
        None
    );

    let upload = |sim: &mut Sim, ms: u64| -> u64 {
        let start = sim.clients[0].stats().bytes_sent;
        for _ in 0..ms {
            while sim.clients[0].send_capacity() > 4 * 1024 * 1024 - 128 * 1024 {
                sim.clients[0]
                    .send(&[1u8; 1000], Channel::Reliable)
                    .unwrap();
            }
            sim.step();
        }
        sim.clients[0].stats().bytes_sent - start
    };
    upload(&mut sim, 500);
    let capped = upload(&mut sim, 2_000) as f64 / 2.0;
    assert!(
        (0.95..=1.05).contains(&(capped / CAP as f64)),
        "client capped at {CAP} B/s sent {capped:.0} B/s"
    );
    sim.clients[0].set_send_rate(None).unwrap();
    assert_eq!(sim.clients[0].send_rate(), None);
    let lifted = upload(&mut sim, 1_000) as f64;
    assert!(
        lifted > 5.0 * CAP as f64,
        "lifted cap still sent only {lifted:.0} B/s"
    );
}

#[test]
fn bad_caps_are_typed_errors() {
    let bad = Config {
        send_rate_limit: Some(100),
        ..Config::default()
    };
    assert!(matches!(bad.validate(), Err(Error::InvalidConfig(_))));
    let (mut sim, id) = one_client(Config::default(), Config::default());
    assert!(matches!(
        sim.server.set_send_rate(id, Some(1_199)),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(sim.server.send_rate(id), None);
    sim.server.set_send_rate(id, Some(1_200)).unwrap();
    assert!(matches!(
        sim.clients[0].set_send_rate(Some(0)),
        Err(Error::InvalidArgument(_))
    ));
    sim.server.disconnect(id).unwrap();
    assert!(sim.server.set_send_rate(id, Some(5_000)).is_err());
}

/// The game-state latency (steps from send to arrival, each update sent after the first
/// second) of a 60 Hz unreliable stream beside a bulk download, over a 200 kB/s downlink
/// (the conditioner's bandwidth limit on what the server sends), with the server's cap at
/// `cap`; and how many updates were sent after the first second.
fn state_latency_beside_bulk(cap: Option<u32>) -> (Vec<u64>, u64) {
    let (mut sim, id) = one_client(bulk_config(), bulk_config());
    sim.server
        .set_conditions(
            Direction::Send,
            Conditions::default().with_bandwidth(200_000),
        )
        .unwrap();
    sim.server.set_send_rate(id, cap).unwrap();
    let mut waits = Vec::new();
    let mut seen = 0usize;
    let mut sent = 0u64;
    let first = sim.steps;
    for step in 0..6_000u64 {
        top_up(&mut sim, id);
        if step % 16 == 0 && step < 5_800 {
            sim.server
                .send(id, &sim.steps.to_le_bytes(), Channel::Unreliable)
                .unwrap();
            if step >= 1_000 {
                sent += 1;
            }
        }
        sim.step();
        let fresh: Vec<u64> = unreliable_from(&sim, seen)
            .into_iter()
            .map(|d| u64::from_le_bytes(d[..8].try_into().unwrap()))
            .collect();
        seen += fresh.len();
        // Events of this step were taken before the clock advanced: arrival = steps - 1.
        // The first second is the start-up transient (the bucket's 50 ms burst, and KCP
        // retransmitting what waited in the link's queue past its first RTO): left out.
        waits.extend(
            fresh
                .into_iter()
                .filter(|&at| at >= first + 1_000)
                .map(|at| sim.steps - 1 - at),
        );
    }
    (waits, sent)
}

#[test]
fn a_cap_under_the_downlink_keeps_game_state_fresh_beside_a_download() {
    let percentile = |v: &mut Vec<u64>, p: f64| {
        v.sort_unstable();
        v[((v.len() - 1) as f64 * p) as usize]
    };
    let (mut uncapped, sent_u) = state_latency_beside_bulk(None);
    let (mut capped, sent_c) = state_latency_beside_bulk(Some(180_000));
    let (lost_u, lost_c) = (sent_u - uncapped.len() as u64, sent_c - capped.len() as u64);
    let (p99_u, p99_c) = (
        percentile(&mut uncapped, 0.99),
        percentile(&mut capped, 0.99),
    );
    let (p50_u, p50_c) = (percentile(&mut uncapped, 0.5), percentile(&mut capped, 0.5));
    eprintln!(
        "200 kB/s downlink, bulk + 60 Hz state: uncapped p50 {p50_u} ms p99 {p99_u} ms lost \
         {lost_u}/{sent_u}; capped at 180 kB/s p50 {p50_c} ms p99 {p99_c} ms lost {lost_c}/{sent_c}"
    );
    // Capped, the link's queue stays short: every update arrives within a few ms.
    assert_eq!(lost_c, 0);
    assert!(p99_c <= 12, "capped p99 {p99_c} ms");
    // Uncapped, the download fills the link's queue ahead of the updates.
    assert!(
        p50_u >= 10 * p50_c.max(1) || lost_u > sent_u / 10,
        "uncapped p50 {p50_u} ms, lost {lost_u}: the cap showed no benefit"
    );
}
