//! The client driver: one connection to one server, driven from the game loop.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use log::{debug, trace, warn};

use crate::config::Config;
use crate::connection::{Connection, ConnectionState, Ctx};
use crate::driver::{require_conditioner, Now, TransportTx, RECV_BUFFER_LEN};
use crate::error::{Error, ErrorCode};
use crate::event::{ConnectionId, DisconnectReason, Event, EventQueue};
use crate::io::{
    Clock, ConditionerControl, Conditions, Direction, LinkConditioner, SocketOptions, SystemClock,
    Transport, UdpTransport,
};
use crate::stats::{ConnectionStats, EndpointStats};
use crate::wire::datagram::Channel;

/// A kcp2k-compatible client: one connection attempt to one server.
///
/// The handshake starts at the first [`Client::tick_outgoing`]. Every attempt ends with
/// exactly one [`Event::Disconnected`], preceded by [`Event::Connected`] if the handshake
/// completed. To reconnect, create a new `Client`.
pub struct Client {
    transport: Box<dyn Transport>,
    clock: Box<dyn Clock>,
    config: Config,
    conn: Connection,
    id: ConnectionId,
    events: EventQueue,
    closed_in_dispatch: bool,
    recv_buf: Vec<u8>,
    send_buf: Vec<u8>,
    stats: EndpointStats,
    now: Now,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("remote", &self.conn.remote())
            .field("state", &self.conn.state())
            .finish()
    }
}

impl Client {
    /// Resolves `host` (a name or an address) and starts connecting to `host:port` over a
    /// new UDP socket. A name that does not resolve gives [`Error::DnsResolve`], whose
    /// [`Error::code`] is [`ErrorCode::DnsResolve`].
    pub fn connect(host: &str, port: u16, config: Config) -> Result<Client, Error> {
        config.validate()?;
        let remote = resolve(host, port)?;
        let opts = SocketOptions {
            dual_mode: false,
            recv_buffer_size: config.recv_buffer_size,
            send_buffer_size: config.send_buffer_size,
            ..SocketOptions::default()
        };
        let mut udp = UdpTransport::bind_any_for(remote, &opts)?;
        // The OS reports the server's ICMP "port unreachable" only on a connected socket
        // (Linux, BSD), so connect: an attempt at a closed port then ends at once instead
        // of at the handshake timeout. It also filters datagrams from other sources.
        udp.connect(remote)?;
        let conditioner = LinkConditioner::new(udp, rand::random());
        Client::with_transport(
            Box::new(conditioner),
            Box::new(SystemClock::new()),
            remote,
            config,
        )
    }

    /// A client over any [`Transport`] and [`Clock`] (an in-memory network and a virtual
    /// clock in tests), connecting to `remote`.
    pub fn with_transport(
        transport: Box<dyn Transport>,
        clock: Box<dyn Clock>,
        remote: SocketAddr,
        config: Config,
    ) -> Result<Client, Error> {
        config.validate()?;
        let now = Now::read(clock.as_ref());
        let conn = Connection::new_client(remote, &config, now.kcp());
        Ok(Client {
            transport,
            clock,
            config,
            conn,
            id: ConnectionId::new(0, 1),
            events: EventQueue::default(),
            closed_in_dispatch: false,
            recv_buf: vec![0; RECV_BUFFER_LEN],
            send_buf: Vec::new(),
            stats: EndpointStats::default(),
            now,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The id used in this client's events.
    pub fn id(&self) -> ConnectionId {
        self.id
    }

    /// The local socket address.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        Ok(self.transport.local_addr()?)
    }

    /// The server's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.conn.remote()
    }

    /// The connection state.
    pub fn state(&self) -> ConnectionState {
        self.conn.state()
    }

    /// True once the handshake completed and until the connection closes.
    pub fn is_connected(&self) -> bool {
        self.conn.state() == ConnectionState::Connected
    }

    /// Round-trip time from kcp2k Ping/Pong, in ms (`None` until measured).
    pub fn rtt(&self) -> Option<u32> {
        self.conn.rtt()
    }

    /// Statistics of the connection.
    pub fn connection_stats(&self) -> ConnectionStats {
        self.conn.stats()
    }

    /// Endpoint counters (datagrams, bytes, drops).
    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// KCP segments queued or in flight: a measure of send backlog.
    pub fn send_backlog(&self) -> usize {
        self.conn.wait_snd()
    }

    /// Sets link conditions on this client's transport (see [`Client::connect`]).
    pub fn set_conditions(
        &mut self,
        direction: Direction,
        conditions: Conditions,
    ) -> Result<(), Error> {
        require_conditioner(self.transport.as_mut())?.set_conditions(direction, conditions)
    }

    /// The link conditioner of this client's transport, for everything beyond
    /// `set_conditions`: per-peer conditions, statistics, reseeding. `None` if the transport
    /// given to `with_transport` is not a conditioner.
    pub fn conditioner(&mut self) -> Option<&mut dyn ConditionerControl> {
        self.transport.conditioner()
    }

    /// When the client next needs a tick, as a clock reading.
    pub fn next_wakeup(&self) -> Option<Duration> {
        let conn = Duration::from_millis(self.now.to_ms(self.conn.next_deadline(self.now.kcp())));
        Some(match self.transport.next_wakeup() {
            Some(t) => t.min(conn),
            None => conn,
        })
    }

    // ------------------------------------------------------------------ ticks

    /// Reads every pending datagram, runs the connection's timers and takes its complete
    /// messages out of KCP. Events are then ready in [`Client::poll_event`].
    pub fn tick_incoming(&mut self) {
        self.now = Now::read(self.clock.as_ref());
        if let Err(e) = self.transport.poll(self.now.at) {
            debug!("transport poll failed: {e}");
        }
        let mut buf = std::mem::take(&mut self.recv_buf);
        for _ in 0..self.config.max_datagrams_per_tick {
            match self.transport.recv_from(&mut buf, self.now.at) {
                Ok(Some((len, from))) => {
                    self.stats.datagrams_received += 1;
                    self.stats.bytes_received += len as u64;
                    if from != self.conn.remote() {
                        trace!("dropping {len} bytes from {from}: not our server");
                        self.stats.dropped_unknown += 1;
                        continue;
                    }
                    let data = &buf[..len];
                    self.with_conn(|c, ctx| c.handle_datagram(ctx, data));
                }
                Ok(None) => break,
                Err(e) => {
                    warn!("socket receive failed: {e}");
                    break;
                }
            }
        }
        self.recv_buf = buf;
        if self.transport.take_connection_refused() {
            let remote = self.conn.remote();
            self.with_conn(|c, ctx| {
                c.close(
                    ctx,
                    DisconnectReason::Closed,
                    Some((
                        ErrorCode::ConnectionClosed,
                        format!("{remote} is unreachable (ICMP port unreachable)").into(),
                    )),
                    false,
                )
            });
        }
        self.with_conn(|c, ctx| c.process(ctx));
    }

    /// Flushes KCP (handshake, messages, ACKs, retransmissions, pings).
    pub fn tick_outgoing(&mut self) {
        self.now = Now::read(self.clock.as_ref());
        self.with_conn(|c, ctx| {
            c.process(ctx);
            c.flush(ctx);
        });
        if let Err(e) = self.transport.poll(self.now.at) {
            debug!("transport poll failed: {e}");
        }
    }

    /// [`Client::tick_incoming`], then hands every event to `handler` with a [`ClientCtx`]
    /// through which it can send or disconnect at once.
    pub fn tick_incoming_with<F>(&mut self, mut handler: F)
    where
        F: FnMut(&mut ClientCtx<'_>, Event<'_>),
    {
        self.tick_incoming();
        let mut queue = std::mem::take(&mut self.events);
        loop {
            while let Some(ev) = queue.pop() {
                handler(&mut ClientCtx { client: self }, ev);
                if std::mem::take(&mut self.closed_in_dispatch) {
                    queue.cancel_data(self.id);
                }
            }
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

    /// The next event, if any. Message data borrows the client until the next call.
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        self.events.pop()
    }

    // ---------------------------------------------------------- app requests

    /// Sends a message. Reliable messages go out at the next [`Client::tick_outgoing`];
    /// unreliable ones at once. See [`crate::Server::send`] for the errors.
    pub fn send(&mut self, data: &[u8], channel: Channel) -> Result<(), Error> {
        self.with_conn(|c, ctx| c.send(ctx, data, channel))
    }

    /// Closes the connection at once (five unreliable Disconnect datagrams). A
    /// `Disconnected { reason: Local }` event follows; undelivered data events are dropped.
    pub fn disconnect(&mut self) {
        self.with_conn(|c, ctx| c.close(ctx, DisconnectReason::Local, None, true));
        self.events.cancel_data(self.id);
    }

    /// Closes the connection once queued reliable data is acknowledged (or
    /// `linger_timeout_ms` passed). Keep ticking until `Disconnected` arrives.
    pub fn disconnect_graceful(&mut self) {
        self.with_conn(|c, ctx| c.disconnect_graceful(ctx));
    }

    fn with_conn<R>(&mut self, f: impl FnOnce(&mut Connection, &mut Ctx<'_>) -> R) -> R {
        let mut tx = TransportTx {
            transport: self.transport.as_mut(),
            now: self.now.at,
            stats: &mut self.stats,
            scratch: &mut self.send_buf,
        };
        let mut ctx = Ctx {
            now: self.now.kcp(),
            id: self.id,
            events: &mut self.events,
            tx: &mut tx,
        };
        f(&mut self.conn, &mut ctx)
    }
}

/// The client as seen from an event handler of [`Client::tick_incoming_with`].
pub struct ClientCtx<'a> {
    client: &'a mut Client,
}

impl ClientCtx<'_> {
    /// See [`Client::send`].
    pub fn send(&mut self, data: &[u8], channel: Channel) -> Result<(), Error> {
        self.client.send(data, channel)
    }

    /// See [`Client::disconnect`].
    pub fn disconnect(&mut self) {
        self.client.disconnect();
        self.client.closed_in_dispatch = true;
    }

    /// See [`Client::disconnect_graceful`].
    pub fn disconnect_graceful(&mut self) {
        self.client.disconnect_graceful();
    }

    /// See [`Client::state`].
    pub fn state(&self) -> ConnectionState {
        self.client.state()
    }

    /// See [`Client::rtt`].
    pub fn rtt(&self) -> Option<u32> {
        self.client.rtt()
    }
}

/// Resolves `host:port` to one socket address (the first the resolver returns).
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, Error> {
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::DnsResolve(format!("{host}: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| Error::DnsResolve(format!("{host}: no addresses")))
}
