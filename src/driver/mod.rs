//! What both drivers ([`crate::Server`], [`crate::Client`]) are: a loop of a transport and a
//! clock around one sans-IO [`Endpoint`].
//!
//! [`Io::tick_incoming`] reads the clock, reads every pending datagram from the transport
//! into [`Endpoint::handle_datagram`] and then calls [`Endpoint::handle_timeout`];
//! [`Io::tick_outgoing`] calls [`Endpoint::flush`] and releases what the transport holds
//! back; every application request goes through [`Io::request`], which gives the endpoint
//! the time and the transport as its sink. The drivers add only what differs (the server's
//! bind, the client's one connection) and the public API.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use log::{debug, warn};

use crate::config::Config;
use crate::endpoint::{Endpoint, Transmit};
use crate::error::Error;
use crate::event::Event;
use crate::io::{
    Clock, ConditionerHandle, Conditions, Direction, LinkConditioner, PollReport, SocketOptions,
    Transport,
};

pub(crate) mod api;
pub(crate) mod drain;

pub(crate) use drain::Drainable;
pub use drain::EventDrain;

/// The receive buffer size: the largest UDP payload. Datagrams larger than our MTU are
/// read whole, so a peer with a larger MTU shows up as a clear error naming both MTUs
/// rather than as silent truncation.
pub(crate) const RECV_BUFFER_LEN: usize = 65_536;

/// The most ticks `linger` runs.
pub(crate) const LINGER_MAX_TICKS: usize = 100_000;

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

/// The first address `addr` resolves to, or [`Error::DnsResolve`].
pub(crate) fn first_addr(addr: impl ToSocketAddrs) -> Result<SocketAddr, Error> {
    addr.to_socket_addrs()
        .map_err(|e| Error::DnsResolve(e.to_string()))?
        .next()
        .ok_or_else(|| Error::DnsResolve("no addresses".into()))
}

/// The endpoint's sink over a transport.
struct TransportOut<'a> {
    transport: &'a mut dyn Transport,
    now: Duration,
}

impl Transmit for TransportOut<'_> {
    fn transmit(&mut self, data: &[u8], to: SocketAddr) -> bool {
        match self.transport.send_to(data, to, self.now) {
            Ok(sent) => sent,
            Err(e) => {
                debug!("send to {to} failed: {e}");
                false
            }
        }
    }
}

/// A driver's transport and clock.
pub(crate) struct Io {
    pub transport: Box<dyn Transport>,
    /// The handle of the link conditioner around the transport, if the driver was given
    /// one (`bind`/`connect` always are): what `set_conditions` and `conditioner()` use.
    pub conditioner: Option<ConditionerHandle>,
    /// A poll reported a peer unreachable; handed to the endpoint after the next receive
    /// loop.
    connection_refused: bool,
    pub clock: Box<dyn Clock>,
    recv_buf: Vec<u8>,
}

impl Io {
    pub(crate) fn new(transport: Box<dyn Transport>, clock: Box<dyn Clock>) -> Io {
        Io {
            transport,
            conditioner: None,
            connection_refused: false,
            clock,
            recv_buf: vec![0; RECV_BUFFER_LEN],
        }
    }

    /// An `Io` over a link conditioner whose handle it keeps (`set_conditions`).
    pub(crate) fn conditioned<T: Transport + 'static>(
        conditioner: LinkConditioner<T>,
        clock: Box<dyn Clock>,
    ) -> Io {
        let handle = conditioner.handle();
        let mut io = Io::new(Box::new(conditioner), clock);
        io.conditioner = Some(handle);
        io
    }

    /// Releases what the transport holds back (delayed or batched datagrams), accounts for
    /// datagrams dropped after `send_to` had accepted them, and notes an unreachable peer
    /// for the next receive loop.
    fn poll_transport(&mut self, now: Duration, endpoint: &mut Endpoint) {
        let report = self.transport.poll(now).unwrap_or_else(|e| {
            debug!("transport poll failed: {e}");
            PollReport::default()
        });
        self.connection_refused |= report.connection_refused;
        endpoint.record_send_drops(report.send_drops);
    }

    /// Reads every pending datagram (up to `max_datagrams_per_tick`) into `endpoint`, tells
    /// it when the network reported `peer` unreachable, then runs its due connections.
    pub(crate) fn tick_incoming(&mut self, endpoint: &mut Endpoint, peer: Option<SocketAddr>) {
        let now = self.clock.now();
        self.poll_transport(now, endpoint);
        let mut buf = std::mem::take(&mut self.recv_buf);
        for _ in 0..endpoint.config().max_datagrams_per_tick {
            match self.transport.recv_from(&mut buf, now) {
                Ok(Some((len, from))) => {
                    let mut out = TransportOut {
                        transport: self.transport.as_mut(),
                        now,
                    };
                    endpoint.handle_datagram(now, from, &buf[..len], &mut out);
                }
                Ok(None) => break,
                Err(e) => {
                    warn!("socket receive failed: {e}");
                    break;
                }
            }
        }
        self.recv_buf = buf;
        let mut out = TransportOut {
            transport: self.transport.as_mut(),
            now,
        };
        if std::mem::take(&mut self.connection_refused) {
            if let Some(peer) = peer {
                endpoint.handle_unreachable(now, peer, &mut out);
            }
        }
        endpoint.handle_timeout(now, &mut out);
    }

    /// Flushes `endpoint`, then releases what the transport holds back.
    pub(crate) fn tick_outgoing(&mut self, endpoint: &mut Endpoint) {
        let now = self.clock.now();
        endpoint.flush(
            now,
            &mut TransportOut {
                transport: self.transport.as_mut(),
                now,
            },
        );
        self.poll_transport(now, endpoint);
    }

    /// Runs an application request on `endpoint` at the current time with the transport as
    /// its sink. With `release`, what the transport holds back is released before
    /// returning: a close's datagrams leave within the call.
    pub(crate) fn request<R>(
        &mut self,
        endpoint: &mut Endpoint,
        release: bool,
        f: impl FnOnce(&mut Endpoint, Duration, &mut dyn Transmit) -> R,
    ) -> R {
        let now = self.clock.now();
        let r = f(
            endpoint,
            now,
            &mut TransportOut {
                transport: self.transport.as_mut(),
                now,
            },
        );
        if release {
            self.poll_transport(now, endpoint);
        }
        r
    }

    /// How long until `endpoint` or the transport need a tick, from a fresh clock reading;
    /// `Some(ZERO)` when events wait or work is due. Never a time in the past.
    pub(crate) fn poll_delay(&self, endpoint: &Endpoint) -> Option<Duration> {
        let now = self.clock.now();
        let timer = endpoint.poll_timeout().map(|at| at.saturating_sub(now));
        let transport = self
            .transport
            .next_wakeup()
            .map(|at| at.saturating_sub(now));
        match (timer, transport) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Blocks in the transport until a datagram may be readable, the endpoint's or the
    /// transport's next deadline, or `max` passed.
    pub(crate) fn wait(&mut self, endpoint: &Endpoint, max: Duration) -> Result<(), Error> {
        let delay = match self.poll_delay(endpoint) {
            Some(d) => d.min(max),
            None => max,
        };
        if delay.is_zero() {
            return Ok(());
        }
        self.transport.wait(delay)?;
        Ok(())
    }

    /// Ticks `endpoint` (without taking its events) until it has no connection left and
    /// the transport holds nothing back, or `max` passed; whether it got there. Waits in the
    /// transport between ticks. At most [`LINGER_MAX_TICKS`] ticks, so a clock that does
    /// not move (a paused `ManualClock`) cannot hold it forever.
    pub(crate) fn linger(&mut self, endpoint: &mut Endpoint, max: Duration) -> bool {
        let deadline = self.clock.now().saturating_add(max);
        for _ in 0..LINGER_MAX_TICKS {
            self.tick_incoming(endpoint, None);
            self.tick_outgoing(endpoint);
            if endpoint.connection_count() == 0 && self.transport.next_wakeup().is_none() {
                return true;
            }
            let now = self.clock.now();
            if now >= deadline {
                return false;
            }
            let timer = endpoint.next_timer().map(|at| at.saturating_sub(now));
            let wakeup = self
                .transport
                .next_wakeup()
                .map(|at| at.saturating_sub(now));
            let delay = [timer, wakeup, Some(deadline - now)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(deadline - now);
            if !delay.is_zero() {
                if let Err(e) = self.transport.wait(delay) {
                    debug!("wait failed while lingering: {e}");
                    return false;
                }
            }
        }
        false
    }

    /// Hands every queued event to `handler` together with the endpoint handle.
    pub(crate) fn dispatch<E: Drainable>(
        mut handle: E,
        mut handler: impl FnMut(&mut E, Event<'_>),
    ) {
        // Most ticks of a game loop have no event: no drain to open and close.
        let core = &mut handle.endpoint().shared;
        if core.events.is_empty() && core.closed_in_dispatch.is_empty() {
            return;
        }
        let mut drain = EventDrain::new(handle);
        while let Some((event, handle)) = drain.next() {
            handler(handle, event);
        }
    }

    // ------------------------------------------------------- conditioner access

    /// The link conditioner's handle, or the error `set_conditions` reports without one.
    fn require_conditioner(&self) -> Result<&ConditionerHandle, Error> {
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
