//! The server driver: one socket, many connections, driven from the game loop.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use log::{debug, trace, warn};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use slab::Slab;

use crate::config::Config;
use crate::connection::{Connection, ConnectionState, Ctx};
use crate::driver::{require_conditioner, Now, TransportTx, RECV_BUFFER_LEN};
use crate::error::Error;
use crate::event::{ConnectionId, DisconnectReason, Event, EventQueue};
use crate::io::{
    Clock, ConditionerControl, Conditions, Direction, LinkConditioner, SocketOptions, SystemClock,
    Transport, UdpTransport,
};
use crate::stats::{ConnectionStats, EndpointStats};
use crate::wire::datagram::{is_hello_datagram, Channel};

/// One slab entry.
#[derive(Debug)]
struct Slot {
    conn: Connection,
    generation: u32,
    /// Due time (scheduler ms) of this slot's live timer entry; `u64::MAX` if none.
    scheduled: u64,
    /// Listed in `Server::dirty`.
    dirty: bool,
    /// Counted in `Server::half_open`.
    half_open: bool,
    /// Listed in `Server::throttled`.
    throttled: bool,
}

/// A kcp2k-compatible server. See the crate docs for a complete loop.
///
/// Each frame the application calls [`Server::tick_incoming`] (read every pending datagram,
/// run the timers of the connections that are due), handles events
/// ([`Server::poll_event`] or [`Server::tick_incoming_with`]), sends, then calls
/// [`Server::tick_outgoing`] (flush). Nothing blocks and no thread is started.
///
/// Connections are kept in a slab and found by remote address; only those with traffic or
/// a due timer are touched in a tick, so thousands of idle connections cost almost nothing.
pub struct Server {
    transport: Box<dyn Transport>,
    clock: Box<dyn Clock>,
    config: Config,
    slots: Slab<Slot>,
    by_addr: HashMap<SocketAddr, usize>,
    next_generation: u32,
    timers: BinaryHeap<Reverse<(u64, usize, u32)>>,
    dirty: Vec<usize>,
    /// Connections whose complete messages wait for room in the event queue.
    throttled: Vec<usize>,
    events: EventQueue,
    /// Ids closed by the application during a callback dispatch.
    closed_in_dispatch: Vec<ConnectionId>,
    recv_buf: Vec<u8>,
    send_buf: Vec<u8>,
    stats: EndpointStats,
    half_open: usize,
    rng: StdRng,
    now: Now,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.transport.local_addr().ok())
            .field("connections", &self.slots.len())
            .field("half_open", &self.half_open)
            .finish()
    }
}

impl Server {
    /// Binds a UDP server socket at `addr` (e.g. `"[::]:7777"` or `"0.0.0.0:7777"`).
    ///
    /// With `config.dual_mode` an IPv6 wildcard address also accepts IPv4 peers. The socket is
    /// wrapped in a [`LinkConditioner`] with perfect conditions, so
    /// [`Server::set_conditions`] works at run time.
    pub fn bind(addr: SocketAddr, config: Config) -> Result<Server, Error> {
        config.validate()?;
        let opts = SocketOptions {
            dual_mode: config.dual_mode,
            recv_buffer_size: config.recv_buffer_size,
            send_buffer_size: config.send_buffer_size,
            ..SocketOptions::default()
        };
        let udp = UdpTransport::bind(addr, &opts)?;
        let conditioner = LinkConditioner::new(udp, rand::random());
        Server::with_transport(Box::new(conditioner), Box::new(SystemClock::new()), config)
    }

    /// A server over any [`Transport`] and [`Clock`]: an in-memory network and a virtual
    /// clock for tests and simulations, or a custom socket.
    pub fn with_transport(
        transport: Box<dyn Transport>,
        clock: Box<dyn Clock>,
        config: Config,
    ) -> Result<Server, Error> {
        config.validate()?;
        let now = Now::read(clock.as_ref());
        Ok(Server {
            transport,
            clock,
            config,
            slots: Slab::new(),
            by_addr: HashMap::new(),
            next_generation: 1,
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            throttled: Vec::new(),
            events: EventQueue::default(),
            closed_in_dispatch: Vec::new(),
            recv_buf: vec![0; RECV_BUFFER_LEN],
            send_buf: Vec::new(),
            stats: EndpointStats::default(),
            half_open: 0,
            rng: StdRng::from_entropy(),
            now,
        })
    }

    /// Makes cookies deterministic, for reproducible tests and replays only: cookies then no
    /// longer protect against spoofing. By default they come from a cryptographically secure
    /// generator seeded by the OS.
    pub fn seed_cookies_for_testing(&mut self, seed: u64) {
        self.rng = StdRng::seed_from_u64(seed);
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        Ok(self.transport.local_addr()?)
    }

    /// Sets link conditions (loss, latency, ...) for all peers, in one direction or both.
    /// Fails if the transport has no conditioner (see [`Server::with_transport`]).
    pub fn set_conditions(
        &mut self,
        direction: Direction,
        conditions: Conditions,
    ) -> Result<(), Error> {
        require_conditioner(self.transport.as_mut())?.set_conditions(direction, conditions)
    }

    /// The link conditioner of this server's transport, for everything beyond
    /// `set_conditions`: per-peer conditions, statistics, reseeding. `None` if the transport
    /// given to `with_transport` is not a conditioner.
    pub fn conditioner(&mut self) -> Option<&mut dyn ConditionerControl> {
        self.transport.conditioner()
    }

    /// Sets link conditions for one peer address, overriding the global ones.
    pub fn set_peer_conditions(
        &mut self,
        peer: SocketAddr,
        direction: Direction,
        conditions: Conditions,
    ) -> Result<(), Error> {
        require_conditioner(self.transport.as_mut())?
            .set_peer_conditions(peer, direction, conditions)
    }

    // ------------------------------------------------------------------ ticks

    /// Reads every pending datagram (up to `max_datagrams_per_tick`), runs the timers of the
    /// connections that are due and takes their complete messages out of KCP. Events are
    /// then ready in [`Server::poll_event`].
    pub fn tick_incoming(&mut self) {
        self.now = Now::read(self.clock.as_ref());
        if let Err(e) = self.transport.poll(self.now.at) {
            debug!("transport poll failed: {e}");
        }
        let mut buf = std::mem::take(&mut self.recv_buf);
        for _ in 0..self.config.max_datagrams_per_tick {
            match self.transport.recv_from(&mut buf, self.now.at) {
                Ok(Some((len, from))) => self.on_datagram(&buf[..len], from),
                Ok(None) => break,
                Err(e) => {
                    warn!("socket receive failed: {e}");
                    break;
                }
            }
        }
        self.recv_buf = buf;
        self.collect_due();
        self.retry_throttled();
        for i in 0..self.dirty.len() {
            let idx = self.dirty[i];
            self.with_conn(idx, |c, ctx| c.process(ctx));
            self.settle(idx);
        }
    }

    /// Flushes the connections that have something to send (new messages, ACKs, due
    /// retransmissions, pings) and completes graceful disconnects.
    pub fn tick_outgoing(&mut self) {
        self.now = Now::read(self.clock.as_ref());
        self.collect_due();
        let dirty = std::mem::take(&mut self.dirty);
        for &idx in &dirty {
            if let Some(slot) = self.slots.get_mut(idx) {
                slot.dirty = false;
            }
            self.with_conn(idx, |c, ctx| {
                c.process(ctx);
                c.flush(ctx);
            });
            self.settle(idx);
        }
        self.dirty = dirty;
        self.dirty.clear();
        if let Err(e) = self.transport.poll(self.now.at) {
            debug!("transport poll failed: {e}");
        }
    }

    /// [`Server::tick_incoming`], then hands every event to `handler` together with a
    /// [`ServerCtx`] through which it can send or disconnect at once (as kcp2k's `OnData`).
    /// Message bytes are borrowed; nothing is allocated per message.
    pub fn tick_incoming_with<F>(&mut self, mut handler: F)
    where
        F: FnMut(&mut ServerCtx<'_>, Event<'_>),
    {
        self.tick_incoming();
        let mut queue = std::mem::take(&mut self.events);
        loop {
            while let Some(ev) = queue.pop() {
                handler(&mut ServerCtx { server: self }, ev);
                for id in self.closed_in_dispatch.drain(..) {
                    queue.cancel_data(id);
                }
            }
            // Events raised by the handler's own calls (e.g. Disconnected).
            if self.events.is_empty() {
                break;
            }
            std::mem::swap(&mut queue, &mut self.events);
        }
        // Both queues are empty now: keep the one whose arena has grown, so that a
        // disconnect inside the handler does not cost the next tick a reallocation.
        if queue.arena_capacity() >= self.events.arena_capacity() {
            self.events = queue;
        }
    }

    /// The next event, if any. Message data borrows the server until the next call.
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        self.events.pop()
    }

    /// Events waiting in the queue.
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// When the server next needs a tick (a timer or a delayed datagram), as a clock
    /// reading; `None` if nothing is scheduled. Datagram arrival is not predicted.
    pub fn next_wakeup(&self) -> Option<Duration> {
        let timer = self
            .timers
            .peek()
            .map(|Reverse((ms, _, _))| Duration::from_millis(*ms));
        match (timer, self.transport.next_wakeup()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---------------------------------------------------------- app requests

    /// Sends a message to a connected peer. Reliable messages go out at the next
    /// [`Server::tick_outgoing`]; unreliable ones at once.
    ///
    /// Errors: [`Error::UnknownConnection`], [`Error::NotConnected`] (handshake not complete
    /// or disconnecting), [`Error::EmptyMessage`], [`Error::MessageTooLarge`] — all with
    /// [`Error::code`] `InvalidSend` where kcp2k would report one, and none of them closes
    /// the connection.
    pub fn send(&mut self, id: ConnectionId, data: &[u8], channel: Channel) -> Result<(), Error> {
        let idx = self.index_of(id)?;
        let result = self
            .with_conn(idx, |c, ctx| c.send(ctx, data, channel))
            .unwrap_or(Err(Error::UnknownConnection));
        if result.is_ok() && channel == Channel::Reliable {
            self.mark_dirty(idx);
        }
        result
    }

    /// Closes a connection at once (kcp2k's `Disconnect`: five unreliable Disconnect
    /// datagrams; queued reliable data is dropped). A `Disconnected { reason: Local }` event
    /// follows, and undelivered data events of this connection are discarded.
    pub fn disconnect(&mut self, id: ConnectionId) -> Result<(), Error> {
        let idx = self.index_of(id)?;
        self.with_conn(idx, |c, ctx| {
            c.close(ctx, DisconnectReason::Local, None, true)
        });
        self.events.cancel_data(id);
        self.settle(idx);
        Ok(())
    }

    /// Closes a connection after its queued reliable data has been acknowledged (or
    /// `linger_timeout_ms` passed). Sending stops at once; received messages are still
    /// delivered until the `Disconnected` event.
    pub fn disconnect_graceful(&mut self, id: ConnectionId) -> Result<(), Error> {
        let idx = self.index_of(id)?;
        self.with_conn(idx, |c, ctx| c.disconnect_graceful(ctx));
        self.mark_dirty(idx);
        self.settle(idx);
        Ok(())
    }

    /// Closes every connection (hard disconnect, Disconnect datagrams sent), reporting
    /// `Disconnected` for each connected one, and forgets half-open peers.
    pub fn shutdown(&mut self) {
        let indices: Vec<usize> = self.slots.iter().map(|(i, _)| i).collect();
        for idx in indices {
            self.with_conn(idx, |c, ctx| {
                c.close(ctx, DisconnectReason::Closed, None, true)
            });
            self.settle(idx);
        }
        let _ = self.transport.poll(self.now.at);
    }

    // --------------------------------------------------------------- queries

    /// Connections that completed the handshake (half-open peers are not counted).
    pub fn connection_count(&self) -> usize {
        self.slots.len() - self.half_open
    }

    /// Half-open peers: valid Hello received, cookie not echoed yet.
    pub fn half_open_count(&self) -> usize {
        self.half_open
    }

    /// Ids of the connected peers.
    pub fn connections(&self) -> impl Iterator<Item = ConnectionId> + '_ {
        self.slots
            .iter()
            .filter(|(_, s)| s.conn.is_established())
            .map(|(i, s)| ConnectionId::new(i, s.generation))
    }

    /// The peer's address (IPv4-mapped IPv6 addresses are reported as IPv4).
    pub fn remote_addr(&self, id: ConnectionId) -> Option<SocketAddr> {
        self.slot(id).map(|s| s.conn.remote())
    }

    /// The connection's state.
    pub fn state(&self, id: ConnectionId) -> Option<ConnectionState> {
        self.slot(id).map(|s| s.conn.state())
    }

    /// Round-trip time from kcp2k Ping/Pong, in ms (`None` until measured).
    pub fn rtt(&self, id: ConnectionId) -> Option<u32> {
        self.slot(id).and_then(|s| s.conn.rtt())
    }

    /// Statistics of one connection.
    pub fn connection_stats(&self, id: ConnectionId) -> Option<ConnectionStats> {
        self.slot(id).map(|s| s.conn.stats())
    }

    /// KCP segments queued or in flight on a connection: a measure of send backlog.
    pub fn send_backlog(&self, id: ConnectionId) -> Option<usize> {
        self.slot(id).map(|s| s.conn.wait_snd())
    }

    /// Bytes of memory one connection holds (its state plus its buffers).
    pub fn connection_memory(&self, id: ConnectionId) -> Option<usize> {
        self.slot(id)
            .map(|s| s.conn.memory_bytes() + std::mem::size_of::<Slot>())
    }

    /// Endpoint-wide counters.
    pub fn stats(&self) -> EndpointStats {
        EndpointStats {
            connections: self.slots.len(),
            half_open: self.half_open,
            ..self.stats
        }
    }

    // -------------------------------------------------------------- internals

    fn slot(&self, id: ConnectionId) -> Option<&Slot> {
        self.slots
            .get(id.index())
            .filter(|s| s.generation == id.generation())
    }

    fn index_of(&self, id: ConnectionId) -> Result<usize, Error> {
        self.slot(id)
            .map(|_| id.index())
            .ok_or(Error::UnknownConnection)
    }

    fn on_datagram(&mut self, data: &[u8], from: SocketAddr) {
        self.stats.datagrams_received += 1;
        self.stats.bytes_received += data.len() as u64;
        if let Some(&idx) = self.by_addr.get(&from) {
            let dropped_before = self.slots[idx].conn.datagrams_dropped();
            self.with_conn(idx, |c, ctx| c.handle_datagram(ctx, data));
            if self.slots[idx].conn.datagrams_dropped() != dropped_before {
                self.stats.dropped_invalid += 1;
            }
            self.mark_dirty(idx);
            self.settle(idx);
            return;
        }
        if !is_hello_datagram(data) {
            // Nothing is allocated and nothing is answered for strangers.
            trace!("dropping {} bytes from unknown {from}", data.len());
            self.stats.dropped_unknown += 1;
            return;
        }
        if self.half_open >= self.config.max_half_open
            || self.slots.len() >= self.config.max_connections
        {
            debug!("dropping Hello from {from}: connection limits reached");
            self.stats.dropped_limit += 1;
            return;
        }
        let cookie = loop {
            let c: u32 = self.rng.gen();
            if c != 0 {
                break c;
            }
        };
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let conn = Connection::new_server(from, cookie, &self.config, self.now.kcp());
        let idx = self.slots.insert(Slot {
            conn,
            generation,
            scheduled: u64::MAX,
            dirty: false,
            half_open: true,
            throttled: false,
        });
        self.half_open += 1;
        self.by_addr.insert(from, idx);
        debug!("half-open peer {from} (slot {idx})");
        self.with_conn(idx, |c, ctx| c.handle_datagram(ctx, data));
        self.mark_dirty(idx);
        self.settle(idx);
    }

    /// Runs `f` on a connection with a context borrowing the server's other parts.
    fn with_conn<R>(
        &mut self,
        idx: usize,
        f: impl FnOnce(&mut Connection, &mut Ctx<'_>) -> R,
    ) -> Option<R> {
        let slot = self.slots.get_mut(idx)?;
        let id = ConnectionId::new(idx, slot.generation);
        let mut tx = TransportTx {
            transport: self.transport.as_mut(),
            now: self.now.at,
            stats: &mut self.stats,
            scratch: &mut self.send_buf,
        };
        let mut ctx = Ctx {
            now: self.now.kcp(),
            id,
            events: &mut self.events,
            tx: &mut tx,
        };
        Some(f(&mut slot.conn, &mut ctx))
    }

    fn mark_dirty(&mut self, idx: usize) {
        if let Some(slot) = self.slots.get_mut(idx) {
            if !slot.dirty {
                slot.dirty = true;
                self.dirty.push(idx);
            }
        }
    }

    /// Bookkeeping after a connection changed: half-open accounting, removal of closed
    /// connections, and rescheduling.
    fn settle(&mut self, idx: usize) {
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
        if slot.half_open && !slot.conn.is_half_open() {
            slot.half_open = false;
            self.half_open -= 1;
            if slot.conn.is_established() {
                self.stats.connections_accepted += 1;
            } else {
                self.stats.handshakes_expired += 1;
            }
        }
        if slot.conn.is_throttled() && !slot.throttled {
            slot.throttled = true;
            self.throttled.push(idx);
        }
        if slot.conn.state() == ConnectionState::Disconnected {
            let remote = slot.conn.remote();
            self.slots.remove(idx);
            self.by_addr.remove(&remote);
            // Stale timer entries and dirty-list entries are skipped by generation checks.
            return;
        }
        let due = self.now.to_ms(slot.conn.next_deadline(self.now.kcp()));
        if due < slot.scheduled || slot.scheduled == u64::MAX {
            slot.scheduled = due;
            self.timers.push(Reverse((due, idx, slot.generation)));
        }
    }

    /// Marks the connections that stopped taking messages for lack of event-queue room as
    /// dirty once there is room again, so their messages are taken and their window
    /// reopens now rather than at their next timer.
    fn retry_throttled(&mut self) {
        if self.throttled.is_empty()
            || self.events.pending_bytes() >= self.config.max_pending_event_bytes
        {
            return;
        }
        let throttled = std::mem::take(&mut self.throttled);
        for &idx in &throttled {
            if let Some(slot) = self.slots.get_mut(idx) {
                slot.throttled = false;
            }
            self.mark_dirty(idx);
        }
        // Keep the allocation; `settle` lists them again if they are still held back.
        self.throttled = throttled;
        self.throttled.clear();
    }

    /// Marks every connection whose timer is due as dirty.
    fn collect_due(&mut self) {
        while let Some(&Reverse((due, idx, generation))) = self.timers.peek() {
            if due > self.now.ms {
                break;
            }
            self.timers.pop();
            let Some(slot) = self.slots.get_mut(idx) else {
                continue;
            };
            if slot.generation != generation || slot.scheduled != due {
                continue; // stale entry
            }
            slot.scheduled = u64::MAX;
            self.mark_dirty(idx);
        }
    }
}

/// The server as seen from an event handler of [`Server::tick_incoming_with`]: it can
/// reply, disconnect and query, but not tick.
pub struct ServerCtx<'a> {
    server: &'a mut Server,
}

impl ServerCtx<'_> {
    /// See [`Server::send`].
    pub fn send(&mut self, id: ConnectionId, data: &[u8], channel: Channel) -> Result<(), Error> {
        self.server.send(id, data, channel)
    }

    /// See [`Server::disconnect`]. Data events of this connection still queued in the
    /// current dispatch are discarded.
    pub fn disconnect(&mut self, id: ConnectionId) -> Result<(), Error> {
        let r = self.server.disconnect(id);
        if r.is_ok() {
            self.server.closed_in_dispatch.push(id);
        }
        r
    }

    /// See [`Server::disconnect_graceful`].
    pub fn disconnect_graceful(&mut self, id: ConnectionId) -> Result<(), Error> {
        self.server.disconnect_graceful(id)
    }

    /// See [`Server::remote_addr`].
    pub fn remote_addr(&self, id: ConnectionId) -> Option<SocketAddr> {
        self.server.remote_addr(id)
    }

    /// See [`Server::rtt`].
    pub fn rtt(&self, id: ConnectionId) -> Option<u32> {
        self.server.rtt(id)
    }

    /// See [`Server::connection_stats`].
    pub fn connection_stats(&self, id: ConnectionId) -> Option<ConnectionStats> {
        self.server.connection_stats(id)
    }

    /// See [`Server::connection_count`].
    pub fn connection_count(&self) -> usize {
        self.server.connection_count()
    }
}
