//! Transports that wrap other transports, driven by a Server and a Client: the
//! `examples/packet_counter.rs` wrapper over batched UDP with GSO and GRO on loopback (its
//! counts must match the endpoints' own statistics), and a wrapper over the in-memory
//! network whose `poll` reports late drops and an unreachable peer, which the drivers must
//! act on. Every loop is bounded; nothing asserts on wall-clock time.

#[path = "../examples/common/packet_counter.rs"]
mod packet_counter;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kcpnet::io::{
    LinkConditioner, ManualClock, MemoryNetwork, MemorySocket, PollReport, SocketOptions,
    SystemClock, Transport, UdpTransport,
};
use kcpnet::{Channel, Client, Config, DisconnectReason, EndpointStats, Event, OwnedEvent, Server};
use packet_counter::{Counts, PacketCounter};

/// `(datagrams out, bytes out, datagrams in, bytes in)` as counted by the wrapper.
fn counted(c: &Counts) -> [u64; 4] {
    [
        Counts::get(&c.datagrams_sent),
        Counts::get(&c.bytes_sent),
        Counts::get(&c.datagrams_received),
        Counts::get(&c.bytes_received),
    ]
}

/// The same figures from an endpoint's statistics.
fn from_stats(s: &EndpointStats) -> [u64; 4] {
    [
        s.datagrams_sent,
        s.bytes_sent,
        s.datagrams_received,
        s.bytes_received,
    ]
}

#[test]
fn a_packet_counter_over_batched_gso_udp_sees_what_the_endpoints_count() {
    let opts = SocketOptions {
        batch: true,
        gso: true,
        gro: true,
        ..SocketOptions::default()
    };
    let udp = UdpTransport::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    assert_eq!(udp.is_batching(), cfg!(target_os = "linux"));
    let gso = udp.is_gso();
    if !gso {
        eprintln!("no UDP GSO here: checking the counts without it");
    }
    let server_counter = PacketCounter::new(udp);
    let server_counts = server_counter.counts();
    let mut server = Server::with_transport(
        Box::new(server_counter),
        Box::new(SystemClock::new()),
        Config::default(),
    )
    .unwrap();
    let addr = server.local_addr().unwrap();
    let mut udp = UdpTransport::bind_any_for(addr, &opts).unwrap();
    udp.connect(addr).unwrap();
    assert_eq!(udp.is_gso(), gso);
    let client_counter = PacketCounter::new(udp);
    let client_counts = client_counter.counts();
    let mut client = Client::with_conditioned_transport(
        LinkConditioner::new(client_counter, 7),
        Box::new(SystemClock::new()),
        addr,
        Config::default(),
    )
    .unwrap();
    assert!(client.conditioner().is_some());

    // Reliable messages of many full-MTU datagrams (GSO runs both ways), and small
    // unreliable ones in between.
    let reliable: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 12_000 + usize::from(i)]).collect();
    let (mut sent, mut echoes, mut unreliable) = (false, Vec::new(), 0);
    for _ in 0..8_000 {
        server.tick_incoming_with(|server, event| {
            if let Event::Data { id, channel, data } = event {
                server.send(id, data, channel).unwrap();
            }
        });
        server.tick_outgoing();
        client.tick_incoming();
        while let Some(event) = client.poll_event() {
            match event.to_owned_event() {
                OwnedEvent::Data {
                    channel: Channel::Reliable,
                    data,
                    ..
                } => echoes.push(data),
                OwnedEvent::Data { .. } => unreliable += 1,
                _ => {}
            }
        }
        if client.is_connected() && !sent {
            for (i, m) in reliable.iter().enumerate() {
                client.send(m, Channel::Reliable).unwrap();
                client.send(&[i as u8; 50], Channel::Unreliable).unwrap();
            }
            sent = true;
        }
        client.tick_outgoing();
        if echoes.len() == reliable.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(echoes, reliable, "every reliable message echoed, in order");
    assert!(unreliable <= reliable.len());

    // The wrapper counted exactly what the drivers did.
    let (s, c) = (server.stats(), client.stats());
    assert_eq!(counted(&server_counts), from_stats(&s));
    assert_eq!(counted(&client_counts), from_stats(&c));
    let payload: u64 = reliable.iter().map(|m| m.len() as u64).sum();
    assert!(
        s.bytes_sent > payload && c.bytes_sent > payload,
        "{s:?} {c:?}"
    );
    // The datagrams the server counted in all left the client, and the other way round,
    // except those still in flight when the loop stopped.
    assert!(Counts::get(&server_counts.datagrams_received) <= c.datagrams_sent);
    assert!(Counts::get(&client_counts.datagrams_received) <= s.datagrams_sent);
    assert_eq!(Counts::get(&server_counts.send_drops), s.send_errors);
    if gso {
        // Runs of equal-length datagrams left as GSO messages, through the wrapper's poll.
        assert!(Counts::get(&server_counts.gso_messages) > 0);
        assert!(Counts::get(&client_counts.gso_messages) > 0);
    }
}

/// What a [`Flaky`] wrapper is told to do, shared with the test.
#[derive(Default)]
struct Faults {
    /// Accept every datagram with `Ok(true)`, then drop every second one at `poll` and
    /// report it, as a batching socket with a full buffer does.
    drop_every_second: AtomicBool,
    /// Report the peer unreachable at the next `poll`.
    refuse: AtomicBool,
}

/// A wrapper of a memory socket that queues sends until `poll`, like a batching socket.
struct Flaky {
    inner: MemorySocket,
    queue: VecDeque<(Vec<u8>, SocketAddr)>,
    faults: Arc<Faults>,
    parity: bool,
}

impl Transport for Flaky {
    fn recv_from(
        &mut self,
        buf: &mut [u8],
        now: Duration,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        self.inner.recv_from(buf, now)
    }

    fn send_to(&mut self, data: &[u8], to: SocketAddr, _now: Duration) -> io::Result<bool> {
        self.queue.push_back((data.to_vec(), to));
        Ok(true)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll(&mut self, now: Duration) -> io::Result<PollReport> {
        let mut drops = 0;
        while let Some((data, to)) = self.queue.pop_front() {
            self.parity = !self.parity;
            if self.parity && self.faults.drop_every_second.load(Ordering::Relaxed) {
                drops += 1;
                continue;
            }
            self.inner.send_to(&data, to, now)?;
        }
        let refused = self.faults.refuse.swap(false, Ordering::Relaxed);
        Ok(PollReport::new(drops, refused).merge(self.inner.poll(now)?))
    }

    fn next_wakeup(&self) -> Option<Duration> {
        if self.queue.is_empty() {
            self.inner.next_wakeup()
        } else {
            Some(Duration::ZERO)
        }
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        self.inner.wait(timeout)
    }
}

#[test]
fn drops_and_refusals_reported_by_poll_reach_the_driver() {
    let net = MemoryNetwork::new();
    let clock = ManualClock::new();
    let server_addr: SocketAddr = "10.0.0.1:7777".parse().unwrap();
    let mut server = Server::with_transport(
        Box::new(net.bind(server_addr).unwrap()),
        Box::new(clock.clone()),
        Config::default(),
    )
    .unwrap();
    let faults = Arc::new(Faults::default());
    let flaky = Flaky {
        inner: net.bind("10.0.0.2:5000".parse().unwrap()).unwrap(),
        queue: VecDeque::new(),
        faults: faults.clone(),
        parity: false,
    };
    let mut client = Client::with_transport(
        Box::new(flaky),
        Box::new(clock.clone()),
        server_addr,
        // One datagram per message, so that the drops below are countable.
        Config {
            coalesce_unreliable: false,
            ..Config::default()
        },
    )
    .unwrap();
    assert!(
        client.conditioner().is_none(),
        "with_transport keeps no conditioner"
    );
    let mut events = Vec::new();
    let step = |server: &mut Server, client: &mut Client, events: &mut Vec<OwnedEvent>| {
        server.tick_incoming();
        while server.poll_event().is_some() {}
        server.tick_outgoing();
        client.tick_incoming();
        while let Some(e) = client.poll_event() {
            events.push(e.to_owned_event());
        }
        client.tick_outgoing();
        clock.advance(Duration::from_millis(10));
    };
    for _ in 0..100 {
        step(&mut server, &mut client, &mut events);
        if client.is_connected() {
            break;
        }
    }
    assert!(client.is_connected());
    let before = client.stats();
    assert_eq!(before.send_errors, 0);

    // Every second datagram is dropped after `send_to` accepted it: the driver moves it from
    // sent to send errors at the poll.
    faults.drop_every_second.store(true, Ordering::Relaxed);
    for i in 0..20u8 {
        client.send(&[i; 40], Channel::Unreliable).unwrap();
    }
    client.tick_outgoing();
    let after = client.stats();
    let errors = after.send_errors - before.send_errors;
    let sent = after.datagrams_sent - before.datagrams_sent;
    // The 20 messages, and whatever the connection flushed with them (an ACK, a ping).
    let accepted = errors + sent;
    assert!(accepted >= 20, "{before:?} {after:?}");
    assert!(
        errors == accepted / 2 || errors == accepted.div_ceil(2),
        "{errors} of {accepted}"
    );
    assert!(
        after.bytes_sent - before.bytes_sent >= 20 * 40,
        "bytes count what was accepted"
    );
    faults.drop_every_second.store(false, Ordering::Relaxed);
    assert!(client.is_connected());

    // An unreachable peer reported by a poll ends the connection at the next receive.
    faults.refuse.store(true, Ordering::Relaxed);
    for _ in 0..3 {
        step(&mut server, &mut client, &mut events);
    }
    assert!(!client.is_connected());
    assert_eq!(
        events.last(),
        Some(&OwnedEvent::Disconnected {
            id: client.id(),
            reason: DisconnectReason::Closed
        }),
        "{events:?}"
    );
}
