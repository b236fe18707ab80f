//! Server and Client over real UDP sockets on the loopback interface (127.0.0.1 and [::1]),
//! for what only the OS can show: binding, address families, dual-mode sockets and ICMP.
//! Every loop is bounded to a few thousand iterations of at most 1 ms; nothing asserts on
//! wall-clock time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use kcpnet::{
    Channel, Client, Config, ConnectionId, DisconnectReason, ErrorCode, Event, OwnedEvent, Server,
};

const MAX_ITERATIONS: usize = 4000;

fn pause() {
    std::thread::sleep(Duration::from_millis(1));
}

/// A server that echoes every message, plus its event log.
struct Echo {
    server: Server,
    events: Vec<OwnedEvent>,
}

impl Echo {
    fn bind(addr: &str) -> Echo {
        Echo::bind_with(addr, Config::default())
    }

    fn bind_with(addr: &str, config: Config) -> Echo {
        Echo {
            server: Server::bind(addr, config).unwrap(),
            events: Vec::new(),
        }
    }

    fn port(&self) -> u16 {
        self.server.local_addr().unwrap().port()
    }

    fn tick(&mut self) {
        self.server.tick_incoming();
        while let Some(ev) = self.server.poll_event() {
            let ev = ev.to_owned_event();
            if let OwnedEvent::Data { id, channel, data } = &ev {
                self.server.send(*id, data, *channel).unwrap();
            }
            self.events.push(ev);
        }
        self.server.tick_outgoing();
    }

    fn connected(&self) -> Vec<(ConnectionId, SocketAddr)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                OwnedEvent::Connected { id, addr } => Some((*id, *addr)),
                _ => None,
            })
            .collect()
    }
}

/// A client and its event log.
struct Peer {
    client: Client,
    events: Vec<OwnedEvent>,
}

impl Peer {
    fn connect(host: &str, port: u16) -> Peer {
        Peer {
            client: Client::connect((host, port), Config::default()).unwrap(),
            events: Vec::new(),
        }
    }

    fn tick(&mut self) {
        self.client.tick_incoming();
        while let Some(ev) = self.client.poll_event() {
            self.events.push(ev.to_owned_event());
        }
        self.client.tick_outgoing();
    }

    fn data(&self, channel: Channel) -> Vec<Vec<u8>> {
        self.events
            .iter()
            .filter_map(|e| match e {
                OwnedEvent::Data {
                    channel: c, data, ..
                } if *c == channel => Some(data.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Ticks the server and the clients (1 ms pauses) until `done` or the iteration bound.
fn pump(
    server: &mut Echo,
    peers: &mut [&mut Peer],
    mut done: impl FnMut(&Echo, &[&mut Peer]) -> bool,
) -> bool {
    for _ in 0..MAX_ITERATIONS {
        server.tick();
        for p in peers.iter_mut() {
            p.tick();
        }
        if done(server, peers) {
            return true;
        }
        pause();
    }
    false
}

fn message(tag: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(tag as u32) as u8
                ^ tag
        })
        .collect()
}

/// Connects one client to `server` at `host`, echoes the five reliable and three unreliable
/// sizes, and returns the address the server reported for the client.
fn handshake_and_echo(server: &mut Echo, host: &str) -> SocketAddr {
    let port = server.port();
    let before = server.connected().len();
    let mut peer = Peer::connect(host, port);
    let ok = pump(server, &mut [&mut peer], |s, p| {
        p[0].client.is_connected() && s.server.connection_count() == 1
    });
    assert!(ok, "no handshake: {:?} / {:?}", server.events, peer.events);
    let server_side = server.connected().split_off(before);
    assert_eq!(server_side.len(), 1);
    assert!(matches!(peer.events[0], OwnedEvent::Connected { addr, .. } if addr.port() == port));

    let config = Config::default();
    let reliable: Vec<Vec<u8>> = [1, 100, 1200, 5000, config.reliable_max_message_size()]
        .iter()
        .enumerate()
        .map(|(k, &n)| message(k as u8, n))
        .collect();
    for m in &reliable {
        peer.client.send(m, Channel::Reliable).unwrap();
    }
    let ok = pump(server, &mut [&mut peer], |_, p| {
        p[0].data(Channel::Reliable).len() == reliable.len()
    });
    assert!(ok, "reliable echoes missing");
    assert!(
        peer.data(Channel::Reliable) == reliable,
        "reliable echoes differ"
    );

    // Unreliable may be lost even on loopback (a full socket buffer), so each message is
    // sent again if its echo does not come back; contents must still be exact.
    let unreliable: Vec<Vec<u8>> = [1, 100, config.unreliable_max_message_size()]
        .iter()
        .enumerate()
        .map(|(k, &n)| message(100 + k as u8, n))
        .collect();
    for m in &unreliable {
        let mut echoed = false;
        for _attempt in 0..5 {
            peer.client.send(m, Channel::Unreliable).unwrap();
            let mut waited = 0;
            echoed = pump(server, &mut [&mut peer], |_, p| {
                waited += 1;
                p[0].data(Channel::Unreliable).contains(m) || waited > 200
            }) && peer.data(Channel::Unreliable).contains(m);
            if echoed {
                break;
            }
        }
        assert!(
            echoed,
            "unreliable message of {} bytes never echoed",
            m.len()
        );
    }
    assert!(peer
        .data(Channel::Unreliable)
        .iter()
        .all(|d| unreliable.contains(d)));

    let (id, addr) = server_side[0];
    assert_eq!(server.server.remote_addr(id), Some(addr));
    assert_eq!(addr.port(), peer.client.local_addr().unwrap().port());

    // Hard disconnect: the server hears about it.
    peer.client.disconnect();
    let ok = pump(server, &mut [&mut peer], |s, _| {
        s.server.connection_count() == 0
    });
    assert!(ok, "server did not see the disconnect");
    assert!(server.events.contains(&OwnedEvent::Disconnected {
        id,
        reason: DisconnectReason::Remote
    }));
    addr
}

#[test]
fn ipv4_loopback_handshake_and_echo() {
    let mut server = Echo::bind("127.0.0.1:0");
    let addr = handshake_and_echo(&mut server, "127.0.0.1");
    assert_eq!(addr.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
}

#[test]
fn ipv6_loopback_handshake_and_echo() {
    let mut server = Echo::bind("[::1]:0");
    let addr = handshake_and_echo(&mut server, "::1");
    assert_eq!(addr.ip(), "::1".parse::<IpAddr>().unwrap());
}

#[test]
fn dual_mode_server_reports_ipv4_clients_as_plain_ipv4() {
    let mut server = Echo::bind_with(
        "[::]:0",
        Config {
            dual_mode: true,
            ..Config::default()
        },
    );
    assert!(server.server.local_addr().unwrap().is_ipv6());
    let addr = handshake_and_echo(&mut server, "127.0.0.1");
    assert_eq!(
        addr.ip(),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        "got {addr}, not plain IPv4"
    );
    assert!(addr.is_ipv4());
    // The same server also takes IPv6 clients.
    let addr6 = handshake_and_echo(&mut server, "::1");
    assert_eq!(addr6.ip(), "::1".parse::<IpAddr>().unwrap());
}

#[test]
fn two_clients_at_once() {
    let mut server = Echo::bind("127.0.0.1:0");
    let port = server.port();
    let mut a = Peer::connect("127.0.0.1", port);
    let mut b = Peer::connect("127.0.0.1", port);
    let ok = pump(&mut server, &mut [&mut a, &mut b], |s, p| {
        p.iter().all(|p| p.client.is_connected()) && s.server.connection_count() == 2
    });
    assert!(ok);
    let ids = server.connected();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0].0, ids[1].0);
    assert_ne!(ids[0].1, ids[1].1);

    let ma: Vec<Vec<u8>> = (0..20).map(|k| message(k, 3000)).collect();
    let mb: Vec<Vec<u8>> = (0..20).map(|k| message(50 + k, 2000)).collect();
    for (x, y) in ma.iter().zip(&mb) {
        a.client.send(x, Channel::Reliable).unwrap();
        b.client.send(y, Channel::Reliable).unwrap();
    }
    let ok = pump(&mut server, &mut [&mut a, &mut b], |_, p| {
        p[0].data(Channel::Reliable).len() == 20 && p[1].data(Channel::Reliable).len() == 20
    });
    assert!(ok, "echoes missing");
    assert!(a.data(Channel::Reliable) == ma, "client a got other data");
    assert!(b.data(Channel::Reliable) == mb, "client b got other data");
    // Each connection saw only its own client's messages.
    for (id, addr) in &ids {
        let got: Vec<&Vec<u8>> = server
            .events
            .iter()
            .filter_map(|e| match e {
                OwnedEvent::Data { id: i, data, .. } if i == id => Some(data),
                _ => None,
            })
            .collect();
        let expected = if addr.port() == a.client.local_addr().unwrap().port() {
            &ma
        } else {
            &mb
        };
        assert_eq!(got.len(), 20);
        assert!(got.iter().zip(expected).all(|(g, e)| *g == e));
    }
}

/// Linux reports ICMP "port unreachable" on the client's connected socket and Windows on
/// any socket; macOS and the BSDs report nothing, and the attempt ends at its timeout.
#[cfg(any(target_os = "linux", target_os = "android", windows))]
#[test]
fn client_notices_a_closed_port_before_its_handshake_timeout() {
    // A port nobody listens on: bind a server, note its port, drop it.
    let port = {
        let s = Server::bind("127.0.0.1:0", Config::default()).unwrap();
        s.local_addr().unwrap().port()
    };
    let mut peer = Peer::connect("127.0.0.1", port);
    for _ in 0..MAX_ITERATIONS {
        peer.tick();
        if !peer.events.is_empty() {
            break;
        }
        pause();
    }
    // The ICMP port unreachable arrives at once on loopback: the attempt ends as Closed, not
    // as a handshake Timeout.
    let last = peer.events.last().cloned();
    assert_eq!(
        last,
        Some(OwnedEvent::Disconnected {
            id: peer.client.id(),
            reason: DisconnectReason::Closed
        }),
        "{:?}",
        peer.events
    );
    assert!(peer.events.iter().all(|e| !matches!(
        e,
        OwnedEvent::Error {
            code: ErrorCode::Timeout,
            ..
        }
    )));
    assert!(!peer.client.is_connected());
    // Nothing more happens.
    for _ in 0..20 {
        peer.tick();
    }
    assert_eq!(
        peer.events
            .iter()
            .filter(|e| matches!(e, OwnedEvent::Disconnected { .. }))
            .count(),
        1
    );
}

#[test]
fn callback_form_over_udp() {
    let mut server = Server::bind("127.0.0.1:0", Config::default()).unwrap();
    let port = server.local_addr().unwrap().port();
    let mut peer = Peer::connect("127.0.0.1", port);
    let mut sent = false;
    let mut replies = 0;
    for _ in 0..MAX_ITERATIONS {
        server.tick_incoming_with(|ctx, ev| {
            if let Event::Data { id, channel, data } = ev {
                let mut reply = *b"re:xxxxx";
                reply[3..3 + data.len().min(5)].copy_from_slice(&data[..data.len().min(5)]);
                ctx.send(id, &reply, channel).unwrap();
                replies += 1;
            }
        });
        server.tick_outgoing();
        peer.tick();
        if peer.client.is_connected() && !sent {
            peer.client.send(b"hello", Channel::Reliable).unwrap();
            sent = true;
        }
        if !peer.data(Channel::Reliable).is_empty() {
            break;
        }
        pause();
    }
    assert_eq!(replies, 1);
    assert_eq!(peer.data(Channel::Reliable), vec![b"re:hello".to_vec()]);
}

/// `linger` after a shutdown delivers the close through a conditioner's delay: the client
/// learns why, and the server reports finishing with nothing left in flight.
#[test]
fn linger_after_shutdown_delivers_the_close_through_a_delayed_link() {
    use kcpnet::io::{Conditions, Direction};
    let mut server = Server::bind("127.0.0.1:0", Config::default()).unwrap();
    let addr = server.local_addr().unwrap();
    let mut client = Client::connect(addr, Config::default()).unwrap();
    for _ in 0..2_000 {
        server.tick_incoming();
        while server.poll_event().is_some() {}
        server.tick_outgoing();
        client.tick_incoming();
        while client.poll_event().is_some() {}
        client.tick_outgoing();
        if client.is_connected() && server.connection_count() == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(client.is_connected());
    server
        .set_conditions(
            Direction::Send,
            Conditions::default().with_latency(std::time::Duration::from_millis(40)),
        )
        .unwrap();
    server.shutdown();
    assert!(
        server.linger(std::time::Duration::from_secs(5)),
        "linger gave up"
    );
    assert_eq!(server.connection_count(), 0);
    assert_eq!(server.poll_delay(), Some(std::time::Duration::ZERO)); // the events wait
    let mut reason = None;
    for _ in 0..2_000 {
        client.tick_incoming();
        while let Some(e) = client.poll_event() {
            if let kcpnet::Event::Disconnected { reason: r, .. } = e {
                reason = Some(r);
            }
        }
        if reason.is_some() {
            break;
        }
        client.wait(std::time::Duration::from_millis(5)).unwrap();
    }
    assert_eq!(reason, Some(kcpnet::DisconnectReason::RemoteShutdown));
}
