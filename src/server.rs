//! The server driver: one socket, many connections, driven from the game loop.
//!
//! What is particular to a server lives here: the connection table (a slab found by remote
//! address, ids of index + generation), the timer heap, and admission of new peers. The
//! receive loop, event dispatch and transport access are the shared [`Core`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use log::{debug, trace};
use rand::rngs::{OsRng, StdRng};
use rand::{Rng, SeedableRng};
use slab::Slab;

use crate::config::Config;
use crate::connection::handshake::{
    is_handshake_reply, parse_client_hello, write_hello_reply, CookieKey, HELLO_REPLY_LEN,
};
use crate::connection::{Connection, ConnectionState, Ctx, Extensions};
use crate::driver::{socket_options, Core, EventDrain, Peers};
use crate::error::Error;
use crate::event::{ConnectionId, DisconnectReason, Event};
use crate::io::{
    AddrKey, Clock, ConditionerControl, Conditions, Direction, LinkConditioner, SystemClock,
    Transport, UdpTransport,
};
use crate::stats::{ConnectionQuality, ConnectionStats, EndpointStats};
use crate::wire::datagram::{Channel, Datagram};

/// One slab entry.
#[derive(Debug)]
struct Slot {
    conn: Connection,
    generation: u32,
    /// Due time (scheduler ms) of this slot's live timer entry; `u64::MAX` if none.
    scheduled: u64,
    /// The scheduler ms at which `after_receive` processed it in this tick (`u64::MAX`:
    /// not since the last flush): `flush` need not process it again at the same ms.
    processed_at: u64,
    /// Listed in `Table::dirty`.
    dirty: bool,
    /// Listed in `Table::throttled`.
    throttled: bool,
}

// The fuzz harnesses (`fuzzing::memory_bound`) allow 64 bytes of slot bookkeeping around a
// connection.
const _: () = assert!(std::mem::size_of::<Slot>() <= std::mem::size_of::<Connection>() + 64);

/// The server's connections: a slab found by address, the timer heap, the dirty list.
struct Table {
    slots: Slab<Slot>,
    by_addr: HashMap<AddrKey, usize>,
    next_generation: u32,
    /// Timer entries, [`timer_entry`]s: due time, slot, generation in one `u128` (cheap to
    /// compare and move). Entries whose slot was rescheduled or reused are skipped.
    timers: BinaryHeap<Reverse<u128>>,
    dirty: Vec<usize>,
    /// Connections whose complete messages wait for room in the event queue.
    throttled: Vec<usize>,
    /// The secret behind the stateless handshake's cookies.
    key: CookieKey,
}

/// A timer entry: due time (scheduler ms) in the high 64 bits, then slot index and
/// generation, so entries order by due time.
fn timer_entry(due: u64, idx: usize, generation: u32) -> u128 {
    (due as u128) << 64 | ((idx as u32) as u128) << 32 | generation as u128
}

/// The due time, slot index and generation of a timer entry.
fn timer_parts(entry: u128) -> (u64, usize, u32) {
    (
        (entry >> 64) as u64,
        (entry >> 32) as u32 as usize,
        entry as u32,
    )
}

impl Table {
    fn slot(&self, id: ConnectionId) -> Option<&Slot> {
        self.slots
            .get(id.index())
            .filter(|s| s.generation == id.generation())
    }

    /// The slot of a live connection, or why there is none: `ConnectionClosed` for an id
    /// this server handed out whose connection has ended, `UnknownConnection` otherwise.
    fn index_of(&self, id: ConnectionId) -> Result<usize, Error> {
        if self.slot(id).is_some() {
            return Ok(id.index());
        }
        let issued = id.generation() != 0 && id.generation() < self.next_generation;
        Err(if issued {
            Error::ConnectionClosed
        } else {
            Error::UnknownConnection
        })
    }

    /// Runs `f` on the connection in slot `idx` (if any).
    fn with_conn<R>(
        &mut self,
        core: &mut Core,
        idx: usize,
        f: impl FnOnce(&mut Connection, &mut Ctx<'_>) -> R,
    ) -> Option<R> {
        let slot = self.slots.get_mut(idx)?;
        let id = ConnectionId::new(idx, slot.generation);
        Some(core.with_conn(&mut slot.conn, id, f))
    }

    fn mark_dirty(&mut self, idx: usize) {
        if let Some(slot) = self.slots.get_mut(idx) {
            if !slot.dirty {
                slot.dirty = true;
                self.dirty.push(idx);
            }
        }
    }

    /// Bookkeeping after a connection changed: throttling, removal of closed
    /// connections, and rescheduling.
    fn settle(&mut self, core: &mut Core, idx: usize) {
        if self.remove_if_closed(idx) {
            return;
        }
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
        if slot.conn.is_throttled() && !slot.throttled {
            slot.throttled = true;
            self.throttled.push(idx);
        }
        let due = core.now.to_ms(slot.conn.next_deadline(core.now.kcp()));
        if due < slot.scheduled || slot.scheduled == u64::MAX {
            slot.scheduled = due;
            self.timers
                .push(Reverse(timer_entry(due, idx, slot.generation)));
        }
    }

    /// Removes the connection in slot `idx` if it has closed (so its address is free for a
    /// new handshake at once); whether it did.
    fn remove_if_closed(&mut self, idx: usize) -> bool {
        let Some(slot) = self.slots.get(idx) else {
            return false;
        };
        if slot.conn.state() != ConnectionState::Disconnected {
            return false;
        }
        let remote = slot.conn.remote();
        self.slots.remove(idx);
        self.by_addr.remove(&AddrKey(remote));
        // Stale timer entries and dirty-list entries are skipped by generation checks.
        true
    }

    /// Marks the connections that stopped taking messages for lack of event-queue room as
    /// dirty once there is room again, so their messages are taken and their window
    /// reopens now rather than at their next timer.
    fn retry_throttled(&mut self, core: &Core) {
        if self.throttled.is_empty()
            || core.events.pending_bytes() >= core.config.max_pending_event_bytes
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
    fn collect_due(&mut self, now_ms: u64) {
        while let Some(&Reverse(entry)) = self.timers.peek() {
            let (due, idx, generation) = timer_parts(entry);
            if due > now_ms {
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

    /// A datagram from an endpoint without a connection. Nothing is stored for it: a valid
    /// Hello gets the stateless reply, a reliable datagram whose cookie verifies creates the
    /// connection, anything else is dropped.
    fn on_stranger(&mut self, core: &mut Core, data: &[u8], from: SocketAddr) {
        let Ok(d) = Datagram::parse(data) else {
            trace!("dropping {} bytes from unknown {from}", data.len());
            core.stats.dropped_unknown += 1;
            return;
        };
        if d.channel == Channel::Reliable && is_handshake_reply(d.payload) {
            if let Some(accepted) = self.key.verify_ext(&from, d.cookie, core.now.ms) {
                self.admit(core, data, from, d.cookie, accepted);
                return;
            }
        }
        match parse_client_hello(data) {
            Some(hello) => {
                // The accepted extensions follow from this Hello alone and are bound into
                // the cookie, so admission recovers them without state.
                let accepted = if core.config.kcpnet_extensions {
                    hello.offered & Extensions::ALL
                } else {
                    Extensions::NONE
                };
                let cookie = self.key.current_with(&from, core.now.ms, accepted);
                let wnd = core.config.receive_window_size.min(u16::MAX as u32) as u16;
                let mut reply = [0u8; HELLO_REPLY_LEN];
                let n =
                    write_hello_reply(hello.ts, cookie, accepted, wnd, core.now.kcp(), &mut reply);
                trace!("stateless Hello reply to {from}");
                core.stats.hello_replies += 1;
                core.send_datagram(&reply[..n], from);
            }
            None => {
                trace!("dropping {} bytes from unknown {from}", data.len());
                core.stats.dropped_unknown += 1;
            }
        }
    }

    /// Creates the connection of a peer that proved it receives at `from` (its datagram
    /// carries the cookie of our stateless reply), and feeds it that datagram.
    fn admit(
        &mut self,
        core: &mut Core,
        data: &[u8],
        from: SocketAddr,
        cookie: u32,
        accepted: Extensions,
    ) {
        if self.slots.len() >= core.config.max_connections {
            debug!("dropping {from}: max_connections reached");
            core.stats.dropped_limit += 1;
            return;
        }
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let now = core.now.kcp();
        let (config, buffers, output) = core.shared_buffers();
        let conn = Connection::new_server_verified_with(
            from, cookie, accepted, config, now, buffers, output,
        );
        let idx = self.slots.insert(Slot {
            conn,
            generation,
            scheduled: u64::MAX,
            processed_at: u64::MAX,
            dirty: false,
            throttled: false,
        });
        self.by_addr.insert(AddrKey(from), idx);
        debug!("{from} proved its address (slot {idx})");
        self.with_conn(core, idx, |c, ctx| c.handle_datagram(ctx, data));
        if self.slots[idx].conn.is_established() {
            core.stats.connections_accepted += 1;
        }
        self.mark_dirty(idx);
        self.settle(core, idx);
    }
}

impl Peers for Table {
    fn on_datagram(&mut self, core: &mut Core, data: &[u8], from: SocketAddr) {
        if let Some(&idx) = self.by_addr.get(&AddrKey(from)) {
            let dropped_before = self.slots[idx].conn.datagrams_dropped();
            self.with_conn(core, idx, |c, ctx| c.handle_datagram(ctx, data));
            if self.slots[idx].conn.datagrams_dropped() != dropped_before {
                core.stats.dropped_invalid += 1;
            }
            // `after_receive` processes it and `flush` reschedules it (it stays dirty
            // until then); only a close must take effect before the next datagram.
            self.mark_dirty(idx);
            self.remove_if_closed(idx);
            return;
        }
        self.on_stranger(core, data, from);
    }

    fn after_receive(&mut self, core: &mut Core) {
        self.collect_due(core.now.ms);
        self.retry_throttled(core);
        for i in 0..self.dirty.len() {
            let idx = self.dirty[i];
            if self.with_conn(core, idx, |c, ctx| c.process(ctx)).is_none() {
                continue;
            }
            if self.remove_if_closed(idx) {
                continue;
            }
            let slot = &mut self.slots[idx];
            slot.processed_at = core.now.ms;
            if slot.conn.is_throttled() && !slot.throttled {
                slot.throttled = true;
                self.throttled.push(idx);
            }
            // Rescheduled by `flush`: it stays dirty until then.
        }
    }

    fn flush(&mut self, core: &mut Core) {
        self.collect_due(core.now.ms);
        let dirty = std::mem::take(&mut self.dirty);
        let now_ms = core.now.ms;
        for &idx in &dirty {
            let Some(slot) = self.slots.get_mut(idx) else {
                continue;
            };
            slot.dirty = false;
            // Processed by `after_receive` at this very ms and not held back: its timers and
            // messages are done, only its sends remain.
            let processed = slot.processed_at == now_ms && !slot.conn.is_throttled();
            slot.processed_at = u64::MAX;
            self.with_conn(core, idx, |c, ctx| {
                if !processed {
                    c.process(ctx);
                }
                c.flush(ctx);
            });
            self.settle(core, idx);
        }
        self.dirty = dirty;
        self.dirty.clear();
    }
}

impl Table {
    /// The earliest scheduler time (ms) at which a connection needs a tick (0: at once,
    /// sends wait to be flushed); `None` if nothing is scheduled.
    fn next_due_ms(&self) -> Option<u64> {
        if !self.dirty.is_empty() {
            return Some(0);
        }
        self.timers
            .peek()
            .map(|&Reverse(entry)| timer_parts(entry).0)
    }
}

/// A kcp2k-compatible server. See the crate docs for a complete loop.
///
/// Each frame the application calls [`Server::tick_incoming`] (read every pending datagram,
/// run the timers of the connections that are due), handles events
/// ([`Server::drain_events`], [`Server::poll_event`] or [`Server::tick_incoming_with`]),
/// sends, then calls [`Server::tick_outgoing`] (flush), and waits for the next frame or for
/// work with [`Server::wait`]. Nothing else blocks and no thread is started.
///
/// Connections are kept in a slab and found by remote address; only those with traffic or
/// a due timer are touched in a tick, so thousands of idle connections cost almost nothing.
/// `Server` is `Send + Sync`: an engine can keep it as an ordinary resource.
pub struct Server {
    core: Core,
    table: Table,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.core.transport.local_addr().ok())
            .field("connections", &self.table.slots.len())
            .finish()
    }
}

/// The first address `addr` resolves to, or [`Error::DnsResolve`].
pub(crate) fn first_addr(addr: impl ToSocketAddrs) -> Result<SocketAddr, Error> {
    addr.to_socket_addrs()
        .map_err(|e| Error::DnsResolve(e.to_string()))?
        .next()
        .ok_or_else(|| Error::DnsResolve("no addresses".into()))
}

impl Server {
    /// Binds a UDP server socket at `addr`: anything [`ToSocketAddrs`] takes, such as
    /// `"[::]:7777"`, `"0.0.0.0:7777"`, `("::", 7777)` or a [`SocketAddr`] (the first
    /// address it resolves to is used).
    ///
    /// With `config.dual_mode` an IPv6 wildcard address also accepts IPv4 peers. The socket is
    /// wrapped in a [`LinkConditioner`] with perfect conditions, so
    /// [`Server::set_conditions`] works at run time.
    pub fn bind(addr: impl ToSocketAddrs, config: Config) -> Result<Server, Error> {
        config.validate()?;
        let addr = first_addr(addr)?;
        let udp = UdpTransport::bind(addr, &socket_options(&config, true))?;
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
        Ok(Server {
            core: Core::new(transport, clock, config)?,
            table: Table {
                slots: Slab::new(),
                by_addr: HashMap::new(),
                next_generation: 1,
                timers: BinaryHeap::new(),
                dirty: Vec::new(),
                throttled: Vec::new(),
                key: CookieKey::new(OsRng.gen(), OsRng.gen()),
            },
        })
    }

    /// Makes cookies deterministic, for reproducible tests and replays only: cookies then no
    /// longer protect against spoofing. By default the cookie key comes from the OS's
    /// cryptographically secure generator (see `docs/PROTOCOL.md`, stateless handshake).
    pub fn seed_cookies_for_testing(&mut self, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        self.table.key = CookieKey::new(rng.gen(), rng.gen());
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        Ok(self.core.transport.local_addr()?)
    }

    /// Sets link conditions (loss, latency, ...) for all peers, in one direction or both.
    /// Fails if the transport has no conditioner (see [`Server::with_transport`]).
    pub fn set_conditions(
        &mut self,
        direction: Direction,
        conditions: Conditions,
    ) -> Result<(), Error> {
        self.core.set_conditions(direction, conditions)
    }

    /// The link conditioner of this server's transport, for everything beyond
    /// `set_conditions`: per-peer conditions, statistics, reseeding. `None` if the transport
    /// given to `with_transport` is not a conditioner.
    pub fn conditioner(&mut self) -> Option<&mut dyn ConditionerControl> {
        self.core.transport.conditioner()
    }

    /// Sets link conditions for one peer address, overriding the global ones.
    pub fn set_peer_conditions(
        &mut self,
        peer: SocketAddr,
        direction: Direction,
        conditions: Conditions,
    ) -> Result<(), Error> {
        self.core.set_peer_conditions(peer, direction, conditions)
    }

    // ------------------------------------------------------------------ ticks

    /// Reads every pending datagram (up to `max_datagrams_per_tick`), runs the timers of the
    /// connections that are due and takes their complete messages out of KCP. Events are
    /// then ready in [`Server::drain_events`] / [`Server::poll_event`].
    pub fn tick_incoming(&mut self) {
        self.core.tick_incoming(&mut self.table);
    }

    /// Flushes the connections that have something to send (new messages, ACKs, due
    /// retransmissions, pings) and completes graceful disconnects.
    pub fn tick_outgoing(&mut self) {
        self.core.tick_outgoing(&mut self.table);
    }

    /// Blocks until a datagram may have arrived, the next timer of a connection (or of the
    /// link conditioner) is due, or `max` passed — whichever comes first — so a headless
    /// server sleeps in the OS poller instead of spinning or sleeping a fixed time. Returns
    /// at once when events are waiting or work is already due. Over the in-memory network
    /// (virtual time) it returns at once.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use kcpnet::{Config, Server};
    /// let mut server = Server::bind("[::]:7777", Config::default())?;
    /// loop {
    ///     server.tick_incoming();
    ///     // ... handle events, send ...
    ///     server.tick_outgoing();
    ///     server.wait(Duration::from_millis(16))?; // at most one 60 Hz frame
    /// }
    /// # Ok::<(), kcpnet::Error>(())
    /// ```
    pub fn wait(&mut self, max: Duration) -> Result<(), Error> {
        let delay = self.poll_delay();
        self.core.wait(delay, max)
    }

    /// How long until the server needs a tick: its earliest connection timer or delayed
    /// datagram, `Some(ZERO)` if work is already due (events waiting, sends to flush), and
    /// `None` if nothing is scheduled at all. Never a time in the past. Datagram arrival is
    /// not predicted: [`Server::wait`] also wakes for that.
    pub fn poll_delay(&self) -> Option<Duration> {
        self.core.poll_delay(self.table.next_due_ms())
    }

    /// [`Server::tick_incoming`], then hands every event to `handler` together with a
    /// [`ServerCtx`] through which it can send, disconnect and query at once (as kcp2k's
    /// `OnData`). Message bytes are borrowed; nothing is allocated per message.
    pub fn tick_incoming_with<F>(&mut self, handler: F)
    where
        F: FnMut(&mut ServerCtx<'_>, Event<'_>),
    {
        self.tick_incoming();
        Core::dispatch(ServerCtx { server: self }, handler);
    }

    /// The queued events, each handed out with a [`ServerCtx`] so the application can reply
    /// while it holds the event, without copying the message (see [`EventDrain`]).
    pub fn drain_events(&mut self) -> EventDrain<ServerCtx<'_>> {
        EventDrain::new(ServerCtx { server: self })
    }

    /// The next event, if any. Message data borrows the server until the next call; to
    /// reply while holding an event use [`Server::drain_events`].
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        self.core.events.pop()
    }

    /// Events waiting in the queue.
    pub fn pending_events(&self) -> usize {
        self.core.events.len()
    }

    // ---------------------------------------------------------- app requests

    /// Sends a message to a connected peer. Reliable messages go out at the next
    /// [`Server::tick_outgoing`]; unreliable ones at once.
    ///
    /// Errors, none of which closes the connection: [`Error::SendQueueFull`] when the
    /// connection already holds `send_queue_limit` bytes of reliable data (backpressure: see
    /// [`Server::send_capacity`]), [`Error::ConnectionClosed`] when the
    /// connection has ended (possibly in this very tick: its `Disconnected` event is queued;
    /// not a mistake of the application), [`Error::UnknownConnection`], [`Error::NotConnected`]
    /// (handshake not complete or disconnecting), [`Error::EmptyMessage`],
    /// [`Error::MessageTooLarge`].
    pub fn send(&mut self, id: ConnectionId, data: &[u8], channel: Channel) -> Result<(), Error> {
        let idx = self.table.index_of(id)?;
        let result = self
            .table
            .with_conn(&mut self.core, idx, |c, ctx| c.send(ctx, data, channel))
            .unwrap_or(Err(Error::ConnectionClosed));
        if result.is_ok() && channel == Channel::Reliable {
            self.table.mark_dirty(idx);
        }
        result
    }

    /// Closes a connection at once (kcp2k's `Disconnect`: five unreliable Disconnect
    /// datagrams; queued reliable data is dropped). A `Disconnected { reason: Local }` event
    /// follows, and undelivered data events of this connection are discarded.
    pub fn disconnect(&mut self, id: ConnectionId) -> Result<(), Error> {
        let idx = self.table.index_of(id)?;
        self.table.with_conn(&mut self.core, idx, |c, ctx| {
            c.close(ctx, DisconnectReason::Local, None, true)
        });
        self.core.closed_by_app(id);
        self.table.settle(&mut self.core, idx);
        Ok(())
    }

    /// Closes a connection after its queued reliable data has been acknowledged (or
    /// `linger_timeout_ms` passed). Sending stops at once; received messages are still
    /// delivered until the `Disconnected` event.
    pub fn disconnect_graceful(&mut self, id: ConnectionId) -> Result<(), Error> {
        let idx = self.table.index_of(id)?;
        self.table
            .with_conn(&mut self.core, idx, |c, ctx| c.disconnect_graceful(ctx));
        self.table.mark_dirty(idx);
        self.table.settle(&mut self.core, idx);
        Ok(())
    }

    /// Closes a connection at once, as [`Server::disconnect`], telling a kcpnet peer why:
    /// it receives `Disconnected { reason: DisconnectReason::App { code, message } }` (the
    /// reason travels in each of the five close datagrams, so it survives loss as well as a
    /// plain Disconnect). A kcp2k peer gets the plain Disconnect. `message` may have at most
    /// [`crate::CloseMessage::MAX_LEN`] (128) bytes — fewer with an `mtu` below 140:
    /// `mtu - 12` — or the call fails with [`Error::ReasonTooLong`] and nothing happens.
    /// See the crate docs for a complete example.
    pub fn disconnect_with(
        &mut self,
        id: ConnectionId,
        code: u32,
        message: &str,
    ) -> Result<(), Error> {
        let idx = self.table.index_of(id)?;
        self.table
            .with_conn(&mut self.core, idx, |c, ctx| {
                c.disconnect_with(ctx, code, message, false)
            })
            .unwrap_or(Err(Error::ConnectionClosed))?;
        self.core.closed_by_app(id);
        self.table.settle(&mut self.core, idx);
        Ok(())
    }

    /// [`Server::disconnect_graceful`] with a reason, as [`Server::disconnect_with`]: the
    /// peer receives everything queued, then `DisconnectReason::App { code, message }`.
    pub fn disconnect_graceful_with(
        &mut self,
        id: ConnectionId,
        code: u32,
        message: &str,
    ) -> Result<(), Error> {
        let idx = self.table.index_of(id)?;
        self.table
            .with_conn(&mut self.core, idx, |c, ctx| {
                c.disconnect_with(ctx, code, message, true)
            })
            .unwrap_or(Err(Error::ConnectionClosed))?;
        self.table.mark_dirty(idx);
        self.table.settle(&mut self.core, idx);
        Ok(())
    }

    /// Half-closes a connection: this side sends nothing more ([`Server::send`] fails with
    /// [`Error::SendClosed`]) but everything already queued is delivered, the peer is told
    /// after the last message and reports [`Event::PeerSendClosed`], and its messages keep
    /// arriving until it shuts down its sending too. Then the connection ends with one
    /// `Disconnected { reason: Finished }` on each side. The state is
    /// [`ConnectionState::SendClosed`] meanwhile ([`ConnectionState::PeerSendClosed`] on the
    /// peer). Needs a kcpnet peer (the half-close extension); with a kcp2k peer it is
    /// [`Server::disconnect_graceful`]. Calling it again is a no-op.
    pub fn shutdown_send(&mut self, id: ConnectionId) -> Result<(), Error> {
        let idx = self.table.index_of(id)?;
        self.table
            .with_conn(&mut self.core, idx, |c, ctx| c.shutdown_send(ctx))
            .unwrap_or(Err(Error::ConnectionClosed))?;
        self.table.mark_dirty(idx);
        self.table.settle(&mut self.core, idx);
        Ok(())
    }

    /// Closes every connection (hard disconnect, Disconnect datagrams sent), reporting
    /// `Disconnected` for each connected one.
    pub fn shutdown(&mut self) {
        self.core.refresh_now();
        let indices: Vec<usize> = self.table.slots.iter().map(|(i, _)| i).collect();
        for idx in indices {
            self.table.with_conn(&mut self.core, idx, |c, ctx| {
                c.close(ctx, DisconnectReason::Closed, None, true)
            });
            self.table.settle(&mut self.core, idx);
        }
        self.core.poll_transport();
    }

    // --------------------------------------------------------------- queries

    /// Connections in the table: every one completed the handshake (nothing is stored for
    /// a peer before it proves its address), including those closing gracefully.
    pub fn connection_count(&self) -> usize {
        self.table.slots.len()
    }

    /// Ids of the connected peers.
    pub fn connections(&self) -> impl Iterator<Item = ConnectionId> + '_ {
        self.table
            .slots
            .iter()
            .filter(|(_, s)| s.conn.is_established())
            .map(|(i, s)| ConnectionId::new(i, s.generation))
    }

    /// The peer's address (IPv4-mapped IPv6 addresses are reported as IPv4).
    pub fn remote_addr(&self, id: ConnectionId) -> Option<SocketAddr> {
        self.table.slot(id).map(|s| s.conn.remote())
    }

    /// The connection's state.
    pub fn state(&self, id: ConnectionId) -> Option<ConnectionState> {
        self.table.slot(id).map(|s| s.conn.state())
    }

    /// True while the connection is connected (handshake done, not closing, neither side
    /// half-closed: see [`Server::state`] for [`ConnectionState::SendClosed`] and
    /// [`ConnectionState::PeerSendClosed`]).
    pub fn is_connected(&self, id: ConnectionId) -> bool {
        self.state(id) == Some(ConnectionState::Connected)
    }

    /// Round-trip time in ms (`None` until measured): from the server's Ping/Pong, or, while
    /// the client pings (the server then sends no Ping of its own), from the client's ACK
    /// of the server's latest Pong ([`ConnectionQuality::ping_rtt_ms`]).
    pub fn rtt(&self, id: ConnectionId) -> Option<u32> {
        self.table.slot(id).and_then(|s| s.conn.rtt())
    }

    /// Statistics of one connection, its [`ConnectionQuality`] included (as of the last
    /// tick).
    pub fn connection_stats(&self, id: ConnectionId) -> Option<ConnectionStats> {
        let now = self.core.now.kcp();
        self.table.slot(id).map(|s| s.conn.stats_at(now))
    }

    /// How good a connection's link is (as of the last tick): KCP and Ping RTTs, windowed
    /// loss and rates, pending reliable data.
    ///
    /// ```
    /// # fn show(server: &kcpnet::Server, id: kcpnet::ConnectionId) {
    /// if let Some(q) = server.connection_quality(id) {
    ///     println!(
    ///         "rtt {} ms, loss {:.1}%, {:.0} B/s out, {} B pending",
    ///         q.kcp_rtt_ms,
    ///         q.loss * 100.0,
    ///         q.bytes_out_per_sec,
    ///         q.pending_reliable_bytes
    ///     );
    /// }
    /// # }
    /// ```
    pub fn connection_quality(&self, id: ConnectionId) -> Option<ConnectionQuality> {
        let now = self.core.now.kcp();
        self.table.slot(id).map(|s| s.conn.quality(now))
    }

    /// The kcpnet extensions a connection negotiated: [`Extensions::ALL`] with a kcpnet
    /// peer of this version, [`Extensions::NONE`] with a kcp2k peer.
    pub fn extensions(&self, id: ConnectionId) -> Option<Extensions> {
        self.table.slot(id).map(|s| s.conn.extensions())
    }

    /// KCP segments queued or in flight on a connection: a measure of send backlog.
    pub fn send_backlog(&self, id: ConnectionId) -> Option<usize> {
        self.table.slot(id).map(|s| s.conn.wait_snd())
    }

    /// Bytes of reliable data the application can still queue on a connection before
    /// [`Server::send`] fails with [`Error::SendQueueFull`] (backpressure): a send is
    /// accepted while this is positive. `None` for an unknown or closed id; 0 while not
    /// connected.
    pub fn send_capacity(&self, id: ConnectionId) -> Option<usize> {
        self.table.slot(id).map(|s| s.conn.send_capacity())
    }

    /// Bytes of memory one connection holds (its state plus its buffers).
    pub fn connection_memory(&self, id: ConnectionId) -> Option<usize> {
        // The slot holds the connection inline; add what it points to.
        self.table
            .slot(id)
            .map(|s| s.conn.heap_bytes() + std::mem::size_of::<Slot>())
    }

    /// The most memory one connection can hold with this server's config, whatever its peer
    /// sends (the bound of `docs/PROTOCOL.md`, "Memory per connection"):
    /// [`Server::connection_memory`] never exceeds it.
    pub fn connection_memory_bound(&self) -> usize {
        let nowhere = SocketAddr::from(([0, 0, 0, 0], 0));
        let probe = Connection::new_server_verified(nowhere, 1, &self.core.config, 0);
        probe.memory_bound() - std::mem::size_of::<Connection>() + std::mem::size_of::<Slot>()
    }

    /// Endpoint-wide counters.
    pub fn stats(&self) -> EndpointStats {
        EndpointStats {
            connections: self.table.slots.len(),
            shared_buffer_bytes: self.core.shared_buffer_bytes(),
            ..self.core.stats
        }
    }

    /// Sends `data` on `channel` to every connected peer (those [`Server::connections`]
    /// lists); returns how many accepted it. A peer that refuses (see [`Server::send`]
    /// for why) is skipped and its connection is left as it was.
    pub fn broadcast(&mut self, data: &[u8], channel: Channel) -> usize {
        let ids: Vec<ConnectionId> = self.connections().collect();
        self.send_each(&ids, data, channel)
    }

    /// Sends `data` on `channel` to each connection in `ids`; returns how many accepted it.
    /// Ids that are unknown, closed or refuse the message (see [`Server::send`]) are
    /// skipped.
    pub fn send_each(&mut self, ids: &[ConnectionId], data: &[u8], channel: Channel) -> usize {
        ids.iter()
            .filter(|&&id| self.send(id, data, channel).is_ok())
            .count()
    }
}

/// The server as seen while handling an event ([`Server::tick_incoming_with`],
/// [`Server::drain_events`]): everything a [`Server`] offers is available through it
/// (it dereferences to the server) — send, disconnect, queries — and data events of a
/// connection the handler disconnects are discarded from the rest of the dispatch.
pub struct ServerCtx<'a> {
    server: &'a mut Server,
}

crate::driver::drain::endpoint_context!(ServerCtx, Server, server);
