//! What the application asks of an endpoint: sending (with [`SendFlags`]), broadcasting,
//! and closing connections (at once, gracefully, half-closed, draining the whole endpoint).

use std::time::Duration;

use super::{Endpoint, Transmit};
use crate::connection::{Connection, ConnectionState, Ctx};
use crate::error::Error;
use crate::event::{CloseMessage, ConnectionId, DisconnectReason};
use crate::flags::SendFlags;
use crate::wire::datagram::Channel;

impl Endpoint {
    /// Runs a request on connection `id` and settles it: `dirty` when it queued reliable
    /// data for the next flush.
    fn request<R>(
        &mut self,
        now: Duration,
        id: ConnectionId,
        out: &mut dyn Transmit,
        dirty: bool,
        f: impl FnOnce(&mut Connection, &mut Ctx<'_>) -> Result<R, Error>,
    ) -> Result<R, Error> {
        self.shared.advance(now);
        let idx = self.table.index_of(id)?;
        let result = self
            .table
            .with_conn(&mut self.shared, out, idx, f)
            .unwrap_or(Err(Error::ConnectionClosed));
        if dirty {
            self.table.mark_dirty(idx);
        }
        self.table.settle(&mut self.shared, idx, !self.listening);
        result
    }

    /// Sends a message on connection `id`: unreliable ones go to `out` at once, reliable
    /// ones at the next [`Endpoint::flush`]. Errors as [`crate::Server::send`].
    pub fn send(
        &mut self,
        now: Duration,
        id: ConnectionId,
        data: &[u8],
        channel: Channel,
        out: &mut dyn Transmit,
    ) -> Result<(), Error> {
        self.send_with(now, id, data, channel, SendFlags::NONE, out)
    }

    /// [`Endpoint::send`] with [`SendFlags`]: with [`SendFlags::FLUSH`] the connection's
    /// reliable data and FEC parity go to `out` within the call (the caller then sends what
    /// `out` holds); with [`SendFlags::NO_DELAY`] an unreliable message that cannot leave
    /// now is dropped and counted instead of refused. Errors as [`crate::Server::send_with`].
    pub fn send_with(
        &mut self,
        now: Duration,
        id: ConnectionId,
        data: &[u8],
        channel: Channel,
        flags: SendFlags,
        out: &mut dyn Transmit,
    ) -> Result<(), Error> {
        self.shared.advance(now);
        let idx = self.table.index_of(id)?;
        let flush = flags.contains(SendFlags::FLUSH);
        let result = self
            .table
            .with_conn(&mut self.shared, out, idx, |c, ctx| {
                let sent = c.send(ctx, data, channel, flags);
                if sent.is_ok() && flush {
                    c.flush_now(ctx);
                }
                sent
            })
            .unwrap_or(Err(Error::ConnectionClosed));
        let owed = self
            .table
            .slots
            .get(idx)
            .is_some_and(|s| s.conn.fec_group_open() || s.conn.unreliable_pending());
        if result.is_ok() && ((channel == Channel::Reliable && !flush) || owed) {
            // Reliable data waits for the flush, and so do coalesced unreliable messages and
            // an open FEC group's parity.
            self.table.mark_dirty(idx);
        }
        if flush {
            // What the flush sent reschedules the connection's timers.
            self.table.settle(&mut self.shared, idx, !self.listening);
        }
        result
    }

    /// Caps what connection `id` sends at `rate` bytes per second, or lifts its cap
    /// (`None`); see [`crate::Server::set_send_rate`]. Takes effect at once for the
    /// decisions it governs (an unreliable message leaves or waits, KCP admits new data);
    /// nothing is sent within the call.
    pub fn set_send_rate(
        &mut self,
        now: Duration,
        id: ConnectionId,
        rate: Option<u32>,
        out: &mut dyn Transmit,
    ) -> Result<(), Error> {
        self.request(now, id, out, true, |c, ctx| {
            if c.state() == ConnectionState::Disconnected {
                return Err(Error::ConnectionClosed);
            }
            c.set_send_rate(rate, ctx.now)
        })
    }

    /// Sends a message to every connected peer; how many accepted it (a connection whose
    /// send fails, with [`Error::SendQueueFull`] for instance, is skipped).
    pub fn broadcast(
        &mut self,
        now: Duration,
        data: &[u8],
        channel: Channel,
        out: &mut dyn Transmit,
    ) -> usize {
        let mut sent = 0;
        for i in 0..self.table.slots.capacity() {
            let Some(id) = self.connected_at(i) else {
                continue;
            };
            sent += usize::from(self.send(now, id, data, channel, out).is_ok());
        }
        sent
    }

    /// The id of the connected peer in slot `idx`, if any.
    pub(super) fn connected_at(&self, idx: usize) -> Option<ConnectionId> {
        let slot = self.table.slots.get(idx)?;
        slot.conn
            .is_established()
            .then(|| ConnectionId::new(idx, slot.generation))
            .filter(|_| slot.conn.state() != ConnectionState::Disconnected)
    }

    /// Closes connection `id` at once (kcp2k's Disconnect: five unreliable Disconnect
    /// datagrams, to `out` within the call; queued reliable data is dropped). A
    /// `Disconnected { reason: Local }` event follows; undelivered data events of the
    /// connection are discarded.
    pub fn disconnect(
        &mut self,
        now: Duration,
        id: ConnectionId,
        out: &mut dyn Transmit,
    ) -> Result<(), Error> {
        self.request(now, id, out, false, |c, ctx| {
            c.close(ctx, DisconnectReason::Local, None, true);
            Ok(())
        })?;
        self.shared.closed_by_app(id);
        Ok(())
    }

    /// Closes connection `id` once its queued reliable data is acknowledged (or
    /// `linger_timeout_ms` passed); see [`crate::Server::disconnect_graceful`].
    pub fn disconnect_graceful(
        &mut self,
        now: Duration,
        id: ConnectionId,
        out: &mut dyn Transmit,
    ) -> Result<(), Error> {
        self.request(now, id, out, true, |c, ctx| {
            c.disconnect_graceful(ctx);
            Ok(())
        })
    }

    /// Closes connection `id` at once telling a kcpnet peer why; see
    /// [`crate::Server::disconnect_with`].
    pub fn disconnect_with(
        &mut self,
        now: Duration,
        id: ConnectionId,
        code: u32,
        message: &str,
        out: &mut dyn Transmit,
    ) -> Result<(), Error> {
        self.request(now, id, out, false, |c, ctx| {
            c.disconnect_with(ctx, code, message, false)
        })?;
        self.shared.closed_by_app(id);
        Ok(())
    }

    /// [`Endpoint::disconnect_graceful`] with a reason; see
    /// [`crate::Server::disconnect_graceful_with`].
    pub fn disconnect_graceful_with(
        &mut self,
        now: Duration,
        id: ConnectionId,
        code: u32,
        message: &str,
        out: &mut dyn Transmit,
    ) -> Result<(), Error> {
        self.request(now, id, out, true, |c, ctx| {
            c.disconnect_with(ctx, code, message, true)
        })
    }

    /// Half-closes connection `id`; see [`crate::Server::shutdown_send`].
    pub fn shutdown_send(
        &mut self,
        now: Duration,
        id: ConnectionId,
        out: &mut dyn Transmit,
    ) -> Result<(), Error> {
        self.request(now, id, out, true, |c, ctx| c.shutdown_send(ctx))
    }

    /// Starts draining: from now on the endpoint admits nobody — a kcpnet peer that tries
    /// ends its handshake with `Disconnected { reason: App { code, message } }`, a peer
    /// without close reasons (kcp2k) gets no answer — and every connection closes
    /// gracefully with this reason (queued reliable data is delivered first). Fails with
    /// [`Error::ReasonTooLong`], changing nothing, if `message` is longer than
    /// [`CloseMessage::MAX_LEN`] or than the mtu allows (`mtu - 12`). Calling it again
    /// changes the reason new peers are told; connections already closing keep theirs.
    pub fn begin_drain(
        &mut self,
        now: Duration,
        code: u32,
        message: &str,
        out: &mut dyn Transmit,
    ) -> Result<(), Error> {
        let max = CloseMessage::MAX_LEN.min(
            self.shared
                .config
                .mtu
                .saturating_sub(crate::connection::extensions::CLOSE_OVERHEAD),
        );
        let reason = CloseMessage::new(message)
            .filter(|m| m.len() <= max)
            .ok_or(Error::ReasonTooLong {
                size: message.len(),
                max,
            })?;
        let first = self.shared.draining.is_none();
        self.shared.draining = Some((code, reason));
        if first {
            let ids: Vec<ConnectionId> = self
                .table
                .live_indices()
                .filter_map(|i| self.table.id_of(i))
                .collect();
            for id in ids {
                // A connection already closing keeps its own way out.
                if self.state(id) == Some(ConnectionState::Connected)
                    || self.state(id) == Some(ConnectionState::PeerSendClosed)
                    || self.state(id) == Some(ConnectionState::SendClosed)
                {
                    let _ = self.disconnect_graceful_with(now, id, code, message, out);
                }
            }
        }
        Ok(())
    }

    /// Whether [`Endpoint::begin_drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.shared.draining.is_some()
    }

    /// Closes every connection at once (Disconnect datagrams to `out`), reporting
    /// `Disconnected { reason: Closed }` for each connected one.
    pub fn close_all(&mut self, now: Duration, out: &mut dyn Transmit) {
        self.shared.advance(now);
        let indices: Vec<usize> = self.table.live_indices().collect();
        for idx in indices {
            self.table.with_conn(&mut self.shared, out, idx, |c, ctx| {
                c.close(ctx, DisconnectReason::Closed, None, true)
            });
            self.table.settle(&mut self.shared, idx, !self.listening);
        }
    }
}
