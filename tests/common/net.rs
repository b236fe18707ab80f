//! A hand-driven network of sans-IO endpoints for tests: one listening endpoint and client
//! endpoints, datagrams delayed and dropped at random (seeded), every datagram recorded,
//! virtual time in 1 ms steps. Clients can change address (a NAT rebinding).
#![allow(dead_code)] // each test file uses what it needs

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use kcpnet::endpoint::{Endpoint, Outbox};
use kcpnet::{Config, ConnectionId, OwnedEvent};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The server's address.
pub const SERVER: &str = "10.0.0.1:7777";
/// Unix time at the network's `now == 0`.
pub const UNIX0: u64 = 1_800_000_000;

/// A datagram in flight.
pub struct Flight {
    at: u64,
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

/// One client endpoint: its connection and the address its datagrams leave from.
pub struct Peer {
    pub ep: Endpoint,
    pub id: ConnectionId,
    pub addr: SocketAddr,
    /// Earlier addresses: datagrams sent to them still reach this client (a NAT keeps an
    /// old mapping a while) unless `old_dead`.
    pub old: Vec<SocketAddr>,
    pub old_dead: bool,
    pub events: Vec<OwnedEvent>,
}

pub struct Net {
    pub server: Endpoint,
    pub server_addr: SocketAddr,
    pub peers: Vec<Peer>,
    pub wire: VecDeque<Flight>,
    /// Every datagram handed to the network, for inspection (from, to, bytes).
    pub tap: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    pub loss: f64,
    pub latency_ms: u64,
    pub rng: StdRng,
    pub now_ms: u64,
    pub out: Outbox,
    pub server_events: Vec<OwnedEvent>,
}

impl Net {
    pub fn new(server: Config, seed: u64, loss: f64, latency_ms: u64) -> Net {
        let mut server = Endpoint::server(server).unwrap();
        server.set_unix_time(Duration::ZERO, UNIX0);
        server.seed_cookies_for_testing(seed);
        Net {
            server,
            server_addr: SERVER.parse().unwrap(),
            peers: Vec::new(),
            wire: VecDeque::new(),
            tap: Vec::new(),
            loss,
            latency_ms,
            rng: StdRng::seed_from_u64(seed),
            now_ms: 0,
            out: Outbox::new(),
            server_events: Vec::new(),
        }
    }

    pub fn now(&self) -> Duration {
        Duration::from_millis(self.now_ms)
    }

    /// A client at `addr`, with a token or plain.
    #[cfg(feature = "secure")]
    pub fn add(&mut self, addr: &str, token: Option<&kcpnet::secure::ConnectToken>) -> usize {
        let mut ep = Endpoint::client(Config::default()).unwrap();
        let now = self.now();
        let id = match token {
            Some(t) => ep.connect_with_token(now, t).unwrap(),
            None => ep.connect(now, self.server_addr).unwrap(),
        };
        self.add_endpoint(addr, ep, id)
    }

    /// A plain client at `addr` with `config`.
    pub fn add_plain(&mut self, addr: &str, config: Config) -> usize {
        let mut ep = Endpoint::client(config).unwrap();
        let id = ep.connect(self.now(), self.server_addr).unwrap();
        self.add_endpoint(addr, ep, id)
    }

    /// A client endpoint `ep` (connection `id`) at `addr`.
    pub fn add_endpoint(&mut self, addr: &str, ep: Endpoint, id: ConnectionId) -> usize {
        self.peers.push(Peer {
            ep,
            id,
            addr: addr.parse().unwrap(),
            old: Vec::new(),
            old_dead: false,
            events: Vec::new(),
        });
        self.peers.len() - 1
    }

    /// Moves the outbox onto the wire, from `from`.
    pub fn ship(&mut self, from: SocketAddr) {
        while let Some((to, data)) = self.out.pop() {
            self.tap.push((from, to, data.to_vec()));
            if self.rng.gen_bool(self.loss) {
                continue;
            }
            self.wire.push_back(Flight {
                at: self.now_ms + self.latency_ms,
                from,
                to,
                data: data.to_vec(),
            });
        }
    }

    /// Injects a datagram as if `from` sent it to the server now.
    pub fn inject(&mut self, from: SocketAddr, data: &[u8]) {
        let now = self.now();
        self.server.handle_datagram(now, from, data, &mut self.out);
        let s = self.server_addr;
        self.ship(s);
    }

    pub fn step(&mut self) {
        self.now_ms += 1;
        let now = self.now();
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.wire.len() {
            if self.wire[i].at <= self.now_ms {
                due.push(self.wire.remove(i).unwrap());
            } else {
                i += 1;
            }
        }
        for f in due {
            if f.to == self.server_addr {
                self.server
                    .handle_datagram(now, f.from, &f.data, &mut self.out);
                let s = self.server_addr;
                self.ship(s);
            } else if let Some(p) = self
                .peers
                .iter_mut()
                .find(|p| p.addr == f.to || (!p.old_dead && p.old.contains(&f.to)))
            {
                p.ep.handle_datagram(now, f.from, &f.data, &mut self.out);
                let a = p.addr;
                self.ship(a);
            }
        }
        self.server.handle_timeout(now, &mut self.out);
        self.server.flush(now, &mut self.out);
        let s = self.server_addr;
        self.ship(s);
        while let Some(e) = self.server.poll_event() {
            self.server_events.push(e.to_owned_event());
        }
        for i in 0..self.peers.len() {
            let p = &mut self.peers[i];
            p.ep.handle_timeout(now, &mut self.out);
            p.ep.flush(now, &mut self.out);
            while let Some(e) = p.ep.poll_event() {
                p.events.push(e.to_owned_event());
            }
            let a = p.addr;
            self.ship(a);
        }
    }

    pub fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.step();
        }
    }

    /// Runs until `done` or `max_ms` pass; whether `done` became true.
    pub fn run_until(&mut self, max_ms: u64, mut done: impl FnMut(&Net) -> bool) -> bool {
        for _ in 0..max_ms {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    pub fn server_id_of(&self, addr: SocketAddr) -> Option<ConnectionId> {
        self.server
            .connections()
            .find(|&id| self.server.remote_addr(id) == Some(addr))
    }

    pub fn connected(&self, peer: usize) -> bool {
        self.peers[peer].ep.is_connected(self.peers[peer].id)
    }

    pub fn server_data(&self) -> Vec<Vec<u8>> {
        self.server_events
            .iter()
            .filter_map(|e| match e {
                OwnedEvent::Data { data, .. } => Some(data.clone()),
                _ => None,
            })
            .collect()
    }
}
