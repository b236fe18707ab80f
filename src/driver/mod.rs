//! The driver core shared by [`crate::Server`] and [`crate::Client`].
//!
//! A datagram's path from the socket to an event reads top to bottom here:
//! [`Core::tick_incoming`] reads the socket and hands each datagram to the driver's
//! [`Peers`] (the server's connection table, or the client's one connection), which finds
//! the [`Connection`] and runs it through [`Core::with_conn`]; the connection parses the
//! datagram, feeds KCP, and pushes events into [`Core::events`]; the application takes them
//! with `poll_event`, an [`EventDrain`] or a callback. What differs between the drivers is
//! only the [`Peers`] implementation.

use std::net::SocketAddr;
use std::time::Duration;

use log::{debug, warn};

use crate::config::Config;
use crate::connection::{Connection, Ctx, Tx};
use crate::error::Error;
use crate::event::{ConnectionId, Event, EventQueue};
use crate::io::{
    Clock, ConditionerHandle, Conditions, Direction, PollReport, SocketOptions, Transport,
};
use crate::stats::EndpointStats;

pub(crate) mod drain;

pub(crate) use drain::Endpoint;
pub use drain::EventDrain;

/// Datagram output of a driver: writes to its transport and counts.
pub(crate) struct TransportTx<'a> {
    pub transport: &'a mut dyn Transport,
    pub now: Duration,
    pub stats: &'a mut EndpointStats,
    /// Where `head ++ body` is assembled when both are present.
    pub scratch: &'a mut Vec<u8>,
}

impl Tx for TransportTx<'_> {
    fn send(&mut self, head: &[u8], body: &[u8], to: SocketAddr) -> bool {
        let data: &[u8] = if body.is_empty() {
            head
        } else {
            self.scratch.clear();
            self.scratch.extend_from_slice(head);
            self.scratch.extend_from_slice(body);
            self.scratch
        };
        match self.transport.send_to(data, to, self.now) {
            Ok(true) => {
                self.stats.datagrams_sent += 1;
                self.stats.bytes_sent += data.len() as u64;
                true
            }
            Ok(false) => {
                self.stats.send_errors += 1;
                false
            }
            Err(e) => {
                debug!("send to {to} failed: {e}");
                self.stats.send_errors += 1;
                false
            }
        }
    }
}

/// The driver clock in the forms the layers need: a `Duration` for the transports,
/// milliseconds as `u64` for scheduling, and the wrapping `u32` KCP clock.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Now {
    pub at: Duration,
    pub ms: u64,
}

impl Now {
    pub(crate) fn read(clock: &dyn Clock) -> Now {
        let at = clock.now();
        Now {
            at,
            ms: at.as_millis() as u64,
        }
    }

    /// The KCP clock: milliseconds, wrapping at 2^32.
    pub(crate) fn kcp(self) -> u32 {
        self.ms as u32
    }

    /// Converts an absolute KCP time at or after `self` to scheduler milliseconds.
    pub(crate) fn to_ms(self, kcp_time: u32) -> u64 {
        self.ms + crate::kcp::time_diff(kcp_time, self.kcp()).max(0) as u64
    }
}

/// The receive buffer size: the largest UDP payload. Datagrams larger than our MTU are
/// read whole, so a peer with a larger MTU shows up as a clear error naming both MTUs
/// rather than as silent truncation.
pub(crate) const RECV_BUFFER_LEN: usize = 65_536;

/// The socket options a driver's UDP socket gets from its config (`server`: dual mode and
/// `SO_REUSEPORT` apply).
pub(crate) fn socket_options(config: &Config, server: bool) -> SocketOptions {
    SocketOptions {
        dual_mode: server && config.dual_mode,
        recv_buffer_size: config.recv_buffer_size,
        send_buffer_size: config.send_buffer_size,
        batch: config.batch_socket_io,
        gso: config.udp_offload && SocketOptions::default().gso,
        gro: config.udp_offload && SocketOptions::default().gro,
        dscp: config.dscp,
        reuse_port: server && config.reuse_port,
    }
}

/// What differs between the drivers: how a datagram finds its connection, and which
/// connections a tick touches.
pub(crate) trait Peers {
    /// One datagram read from the socket (already counted in the endpoint stats).
    fn on_datagram(&mut self, core: &mut Core, data: &[u8], from: SocketAddr);
    /// The transport reported the peer unreachable (ICMP port unreachable).
    fn on_connection_refused(&mut self, core: &mut Core) {
        let _ = core;
    }
    /// After the receive loop: run the connections that are due or got datagrams, so
    /// their complete messages become events.
    fn after_receive(&mut self, core: &mut Core);
    /// Flush the connections that have something to send.
    fn flush(&mut self, core: &mut Core);
}

/// What both drivers own: the transport, the clock, the event queue and the scratch
/// buffers.
pub(crate) struct Core {
    pub transport: Box<dyn Transport>,
    /// The handle of the link conditioner around the transport, if the driver was given
    /// one (`bind`/`connect` always are): what `set_conditions` and `conditioner()` use.
    pub conditioner: Option<ConditionerHandle>,
    /// A poll reported a peer unreachable; handed to the peers after the next receive loop.
    connection_refused: bool,
    pub clock: Box<dyn Clock>,
    pub config: Config,
    pub events: EventQueue,
    /// Event drains currently open (an [`EventDrain`] or a callback dispatch).
    pub dispatching: u32,
    /// Connections the application closed while a drain was open: their data events
    /// still in the drain's queue are discarded.
    pub closed_in_dispatch: Vec<ConnectionId>,
    recv_buf: Vec<u8>,
    send_buf: Vec<u8>,
    /// Free KCP payload buffers shared by every connection: lent whole to a connection for
    /// each call (its KCP's pool, capped by the KCP pool limit: the windows' worth), so an
    /// idle connection holds none.
    buffers: Vec<Vec<u8>>,
    /// KCP's output buffer, shared: lent to a connection for each call.
    output: Vec<u8>,
    pub stats: EndpointStats,
    pub now: Now,
}

impl Core {
    pub(crate) fn new(
        transport: Box<dyn Transport>,
        clock: Box<dyn Clock>,
        config: Config,
    ) -> Result<Core, Error> {
        config.validate()?;
        let now = Now::read(clock.as_ref());
        Ok(Core {
            transport,
            conditioner: None,
            connection_refused: false,
            clock,
            config,
            events: EventQueue::default(),
            dispatching: 0,
            closed_in_dispatch: Vec::new(),
            recv_buf: vec![0; RECV_BUFFER_LEN],
            send_buf: Vec::new(),
            buffers: Vec::new(),
            output: Vec::new(),
            stats: EndpointStats::default(),
            now,
        })
    }

    /// Reads the clock.
    pub(crate) fn refresh_now(&mut self) {
        self.now = Now::read(self.clock.as_ref());
    }

    /// Releases what the transport holds back (delayed or batched datagrams), accounts
    /// for datagrams dropped after `send_to` had accepted them, and notes an unreachable
    /// peer for the next receive loop.
    pub(crate) fn poll_transport(&mut self) {
        let report = self.transport.poll(self.now.at).unwrap_or_else(|e| {
            debug!("transport poll failed: {e}");
            PollReport::default()
        });
        self.connection_refused |= report.connection_refused;
        let dropped = report.send_drops;
        if dropped > 0 {
            self.stats.send_errors += dropped;
            self.stats.datagrams_sent = self.stats.datagrams_sent.saturating_sub(dropped);
        }
    }

    /// Reads every pending datagram (up to `max_datagrams_per_tick`) into `peers`, then
    /// lets them run their due connections.
    pub(crate) fn tick_incoming(&mut self, peers: &mut impl Peers) {
        self.refresh_now();
        self.poll_transport();
        let mut buf = std::mem::take(&mut self.recv_buf);
        for _ in 0..self.config.max_datagrams_per_tick {
            match self.transport.recv_from(&mut buf, self.now.at) {
                Ok(Some((len, from))) => {
                    self.stats.datagrams_received += 1;
                    self.stats.bytes_received += len as u64;
                    peers.on_datagram(self, &buf[..len], from);
                }
                Ok(None) => break,
                Err(e) => {
                    warn!("socket receive failed: {e}");
                    break;
                }
            }
        }
        self.recv_buf = buf;
        if std::mem::take(&mut self.connection_refused) {
            peers.on_connection_refused(self);
        }
        peers.after_receive(self);
    }

    /// Flushes `peers`, then releases what the transport holds back.
    pub(crate) fn tick_outgoing(&mut self, peers: &mut impl Peers) {
        self.refresh_now();
        peers.flush(self);
        self.poll_transport();
    }

    /// Runs `f` on `conn` with a context borrowing this core's event queue and transport,
    /// lending it the shared output buffer and the shared pool of payload buffers for the
    /// call (both O(1) swaps).
    pub(crate) fn with_conn<R>(
        &mut self,
        conn: &mut Connection,
        id: ConnectionId,
        f: impl FnOnce(&mut Connection, &mut Ctx<'_>) -> R,
    ) -> R {
        conn.lend_buffers(&mut self.buffers);
        conn.swap_output_buffer(&mut self.output);
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
        let r = f(conn, &mut ctx);
        conn.swap_output_buffer(&mut self.output);
        conn.reclaim_buffers(&mut self.buffers);
        r
    }

    /// Heap bytes of the shared payload-buffer pool and output buffer.
    pub(crate) fn shared_buffer_bytes(&self) -> usize {
        self.buffers.capacity() * std::mem::size_of::<Vec<u8>>()
            + self.buffers.iter().map(Vec::capacity).sum::<usize>()
            + self.output.capacity()
    }

    /// The config, the shared pool of free payload buffers and the shared output buffer,
    /// for a connection being created (outside [`Core::with_conn`]).
    pub(crate) fn shared_buffers(&mut self) -> (&Config, &mut Vec<Vec<u8>>, &mut Vec<u8>) {
        (&self.config, &mut self.buffers, &mut self.output)
    }

    /// Sends one datagram that belongs to no connection (the server's stateless replies).
    pub(crate) fn send_datagram(&mut self, data: &[u8], to: SocketAddr) -> bool {
        let mut tx = TransportTx {
            transport: self.transport.as_mut(),
            now: self.now.at,
            stats: &mut self.stats,
            scratch: &mut self.send_buf,
        };
        tx.send(data, &[], to)
    }

    /// Notes that the application closed `id` (its queued data events are discarded).
    pub(crate) fn closed_by_app(&mut self, id: ConnectionId) {
        self.events.cancel_data(id);
        if self.dispatching > 0 {
            self.closed_in_dispatch.push(id);
        }
    }

    /// How long until the connections (earliest due time `next_due_ms`, scheduler ms; `None`
    /// if nothing is scheduled) or the transport need a tick, from a fresh clock reading;
    /// `Some(ZERO)` when events wait in the queue. Never a time in the past.
    pub(crate) fn poll_delay(&self, next_due_ms: Option<u64>) -> Option<Duration> {
        if !self.events.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = self.clock.now();
        let timer = next_due_ms.map(|ms| Duration::from_millis(ms).saturating_sub(now));
        let transport = self
            .transport
            .next_wakeup()
            .map(|at| at.saturating_sub(now));
        match (timer, transport) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Blocks in the transport until a datagram may be readable, `delay` (the endpoint's
    /// [`Core::poll_delay`]) or `max` passed.
    pub(crate) fn wait(&mut self, delay: Option<Duration>, max: Duration) -> Result<(), Error> {
        let delay = match delay {
            Some(d) => d.min(max),
            None => max,
        };
        if delay.is_zero() {
            return Ok(());
        }
        self.transport.wait(delay)?;
        Ok(())
    }

    /// Hands every queued event to `handler` together with the endpoint.
    pub(crate) fn dispatch<E: Endpoint>(endpoint: E, mut handler: impl FnMut(&mut E, Event<'_>)) {
        let mut drain = EventDrain::new(endpoint);
        while let Some((event, endpoint)) = drain.next() {
            handler(endpoint, event);
        }
    }

    // ------------------------------------------------------- conditioner access

    /// The link conditioner's handle, or the error `set_conditions` reports without one.
    pub(crate) fn require_conditioner(&self) -> Result<&ConditionerHandle, Error> {
        self.conditioner.as_ref().ok_or_else(|| {
            Error::InvalidArgument(
                "no link conditioner: this endpoint was made by with_transport \
                     (use bind/connect or with_conditioned_transport)"
                    .into(),
            )
        })
    }

    pub(crate) fn set_conditions(
        &mut self,
        direction: Direction,
        conditions: Conditions,
    ) -> Result<(), Error> {
        self.require_conditioner()?
            .set_conditions(direction, conditions)
    }

    pub(crate) fn set_peer_conditions(
        &mut self,
        peer: SocketAddr,
        direction: Direction,
        conditions: Conditions,
    ) -> Result<(), Error> {
        self.require_conditioner()?
            .set_peer_conditions(peer, direction, conditions)
    }
}
