//! Deterministic simulations: one `Server` and several `Client`s on an in-memory network,
//! every endpoint behind its own seeded link conditioner, all driven by one virtual clock
//! (`tests/common`). No wall clock and no OS socket is involved, so a run is a pure function
//! of its seed.
//!
//! **Reproducing a failure.** Every test here takes its seed from [`sim_seed`]: a fixed
//! default, or the value of the environment variable `KCPNET_SIM_SEED` (decimal or `0x` hex)
//! when it is set. A failing test prints its seed and the command that reruns it, e.g.
//!
//! ```text
//! KCPNET_SIM_SEED=0x5eed0001 cargo test --test simulation eight_clients_under_bad_network
//! ```
//!
//! **Where the conditions are applied.** Each one-way path (client → server, server →
//! client) is conditioned exactly once: conditions are set on the *Send* direction of every
//! endpoint (the server's Send side conditions all server → client paths, each client's Send
//! side its client → server path), and every Receive side stays perfect. Setting them on
//! both sides would apply them twice per path (≈36% loss for a configured 20%).
//!
//! **Time step.** `Sim::step_ms = 1`: every endpoint ticks once per virtual millisecond,
//! as a game loop at 1 kHz would, so the 10 ms KCP interval and the 50 ms latency are
//! resolved exactly.
//!
//! **Unreliable duplicates.** kcp2k's unreliable channel carries no sequence number, so a
//! datagram the network duplicates is delivered twice; the tests assert exactly that
//! (duplicates appear at about the configured rate, each delivery is byte-identical to a
//! message that was sent), while the reliable channel delivers every message exactly once.
//!
//! **Known bug.** About 1% of seeds make a client's handshake fail in `connect_all` (e.g.
//! `KCPNET_SIM_SEED=10`): see `handshake_recovers_after_lost_server_hellos` below.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use kcpnet::io::{
    Conditions, Direction, ManualClock, MemoryNetwork, MemorySocket, PollReport, Transport,
};
use kcpnet::wire::datagram::Datagram;
use kcpnet::wire::segment::{segments, Command};
use kcpnet::{Channel, Client, Config, ConnectionId, OwnedEvent, Server};

// ---------------------------------------------------------------- seeds

/// The seed of a simulation: `KCPNET_SIM_SEED` (decimal or `0x` hex) if set, else `default`.
fn sim_seed(default: u64) -> u64 {
    match std::env::var("KCPNET_SIM_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse::<u64>(),
            };
            parsed.unwrap_or_else(|_| panic!("KCPNET_SIM_SEED={s:?} is not a u64"))
        }
        Err(_) => default,
    }
}

/// Prints the seed and how to rerun the test if the test panics while this guard lives.
struct SeedReport {
    test: &'static str,
    seed: u64,
}

impl Drop for SeedReport {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "\n*** {} failed with seed {:#x}; reproduce with:\n    \
                 KCPNET_SIM_SEED={:#x} cargo test --test simulation {} -- --nocapture\n",
                self.test, self.seed, self.seed, self.test
            );
        }
    }
}

// ------------------------------------------------------------- messages

/// Reliable message `seq` of sender `who`: content from `common::payload`. Reliable messages
/// are ordered, so the position in the stream identifies them.
fn reliable_msg(who: u64, seq: u64, len: usize) -> Vec<u8> {
    payload(who, seq, len)
}

/// Unreliable message `seq` of sender `who`: `common::payload` content whose first two bytes
/// are replaced by `seq` (LE) when the message is long enough, so that deliveries can be
/// attributed to the message they copy. (Only 1-byte messages can be ambiguous; they are
/// matched by content.)
fn unreliable_msg(who: u64, seq: u64, len: usize) -> Vec<u8> {
    let mut m = payload(who | 1 << 40, seq, len);
    let s = (seq as u16).to_le_bytes();
    let n = len.min(2);
    m[..n].copy_from_slice(&s[..n]);
    m
}

/// What one stream of messages (one sender, one receiver, one direction) should carry.
struct Stream {
    who: u64,
    reliable_sizes: Vec<usize>,
    unreliable_sizes: Vec<usize>,
    reliable_sent: usize,
    unreliable_sent: usize,
}

impl Stream {
    fn new(who: u64, rng: &mut Rng, reliable: usize, unreliable: usize, max_u: usize) -> Stream {
        Stream {
            who,
            reliable_sizes: (0..reliable).map(|_| rng.range(1, 3000)).collect(),
            unreliable_sizes: (0..unreliable).map(|_| rng.range(1, max_u)).collect(),
            reliable_sent: 0,
            unreliable_sent: 0,
        }
    }

    fn done_sending(&self) -> bool {
        self.reliable_sent == self.reliable_sizes.len()
            && self.unreliable_sent == self.unreliable_sizes.len()
    }

    fn next_reliable(&mut self) -> Option<Vec<u8>> {
        let seq = self.reliable_sent;
        let len = *self.reliable_sizes.get(seq)?;
        Some(reliable_msg(self.who, seq as u64, len))
    }

    fn next_unreliable(&mut self) -> Option<Vec<u8>> {
        let seq = self.unreliable_sent;
        let len = *self.unreliable_sizes.get(seq)?;
        Some(unreliable_msg(self.who, seq as u64, len))
    }
}

/// The result of checking what a receiver got from one stream.
#[derive(Debug, Clone, Copy)]
struct Received {
    /// Unreliable messages sent.
    u_sent: usize,
    /// Unreliable deliveries (duplicates included).
    u_delivered: usize,
    /// Distinct unreliable messages delivered.
    u_distinct: usize,
}

impl Received {
    fn loss(&self) -> f64 {
        1.0 - self.u_distinct as f64 / self.u_sent as f64
    }
    fn dup_rate(&self) -> f64 {
        (self.u_delivered - self.u_distinct) as f64 / self.u_distinct.max(1) as f64
    }
}

/// Checks the data a receiver got from `stream` (the payloads of its `Data` events on that
/// connection, in order): every reliable message exactly once, in order, byte-identical;
/// every unreliable delivery byte-identical to a message that was sent.
fn check_stream(label: &str, stream: &Stream, got: &[(Channel, &[u8])]) -> Received {
    let reliable: Vec<&[u8]> = got
        .iter()
        .filter(|(c, _)| *c == Channel::Reliable)
        .map(|(_, d)| *d)
        .collect();
    assert_eq!(
        reliable.len(),
        stream.reliable_sizes.len(),
        "{label}: reliable messages delivered"
    );
    for (seq, (data, &len)) in reliable.iter().zip(&stream.reliable_sizes).enumerate() {
        if *data != reliable_msg(stream.who, seq as u64, len).as_slice() {
            panic!(
                "{label}: reliable message #{seq} ({len} bytes) differs: got {} bytes",
                data.len()
            );
        }
    }

    // Unreliable: content -> the sequence numbers that were sent with it.
    let mut sent: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    for (seq, &len) in stream.unreliable_sizes.iter().enumerate() {
        sent.entry(unreliable_msg(stream.who, seq as u64, len))
            .or_default()
            .push(seq);
    }
    let mut deliveries: HashMap<&[u8], usize> = HashMap::new();
    let mut delivered = 0;
    for (_, data) in got.iter().filter(|(c, _)| *c == Channel::Unreliable) {
        assert!(
            sent.contains_key(*data),
            "{label}: an unreliable delivery of {} bytes matches no message sent",
            data.len()
        );
        *deliveries.entry(data).or_default() += 1;
        delivered += 1;
    }
    let distinct = deliveries.iter().map(|(k, &n)| n.min(sent[*k].len())).sum();
    Received {
        u_sent: stream.unreliable_sizes.len(),
        u_delivered: delivered,
        u_distinct: distinct,
    }
}

fn assert_no_trouble(label: &str, events: &[OwnedEvent]) {
    for e in events {
        assert!(
            !matches!(
                e,
                OwnedEvent::Disconnected { .. } | OwnedEvent::Error { .. }
            ),
            "{label}: unexpected {e:?}"
        );
    }
}

// ------------------------------------------------------------- scenario

struct Scenario {
    seed: u64,
    clients: usize,
    /// Per client, client -> server.
    c2s_reliable: usize,
    c2s_unreliable: usize,
    /// Per client, server -> client.
    s2c_reliable: usize,
    s2c_unreliable: usize,
    /// Conditions of every one-way path (set on each endpoint's Send side).
    conditions: Conditions,
}

/// Most reliable sends per endpoint and step, and the send backlog (KCP segments queued or
/// in flight) above which a sender waits: far below the choke threshold (10 000).
const RELIABLE_PER_STEP: usize = 2;
const BACKLOG_LIMIT: usize = 96;
/// Unreliable messages go out every this many steps (per stream).
const UNRELIABLE_EVERY: u64 = 4;

struct Outcome {
    sim: Sim,
    c2s: Vec<Stream>,
    s2c: Vec<Stream>,
    ids: Vec<ConnectionId>,
    /// Virtual time from the first message to the last delivery.
    transfer: Duration,
}

fn run(sc: &Scenario) -> Outcome {
    let config = Config::default();
    let mut sim = Sim::new(config.clone(), sc.seed);
    sim.step_ms = 1;
    for _ in 0..sc.clients {
        sim.add_client(config.clone());
    }
    sim.set_all_conditions(Direction::Send, sc.conditions.clone());
    sim.connect_all(20_000);
    let ids: Vec<ConnectionId> = (0..sc.clients)
        .map(|i| sim.server_id_of(i).expect("server saw the client connect"))
        .collect();

    let mut rng = Rng(sc.seed ^ 0xC0FF_EE00);
    let max_u = config.unreliable_max_message_size();
    let mut c2s: Vec<Stream> = (0..sc.clients)
        .map(|i| {
            Stream::new(
                i as u64,
                &mut rng,
                sc.c2s_reliable,
                sc.c2s_unreliable,
                max_u,
            )
        })
        .collect();
    let mut s2c: Vec<Stream> = (0..sc.clients)
        .map(|i| {
            Stream::new(
                1000 + i as u64,
                &mut rng,
                sc.s2c_reliable,
                sc.s2c_unreliable,
                max_u,
            )
        })
        .collect();

    // Reliable deliveries so far, per receiver, to know when everything has arrived.
    let index_of: HashMap<ConnectionId, usize> =
        ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut at_server = vec![0usize; sc.clients];
    let mut at_client = vec![0usize; sc.clients];
    let start = sim.clock.now();
    let mut last_send_step = 0;
    let max_steps = 600_000;
    let mut step = 0u64;
    loop {
        // Client sends.
        for (i, stream) in c2s.iter_mut().enumerate() {
            let client = &mut sim.clients[i];
            for _ in 0..RELIABLE_PER_STEP {
                if client.send_backlog() >= BACKLOG_LIMIT {
                    break;
                }
                let Some(m) = stream.next_reliable() else {
                    break;
                };
                client.send(&m, Channel::Reliable).unwrap();
                stream.reliable_sent += 1;
            }
            if step.is_multiple_of(UNRELIABLE_EVERY) {
                if let Some(m) = stream.next_unreliable() {
                    client.send(&m, Channel::Unreliable).unwrap();
                    stream.unreliable_sent += 1;
                }
            }
        }
        // Server sends.
        for (i, stream) in s2c.iter_mut().enumerate() {
            let id = ids[i];
            for _ in 0..RELIABLE_PER_STEP {
                if sim.server.send_backlog(id).unwrap() >= BACKLOG_LIMIT {
                    break;
                }
                let Some(m) = stream.next_reliable() else {
                    break;
                };
                sim.server.send(id, &m, Channel::Reliable).unwrap();
                stream.reliable_sent += 1;
            }
            if step % UNRELIABLE_EVERY == 1 {
                if let Some(m) = stream.next_unreliable() {
                    sim.server.send(id, &m, Channel::Unreliable).unwrap();
                    stream.unreliable_sent += 1;
                }
            }
        }
        let all_sent = c2s.iter().chain(&s2c).all(|s| s.done_sending());
        if !all_sent {
            last_send_step = step;
        }

        sim.step_with(
            |_, ev| {
                if let kcpnet::Event::Data {
                    id,
                    channel: Channel::Reliable,
                    ..
                } = ev
                {
                    at_server[index_of[id]] += 1;
                }
            },
            |i, _, ev| {
                if let OwnedEvent::Data {
                    channel: Channel::Reliable,
                    ..
                } = ev
                {
                    at_client[i] += 1;
                }
            },
        );
        step += 1;

        let all_reliable = at_server.iter().all(|&n| n == sc.c2s_reliable)
            && at_client.iter().all(|&n| n == sc.s2c_reliable);
        // Leave 1 s after the last send for delayed unreliable datagrams to land.
        if all_sent && all_reliable && step >= last_send_step + 1000 {
            break;
        }
        assert!(
            step < max_steps,
            "not everything was delivered within {max_steps} steps: server got {at_server:?} \
             of {} reliable, clients got {at_client:?} of {}",
            sc.c2s_reliable,
            sc.s2c_reliable
        );
    }
    let transfer = sim.clock.now() - start;
    Outcome {
        sim,
        c2s,
        s2c,
        ids,
        transfer,
    }
}

/// The link of the big scenario, for every one-way path.
fn bad_network() -> Conditions {
    Conditions::lossy(0.20)
        .with_latency(Duration::from_millis(50))
        .with_jitter(Duration::from_millis(20))
        .with_reorder(0.05, Duration::from_millis(40))
        .with_duplicate(0.02)
}

// ----------------------------------------------------------------- tests

/// 8 clients, each path with 20% loss, 50 ms latency, 0..20 ms jitter, 5% reordered by 40 ms
/// and 2% duplicated (conditions in force from the handshake on). Each client sends 2000
/// reliable messages of 1..=3000 bytes (up to 3 fragments) and 2000 unreliable ones of
/// 1..=1194 bytes; the server sends the same amount to each client. Reliable: exactly once,
/// in order, byte-identical, both ways. Unreliable: every delivery byte-identical to a sent
/// message; loss and duplication as configured. No disconnects.
#[test]
fn eight_clients_under_bad_network() {
    let seed = sim_seed(0x5eed_0001);
    let _report = SeedReport {
        test: "eight_clients_under_bad_network",
        seed,
    };
    let wall = Instant::now();
    let conditions = bad_network();
    let sc = Scenario {
        seed,
        clients: 8,
        c2s_reliable: 2000,
        c2s_unreliable: 2000,
        s2c_reliable: 2000,
        s2c_unreliable: 2000,
        conditions: conditions.clone(),
    };
    let out = run(&sc);
    let sim = &out.sim;

    assert_no_trouble("server", &sim.server_events);
    assert_eq!(sim.server.connection_count(), 8);
    let mut c2s_total = (0, 0, 0);
    let mut s2c_total = (0, 0, 0);
    let mut lines = Vec::new();
    for i in 0..sc.clients {
        let id = out.ids[i];
        assert_no_trouble(&format!("client {i}"), &sim.client_events[i]);
        assert!(sim.clients[i].is_connected());

        let up = check_stream(
            &format!("client {i} -> server"),
            &out.c2s[i],
            &data_of(&sim.server_events, Some(id)),
        );
        let down = check_stream(
            &format!("server -> client {i}"),
            &out.s2c[i],
            &data_of(&sim.client_events[i], None),
        );
        for (label, r) in [("c2s", up), ("s2c", down)] {
            // Each unreliable datagram crosses one conditioned path: lost with p = 0.20. With
            // 2000 messages the standard deviation is 0.9 points; the per-stream band is
            // ±4 points (4.5 sigma, for 16 streams per run), the pooled figures below must be
            // within ±1.5 points (4.7 sigma).
            let loss = r.loss();
            let tolerance = 0.04;
            assert!(
                (loss - conditions.loss).abs() <= tolerance,
                "client {i} {label}: observed unreliable loss {loss:.3}, configured {}",
                conditions.loss
            );
            // Deliveries ≈ (1 - loss) · (1 + dup) · sent.
            let expected = (1.0 - conditions.loss) * (1.0 + conditions.duplicate);
            let ratio = r.u_delivered as f64 / r.u_sent as f64;
            assert!(
                (ratio - expected).abs() <= tolerance + 0.02,
                "client {i} {label}: {} deliveries for {} sent (ratio {ratio:.3}, expected \
                 ≈{expected:.3})",
                r.u_delivered,
                r.u_sent
            );
        }
        c2s_total = (
            c2s_total.0 + up.u_sent,
            c2s_total.1 + up.u_delivered,
            c2s_total.2 + up.u_distinct,
        );
        s2c_total = (
            s2c_total.0 + down.u_sent,
            s2c_total.1 + down.u_delivered,
            s2c_total.2 + down.u_distinct,
        );
        let cs = sim.clients[i].connection_stats();
        let ss = sim.server.connection_stats(id).unwrap();
        lines.push(format!(
            "  client {i}: retransmits c={} s={}  c2s loss {:.1}% dup {:.1}%  s2c loss {:.1}% \
             dup {:.1}%  rtt {:?}/{:?} ms",
            cs.retransmits,
            ss.retransmits,
            100.0 * up.loss(),
            100.0 * up.dup_rate(),
            100.0 * down.loss(),
            100.0 * down.dup_rate(),
            cs.rtt_ms,
            ss.rtt_ms,
        ));
    }
    // Pooled over the clients, the estimates are tight.
    let pooled = |t: (usize, usize, usize)| Received {
        u_sent: t.0,
        u_delivered: t.1,
        u_distinct: t.2,
    };
    let (up, down) = (pooled(c2s_total), pooled(s2c_total));
    assert!(
        (up.loss() - conditions.loss).abs() <= 0.015,
        "{}",
        up.loss()
    );
    assert!(
        (down.loss() - conditions.loss).abs() <= 0.015,
        "{}",
        down.loss()
    );
    // Unreliable duplicates pass through (no sequence numbers in kcp2k's unreliable
    // channel), at about the configured rate.
    for (label, r) in [("c2s", up), ("s2c", down)] {
        assert!(
            r.u_delivered > r.u_distinct,
            "{label}: duplicated datagrams should be delivered twice"
        );
        assert!(
            (r.dup_rate() - conditions.duplicate).abs() <= 0.01,
            "{label}: duplicate rate {}",
            r.dup_rate()
        );
    }

    println!(
        "eight_clients_under_bad_network: seed {seed:#x}, {} steps, {:.1} s virtual transfer \
         time, {:.2} s wall; unreliable loss c2s {:.2}% s2c {:.2}% (configured {:.0}%), \
         duplicates c2s {:.2}% s2c {:.2}%; in-memory network {:?}",
        sim.steps,
        out.transfer.as_secs_f64(),
        wall.elapsed().as_secs_f64(),
        100.0 * up.loss(),
        100.0 * down.loss(),
        100.0 * conditions.loss,
        100.0 * up.dup_rate(),
        100.0 * down.dup_rate(),
        sim.net.stats(),
    );
    for l in lines {
        println!("{l}");
    }
}

/// The same scenario, smaller: 2 clients, a few hundred messages each way.
fn small_trace(seed: u64) -> (Vec<OwnedEvent>, Vec<Vec<OwnedEvent>>, u64) {
    let out = run(&Scenario {
        seed,
        clients: 2,
        c2s_reliable: 300,
        c2s_unreliable: 300,
        s2c_reliable: 200,
        s2c_unreliable: 200,
        conditions: bad_network(),
    });
    let Sim {
        server_events,
        client_events,
        steps,
        ..
    } = out.sim;
    (server_events, client_events, steps)
}

#[test]
fn same_seed_same_trace() {
    let seed = sim_seed(0x5eed_0002);
    let _report = SeedReport {
        test: "same_seed_same_trace",
        seed,
    };
    let a = small_trace(seed);
    let b = small_trace(seed);
    assert!(a.0.len() > 500, "a real trace: {} server events", a.0.len());
    assert_eq!(a.2, b.2, "same seed, different step counts");
    assert_eq!(
        a.0.len(),
        b.0.len(),
        "same seed, different server event counts"
    );
    for (n, (x, y)) in a.0.iter().zip(&b.0).enumerate() {
        assert_eq!(x, y, "same seed: server event #{n} differs");
    }
    assert_eq!(a.1, b.1, "same seed: client traces differ");
    assert!(a == b);

    let c = small_trace(seed ^ 0xdead_beef);
    assert!(a != c, "a different seed should give a different trace");
    println!(
        "same_seed_same_trace: seed {seed:#x}: {} steps, {} server and {:?} client events; \
         seed {:#x}: {} steps",
        a.2,
        a.0.len(),
        a.1.iter().map(Vec::len).collect::<Vec<_>>(),
        seed ^ 0xdead_beef,
        c.2
    );
}

#[test]
fn conditions_change_at_run_time() {
    let seed = sim_seed(0x5eed_0003);
    let _report = SeedReport {
        test: "conditions_change_at_run_time",
        seed,
    };
    let config = Config::default();
    let mut sim = Sim::new(config.clone(), seed);
    sim.step_ms = 1;
    for _ in 0..2 {
        sim.add_client(config.clone());
    }
    sim.connect_all(1000);
    let ids = [sim.server_id_of(0).unwrap(), sim.server_id_of(1).unwrap()];

    const PHASE_STEPS: u64 = 4000;
    const PER_PHASE: usize = 400;
    let loss = 0.30;
    let phases = [
        Conditions::default(),
        Conditions::lossy(loss),
        Conditions::default(),
    ];
    let mut rng = Rng(seed);
    let sizes: Vec<Vec<usize>> = (0..2)
        .map(|_| (0..3 * PER_PHASE).map(|_| rng.range(1, 3000)).collect())
        .collect();
    let u_sizes: Vec<Vec<usize>> = (0..2)
        .map(|_| (0..3 * PER_PHASE).map(|_| rng.range(2, 1194)).collect())
        .collect();
    let mut sent = [0usize; 2];
    let mut u_sent = [0usize; 2];
    let mut retransmits_at_phase_end = Vec::new();
    let mut step = 0u64;
    for (phase, conditions) in phases.iter().enumerate() {
        // Both directions of the server: every path to and from it sees the loss once.
        sim.server
            .set_conditions(Direction::Both, conditions.clone())
            .unwrap();
        // A phase lasts PHASE_STEPS, or longer if the backlog limit held its sends back.
        let limit = (phase + 1) * PER_PHASE;
        let mut phase_step = 0;
        while phase_step < PHASE_STEPS || sent != [limit; 2] || u_sent != [limit; 2] {
            assert!(
                phase_step < 60_000,
                "phase {phase}: sends stuck at {sent:?}"
            );
            phase_step += 1;
            for (i, sizes) in sizes.iter().enumerate() {
                let client = &mut sim.clients[i];
                if sent[i] < limit && client.send_backlog() < BACKLOG_LIMIT {
                    let m = reliable_msg(i as u64, sent[i] as u64, sizes[sent[i]]);
                    client.send(&m, Channel::Reliable).unwrap();
                    sent[i] += 1;
                }
                if u_sent[i] < limit && step.is_multiple_of(4) {
                    let seq = u_sent[i];
                    let m = unreliable_msg(i as u64, seq as u64, u_sizes[i][seq]);
                    client.send(&m, Channel::Unreliable).unwrap();
                    u_sent[i] += 1;
                }
            }
            // The server echoes reliable messages only.
            sim.step_with(
                |ctx, ev| {
                    if let kcpnet::Event::Data {
                        id,
                        channel: Channel::Reliable,
                        data,
                    } = ev
                    {
                        ctx.send(*id, data, Channel::Reliable).unwrap();
                    }
                },
                |_, _, _| {},
            );
            step += 1;
        }
        retransmits_at_phase_end.push(
            (0..2)
                .map(|i| sim.clients[i].connection_stats().retransmits)
                .sum::<u64>(),
        );
    }
    // Let the last echoes come home.
    let done = sim.run_until(20_000, |s| {
        (0..2).all(|i| {
            data_of(&s.client_events[i], None)
                .iter()
                .filter(|(c, _)| *c == Channel::Reliable)
                .count()
                == 3 * PER_PHASE
        })
    });
    assert!(done, "not every echo came back");

    for (i, id) in ids.iter().enumerate() {
        assert_no_trouble("server", &sim.server_events);
        assert_no_trouble(&format!("client {i}"), &sim.client_events[i]);
        let at_server = data_of(&sim.server_events, Some(*id));
        let echoed = data_of(&sim.client_events[i], None);
        for (label, got) in [("at the server", &at_server), ("echoed", &echoed)] {
            let reliable: Vec<&[u8]> = got
                .iter()
                .filter(|(c, _)| *c == Channel::Reliable)
                .map(|(_, d)| *d)
                .collect();
            assert_eq!(reliable.len(), 3 * PER_PHASE, "client {i} {label}");
            for (seq, data) in reliable.iter().enumerate() {
                assert!(
                    *data == reliable_msg(i as u64, seq as u64, sizes[i][seq]).as_slice(),
                    "client {i}: reliable #{seq} {label} differs or is out of order"
                );
            }
        }
        // Unreliable, per phase: all delivered exactly once on a perfect link, about 30%
        // lost during the lossy phase (400 messages: sigma 2.3 points, band ±10 = 4.4 sigma).
        let seq_of: HashMap<Vec<u8>, usize> = (0..3 * PER_PHASE)
            .map(|s| (unreliable_msg(i as u64, s as u64, u_sizes[i][s]), s))
            .collect();
        let mut per_phase = [0usize; 3];
        for (_, data) in at_server.iter().filter(|(c, _)| *c == Channel::Unreliable) {
            let seq = seq_of
                .get(*data)
                .expect("an unreliable delivery matches a message sent");
            per_phase[seq / PER_PHASE] += 1;
        }
        assert_eq!(per_phase[0], PER_PHASE, "client {i}: lossless phase 1");
        assert_eq!(per_phase[2], PER_PHASE, "client {i}: lossless phase 3");
        let observed = 1.0 - per_phase[1] as f64 / PER_PHASE as f64;
        assert!(
            (observed - loss).abs() <= 0.10,
            "client {i}: observed loss {observed:.3} in the lossy phase, configured {loss}"
        );
        println!(
            "conditions_change_at_run_time: client {i}: unreliable delivered per phase \
             {per_phase:?} of {PER_PHASE} (lossy phase: {:.1}% lost)",
            100.0 * observed
        );
    }
    // The loss took effect (retransmissions) and went away again.
    let r = &retransmits_at_phase_end;
    println!("client retransmits at the end of each phase: {r:?}");
    assert!(
        r[1] > r[0] + 50,
        "the lossy phase should cause retransmissions: {r:?}"
    );
}

// ------------------------------------------------------------ known bugs

/// A transport that drops received datagrams chosen by a predicate: surgical loss.
struct DropIncoming<F: FnMut(&[u8], Duration) -> bool + Send + Sync> {
    inner: MemorySocket,
    drop_if: F,
    dropped: Arc<AtomicUsize>,
}

impl<F: FnMut(&[u8], Duration) -> bool + Send + Sync> Transport for DropIncoming<F> {
    fn recv_from(
        &mut self,
        buf: &mut [u8],
        now: Duration,
    ) -> std::io::Result<Option<(usize, SocketAddr)>> {
        loop {
            match self.inner.recv_from(buf, now)? {
                Some((n, _)) if (self.drop_if)(&buf[..n], now) => {
                    self.dropped.fetch_add(1, Ordering::SeqCst);
                }
                other => return Ok(other),
            }
        }
    }

    fn send_to(&mut self, data: &[u8], to: SocketAddr, now: Duration) -> std::io::Result<bool> {
        self.inner.send_to(data, to, now)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll(&mut self, now: Duration) -> std::io::Result<PollReport> {
        self.inner.poll(now)
    }

    fn next_wakeup(&self) -> Option<Duration> {
        self.inner.next_wakeup()
    }

    fn wait(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.inner.wait(timeout)
    }
}

/// Whether a datagram carries a KCP PUSH segment (data, such as the server's Hello).
fn has_push(datagram: &[u8]) -> bool {
    match Datagram::parse(datagram) {
        Ok(d) if d.channel == Channel::Reliable => {
            segments(d.payload).any(|s| matches!(s, Ok((h, _)) if h.cmd == Command::Push))
        }
        _ => false,
    }
}

/// Found by `eight_clients_under_bad_network` with `KCPNET_SIM_SEED=10` (client 3 never
/// connects), reproduced here without randomness:
///
/// 1. t=0: the client sends Hello (30 bytes). The server answers ACK+Hello (54 bytes): lost.
/// 2. t=100: the client→server latency becomes 30 ms, so the client's Hello retransmission
///    (t=200) reaches the server at t=230, after the server's own Hello retransmission
///    (t=201, 30 bytes, lost) instead of together with it.
/// 3. t=230: the server ACKs the duplicate Hello alone (29 bytes). That datagram arrives:
///    the client adopts the cookie and its Hello is acknowledged, so it has nothing left to
///    send and goes silent (a kcpnet client sends no Ping while connecting).
/// 4. The server's further Hello retransmissions (30 bytes each) are lost until t=3 s; by
///    then the half-open send budget (3 × the 60 bytes received = 180; 173 used) is spent,
///    so every later retransmission is suppressed, although the link is now perfect.
/// 5. t=10 s: the client fails with `Error(Timeout, "handshake ... not completed")`, the
///    server forgets the half-open peer. (This was found with the stateful handshake of
///    the first stage; the server is stateless now, and the test keeps guarding the
///    client's side of the recovery.)
///
/// Expected, and fixed: the handshake completes soon after t=3 s. Like kcp2k's, the client
/// sends a Ping every second while connecting (PROTOCOL.md §4 "Details", Peer:345); that
/// Ping carries the adopted cookie, completes the server's return-routability check and
/// lifts the budget.
#[test]
fn handshake_recovers_after_lost_server_hellos() {
    let net = MemoryNetwork::new();
    let clock = ManualClock::new();
    let server_addr: SocketAddr = SERVER_ADDR.parse().unwrap();
    let mut server = Server::with_transport(
        Box::new(net.bind(server_addr).unwrap()),
        Box::new(clock.clone()),
        Config::default(),
    )
    .unwrap();
    server.seed_cookies_for_testing(1);
    let dropped = Arc::new(AtomicUsize::new(0));
    // Every server datagram carrying a PUSH (its Hello) is lost during the first 3 s.
    let lossy = DropIncoming {
        inner: net.bind(client_addr(0)).unwrap(),
        drop_if: |d: &[u8], now: Duration| now < Duration::from_secs(3) && has_push(d),
        dropped: dropped.clone(),
    };
    let transport = kcpnet::io::LinkConditioner::new(lossy, 1);
    let mut client = Client::with_conditioned_transport(
        transport,
        Box::new(clock.clone()),
        server_addr,
        Config::default(),
    )
    .unwrap();
    let mut server_events = Vec::new();
    let mut client_events = Vec::new();
    for step in 0..12_000u64 {
        if step == 100 {
            client
                .set_conditions(
                    Direction::Send,
                    Conditions::default().with_latency(Duration::from_millis(30)),
                )
                .unwrap();
        }
        server.tick_incoming();
        while let Some(e) = server.poll_event() {
            server_events.push((step, e.to_owned_event()));
        }
        server.tick_outgoing();
        client.tick_incoming();
        while let Some(e) = client.poll_event() {
            client_events.push((step, e.to_owned_event()));
        }
        client.tick_outgoing();
        clock.advance(Duration::from_millis(1));
    }
    let (ss, cs) = (server.stats(), client.connection_stats());
    let summary = format!(
        "server datagrams lost {}; server: received {} B, sent {} B, stateless replies {}; \
         client: sent {} datagrams, received {} ({} B); client events {client_events:?}",
        dropped.load(Ordering::SeqCst),
        ss.bytes_received,
        ss.bytes_sent,
        ss.hello_replies,
        cs.datagrams_sent,
        cs.datagrams_received,
        cs.bytes_received,
    );
    assert!(
        matches!(client_events.first(), Some((s, OwnedEvent::Connected { .. })) if *s < 10_000),
        "the client should connect once the link recovers (t=3 s): {summary}"
    );
    assert_eq!(server.connection_count(), 1, "{summary}");
    assert!(
        matches!(
            server_events.first(),
            Some((_, OwnedEvent::Connected { .. }))
        ),
        "{summary}"
    );
}
