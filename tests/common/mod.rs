//! A deterministic simulation harness shared by the integration tests: one [`Server`] and
//! any number of [`Client`]s on an in-memory network, each behind its own seeded link
//! conditioner, all driven by one virtual clock. Nothing here reads the wall clock, so a run
//! is reproducible from its seeds.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use kcpnet::io::{
    ConditionerControl, Conditions, Direction, LinkConditioner, ManualClock, MemoryNetwork,
    MemorySocket,
};
use kcpnet::{Channel, Client, Config, ConnectionId, Event, OwnedEvent, Server, ServerCtx};

/// The server's address on the simulated network.
pub const SERVER_ADDR: &str = "10.0.0.1:7777";

/// The address of client `i`.
pub fn client_addr(i: usize) -> SocketAddr {
    format!("10.0.{}.{}:5000", 1 + i / 250, 1 + i % 250)
        .parse()
        .unwrap()
}

/// One server, many clients, one virtual clock.
pub struct Sim {
    pub net: MemoryNetwork,
    pub clock: ManualClock,
    pub server: Server,
    pub server_addr: SocketAddr,
    pub clients: Vec<Client>,
    /// Every server event so far, in order.
    pub server_events: Vec<OwnedEvent>,
    /// Every event of each client so far, in order.
    pub client_events: Vec<Vec<OwnedEvent>>,
    /// Virtual milliseconds per step.
    pub step_ms: u64,
    pub steps: u64,
    seed: u64,
}

impl Sim {
    /// A server with `config` and perfect links; the conditioners are seeded from `seed`.
    pub fn new(config: Config, seed: u64) -> Sim {
        let net = MemoryNetwork::new();
        let clock = ManualClock::starting_at(Duration::from_secs(1));
        let server_addr: SocketAddr = SERVER_ADDR.parse().unwrap();
        let socket = net.bind(server_addr).unwrap();
        let transport = LinkConditioner::new(socket, seed);
        let mut server =
            Server::with_conditioned_transport(transport, Box::new(clock.clone()), config).unwrap();
        server.seed_cookies_for_testing(seed ^ 0x5eed);
        Sim {
            net,
            clock,
            server,
            server_addr,
            clients: Vec::new(),
            server_events: Vec::new(),
            client_events: Vec::new(),
            step_ms: 1,
            steps: 0,
            seed,
        }
    }

    /// Adds a client (not yet connected: the handshake starts at the next step).
    pub fn add_client(&mut self, config: Config) -> usize {
        let i = self.clients.len();
        let socket: MemorySocket = self.net.bind(client_addr(i)).unwrap();
        let transport = LinkConditioner::new(socket, self.seed.wrapping_add(1 + i as u64));
        let client = Client::with_conditioned_transport(
            transport,
            Box::new(self.clock.clone()),
            self.server_addr,
            config,
        )
        .unwrap();
        self.clients.push(client);
        self.client_events.push(Vec::new());
        i
    }

    /// Applies `conditions` in both directions on the server and on every client, so each
    /// path sees them twice (once leaving, once arriving) unless only one side is set.
    pub fn set_all_conditions(&mut self, direction: Direction, conditions: Conditions) {
        self.server
            .set_conditions(direction, conditions.clone())
            .unwrap();
        for c in &mut self.clients {
            c.set_conditions(direction, conditions.clone()).unwrap();
        }
    }

    /// One step: server incoming (events to `on_server`), server outgoing, each client's
    /// incoming (events to `on_client`) and outgoing, then the clock advances `step_ms`.
    pub fn step_with(
        &mut self,
        mut on_server: impl FnMut(&mut ServerCtx<'_>, &Event<'_>),
        mut on_client: impl FnMut(usize, &mut Client, &OwnedEvent),
    ) {
        let log = &mut self.server_events;
        self.server.tick_incoming_with(|ctx, ev| {
            log.push(ev.to_owned_event());
            on_server(ctx, &ev);
        });
        self.server.tick_outgoing();
        for (i, client) in self.clients.iter_mut().enumerate() {
            client.tick_incoming();
            let mut fresh = Vec::new();
            while let Some(ev) = client.poll_event() {
                fresh.push(ev.to_owned_event());
            }
            for ev in fresh {
                on_client(i, client, &ev);
                self.client_events[i].push(ev);
            }
            client.tick_outgoing();
        }
        self.clock.advance(Duration::from_millis(self.step_ms));
        self.steps += 1;
    }

    /// The second half of a step for tests that drive the server themselves: ticks every
    /// client (recording its events) and advances the clock.
    pub fn step_clients(&mut self) {
        for (i, client) in self.clients.iter_mut().enumerate() {
            client.tick_incoming();
            while let Some(ev) = client.poll_event() {
                self.client_events[i].push(ev.to_owned_event());
            }
            client.tick_outgoing();
        }
        self.clock.advance(Duration::from_millis(self.step_ms));
        self.steps += 1;
    }

    /// One step in which the server echoes every message on its channel.
    pub fn step_echo(&mut self) {
        self.step_with(
            |ctx, ev| {
                if let Event::Data { id, channel, data } = ev {
                    ctx.send(*id, data, *channel).unwrap();
                }
            },
            |_, _, _| {},
        );
    }

    /// One step with no application behaviour (events are only recorded).
    pub fn step(&mut self) {
        self.step_with(|_, _| {}, |_, _, _| {});
    }

    /// Steps until `done` holds or `max_steps` pass; returns whether `done` held.
    pub fn run_until(&mut self, max_steps: u64, mut done: impl FnMut(&Sim) -> bool) -> bool {
        for _ in 0..max_steps {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    /// Steps for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let steps = d.as_millis() as u64 / self.step_ms;
        for _ in 0..steps {
            self.step();
        }
    }

    /// Steps until every client is connected and the server reported each connection
    /// (one step later: it waits for the client's cookie echo); panics after `max_steps`.
    pub fn connect_all(&mut self, max_steps: u64) {
        let ok = self.run_until(max_steps, |s| {
            s.clients.iter().all(|c| c.is_connected())
                && s.server.connection_count() == s.clients.len()
        });
        assert!(ok, "not every client connected within {max_steps} steps");
    }

    /// The server-side id of the connection from client `i` (from its Connected event).
    pub fn server_id_of(&self, i: usize) -> Option<ConnectionId> {
        let addr = client_addr(i);
        self.server_events.iter().find_map(|e| match e {
            OwnedEvent::Connected { id, addr: a } if *a == addr => Some(*id),
            _ => None,
        })
    }
}

/// The data events in `events` (of connection `id`, or of every connection for `None`), in
/// order, borrowing their bytes.
pub fn data_of(events: &[OwnedEvent], id: Option<ConnectionId>) -> Vec<(Channel, &[u8])> {
    events
        .iter()
        .filter_map(|e| match e {
            OwnedEvent::Data {
                id: i,
                channel,
                data,
            } if id.is_none_or(|id| id == *i) => Some((*channel, data.as_slice())),
            _ => None,
        })
        .collect()
}

/// Deterministic message content: byte `j` of message `seq` from sender `who`.
pub fn payload(who: u64, seq: u64, len: usize) -> Vec<u8> {
    let mut x =
        (who.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq.wrapping_mul(0xBF58_476D_1CE4_E5B9)) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A small deterministic generator for sizes and choices in tests.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64-bit value (splitmix64).
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}

/// Sets the same conditions on one conditioner control, both directions.
pub fn set_both(c: &dyn ConditionerControl, conditions: Conditions) {
    c.set_conditions(Direction::Both, conditions).unwrap();
}
