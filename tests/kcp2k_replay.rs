//! Replay of a real kcp2k client against a kcpnet `Server`.
//!
//! `tests/vectors/kcp2k/capture_basic.txt` holds every datagram of a real kcp2k (C#, V1.41+rtt)
//! client talking to a real kcp2k echo server: handshake, reliable messages of 1, 100, 1200,
//! 5000 and 148 716 bytes, unreliable ones of 1, 100 and 1194 bytes, each echoed, then the
//! client's disconnect. We feed the client's datagrams to our server at their recorded times
//! (virtual clock, in-memory network) and check that
//!
//! * the server reports exactly the events a game would expect: one `Connected` (only after
//!   the client echoed the cookie), the eight messages with their exact sizes and bytes, one
//!   `Disconnected { reason: Remote }`, and nothing else;
//! * our replies carry the same KCP segments as the real server's: the same PUSH segments
//!   (sn, frg, len and payload bytes, in first-transmission order), ACKs for the same
//!   sequence numbers, the same final `una`, only PUSH/ACK commands, and the same unreliable
//!   echoes.
//!
//! Two things differ on purpose and are asserted as such: the cookie (ours comes from a
//! seeded generator; the client's datagrams are patched to carry it, as a real client would
//! have adopted it) and the Disconnect echo (kcp2k answers a Disconnect with five of its
//! own; kcpnet does not, since the peer has already gone). Timing and ACK batching differ
//! because kcpnet flushes on every tick.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use kcpnet::io::{ManualClock, MemoryNetwork, MemorySocket, Transport};
use kcpnet::wire::datagram::{parse_unreliable, Datagram, UnreliableHeader};
use kcpnet::wire::segment::{segments, Command};
use kcpnet::{Channel, Config, DisconnectReason, Event, OwnedEvent, Server};

const REAL_COOKIE: u32 = 4_150_018_856;

struct Line {
    t_ms: f64,
    c2s: bool,
    bytes: Vec<u8>,
}

fn load_capture() -> Vec<Line> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/kcp2k/capture_basic.txt"
    );
    let text = std::fs::read_to_string(path).expect("capture file");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 4, "malformed capture line: {l}");
            let bytes: Vec<u8> = (0..f[3].len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&f[3][i..i + 2], 16).unwrap())
                .collect();
            assert_eq!(bytes.len(), f[2].parse::<usize>().unwrap());
            Line {
                t_ms: f[0].parse().unwrap(),
                c2s: f[1] == "c2s",
                bytes,
            }
        })
        .collect()
}

/// What a side sent, decoded.
#[derive(Default, Debug)]
struct Decoded {
    /// First transmission of each PUSH: (sn, frg, len, payload).
    pushes: Vec<(u32, u8, u32, Vec<u8>)>,
    acked: BTreeSet<u32>,
    commands: BTreeSet<u8>,
    last_una: u32,
    unreliable_data: Vec<Vec<u8>>,
    disconnects: usize,
}

fn decode(datagrams: &[Vec<u8>]) -> Decoded {
    let mut d = Decoded::default();
    let mut seen = BTreeSet::new();
    for dg in datagrams {
        let parsed = Datagram::parse(dg).expect("valid datagram");
        match parsed.channel {
            Channel::Reliable => {
                for seg in segments(parsed.payload) {
                    let (h, payload) = seg.expect("valid segment");
                    d.commands.insert(h.cmd.as_u8());
                    d.last_una = h.una;
                    match h.cmd {
                        Command::Push if seen.insert(h.sn) => {
                            d.pushes.push((h.sn, h.frg, h.len, payload.to_vec()));
                        }
                        Command::Ack => {
                            d.acked.insert(h.sn);
                        }
                        _ => {}
                    }
                }
            }
            Channel::Unreliable => match parse_unreliable(parsed.payload).unwrap() {
                (UnreliableHeader::Data, p) => d.unreliable_data.push(p.to_vec()),
                (UnreliableHeader::Disconnect, _) => d.disconnects += 1,
            },
        }
    }
    d
}

/// The server under test, a raw socket playing the real client, and what the server sent.
struct Replay {
    server: Server,
    client: MemorySocket,
    clock: ManualClock,
    events: Vec<OwnedEvent>,
    ours: Vec<Vec<u8>>,
    our_cookie: Option<u32>,
    buf: Vec<u8>,
}

impl Replay {
    /// One server tick (echoing like the capture's server did), collecting its replies, then
    /// one virtual millisecond.
    fn tick(&mut self) {
        let events = &mut self.events;
        self.server.tick_incoming_with(|ctx, ev| {
            events.push(ev.to_owned_event());
            if let Event::Data { id, channel, data } = ev {
                ctx.send(id, data, channel).unwrap();
            }
        });
        self.server.tick_outgoing();
        while let Some((n, _)) = self
            .client
            .recv_from(&mut self.buf, self.clock.now())
            .unwrap()
        {
            let dg = self.buf[..n].to_vec();
            if self.our_cookie.is_none() {
                self.our_cookie = Some(u32::from_le_bytes(dg[1..5].try_into().unwrap()));
            }
            self.ours.push(dg);
        }
        self.clock.advance(Duration::from_millis(1));
    }
}

#[test]
fn real_kcp2k_client_against_kcpnet_server() {
    let capture = load_capture();
    assert_eq!(capture.len(), 298);

    let net = MemoryNetwork::new();
    let clock = ManualClock::new();
    let server_addr: SocketAddr = "127.0.0.1:18800".parse().unwrap();
    let client_addr: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let mut server = Server::with_transport(
        Box::new(net.bind(server_addr).unwrap()),
        Box::new(clock.clone()),
        Config::default(),
    )
    .unwrap();
    server.seed_cookies_for_testing(42);
    let client = net.bind(client_addr).unwrap();

    let mut run = Replay {
        server,
        client,
        clock: clock.clone(),
        events: Vec::new(),
        ours: Vec::new(),
        our_cookie: None,
        buf: vec![0u8; 65536],
    };

    let mut real_s2c = Vec::new();
    let mut connected_after: Option<usize> = None;
    for (i, line) in capture.iter().enumerate() {
        if !line.c2s {
            real_s2c.push(line.bytes.clone());
            continue;
        }
        // Run the server up to this datagram's recorded time.
        while (clock.now().as_secs_f64() * 1000.0) < line.t_ms {
            run.tick();
        }
        let mut dg = line.bytes.clone();
        let cookie = u32::from_le_bytes(dg[1..5].try_into().unwrap());
        if cookie == REAL_COOKIE {
            let ours = run
                .our_cookie
                .expect("the client echoes a cookie only after our Hello");
            dg[1..5].copy_from_slice(&ours.to_le_bytes());
        }
        run.client.send_to(&dg, server_addr, clock.now()).unwrap();
        run.tick();
        if connected_after.is_none()
            && run
                .events
                .iter()
                .any(|e| matches!(e, OwnedEvent::Connected { .. }))
        {
            connected_after = Some(i);
        }
    }
    for _ in 0..50 {
        run.tick();
    }

    let Replay {
        server,
        events,
        ours,
        our_cookie,
        ..
    } = run;

    // Connected only once the client's datagram #002 echoed our cookie, not on its Hello.
    assert_eq!(
        connected_after,
        Some(2),
        "Connected must follow the cookie echo"
    );

    // The events, exactly.
    let id = events[0].id();
    assert_eq!(
        events[0],
        OwnedEvent::Connected {
            id,
            addr: client_addr
        }
    );
    let data: Vec<(Channel, usize)> = events
        .iter()
        .filter_map(|e| match e {
            OwnedEvent::Data { channel, data, .. } => Some((*channel, data.len())),
            _ => None,
        })
        .collect();
    assert_eq!(
        data,
        vec![
            (Channel::Reliable, 1),
            (Channel::Reliable, 100),
            (Channel::Reliable, 1200),
            (Channel::Reliable, 5000),
            (Channel::Reliable, 148_716),
            (Channel::Unreliable, 1),
            (Channel::Unreliable, 100),
            (Channel::Unreliable, 1194),
        ]
    );
    assert_eq!(
        events.last(),
        Some(&OwnedEvent::Disconnected {
            id,
            reason: DisconnectReason::Remote
        })
    );
    assert_eq!(events.len(), 1 + 8 + 1, "no other events: {events:?}");
    assert_eq!(server.connection_count(), 0);

    // Our replies against the real server's.
    let real = decode(&real_s2c);
    let mine = decode(&ours);
    assert_eq!(
        mine.pushes.len(),
        real.pushes.len(),
        "number of PUSH segments"
    );
    for (m, r) in mine.pushes.iter().zip(&real.pushes) {
        assert_eq!(
            (m.0, m.1, m.2),
            (r.0, r.1, r.2),
            "PUSH (sn, frg, len) differs"
        );
        assert_eq!(m.3, r.3, "payload of PUSH sn={} differs", m.0);
    }
    assert_eq!(mine.acked, real.acked, "ACKed sequence numbers");
    assert_eq!(mine.last_una, real.last_una, "final una");
    assert_eq!(
        mine.commands,
        BTreeSet::from([Command::Push.as_u8(), Command::Ack.as_u8()])
    );
    assert_eq!(mine.commands, real.commands);
    assert_eq!(mine.unreliable_data, real.unreliable_data);
    // The deliberate difference: kcp2k echoes the Disconnect five times, kcpnet not at all.
    assert_eq!(real.disconnects, 5);
    assert_eq!(mine.disconnects, 0);
    // A kcp2k client never sees a kcpnet extension: its bare Hello gets the bare 54-byte
    // reply, and every message we sent starts with a kcp2k header (Hello, Ping, Data, Pong).
    assert_eq!(ours[0].len(), 54, "the stateless reply to a bare Hello");
    assert_eq!(
        mine.pushes[0].3,
        vec![1],
        "our Hello carries no extension block"
    );
    let mut starts_message = true;
    for (sn, frg, _, payload) in &mine.pushes {
        if starts_message {
            assert!(
                (1..=4).contains(&payload[0]),
                "message at sn {sn} starts with header {}",
                payload[0]
            );
        }
        starts_message = *frg == 0;
    }
    // Every datagram we sent carried our cookie and fit the MTU.
    for dg in &ours {
        assert!(dg.len() <= 1200);
        assert_eq!(
            u32::from_le_bytes(dg[1..5].try_into().unwrap()),
            our_cookie.unwrap()
        );
    }
    println!(
        "replay: {} client datagrams fed, {} replies ({} real), {} PUSH segments and {} ACKed sns identical",
        capture.iter().filter(|l| l.c2s).count(),
        ours.len(),
        real_s2c.len(),
        mine.pushes.len(),
        mine.acked.len()
    );
}
