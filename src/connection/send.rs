//! The sending side of a connection: flushing KCP (paced by the send-rate cap, then the
//! coalesced unreliable batch and an open FEC group's parity), sending a message on either
//! channel, `FLUSH`'s immediate flush, the send queue's capacity, and the deadline by which
//! the connection must run again.

use log::debug;

use super::{Connection, ConnectionState, Ctx, Role};
use crate::config::PING_INTERVAL_MS;
use crate::error::Error;
use crate::event::DisconnectReason;
use crate::flags::SendFlags;
use crate::kcp::time_diff;
use crate::wire::datagram::{Channel, ReliableHeader};

impl Connection {
    /// Flushes KCP: on the interval, and at once when ACKs or data are pending and
    /// `flush_on_tick` is set. Completes a graceful disconnect once everything is acked.
    pub(crate) fn flush(&mut self, ctx: &mut Ctx<'_>) {
        if self.state == ConnectionState::Disconnected {
            return;
        }
        self.roll_window(ctx.now);
        self.pace_flush(ctx);
        let link = &mut self.link;
        let tx = &mut *ctx.tx;
        self.kcp
            .update(ctx.now, |buf| link.transmit_reliable(tx, buf));
        if self.limits.flush_on_tick && self.kcp.has_pending_output() {
            self.flush_kcp_now(ctx);
        }
        // The end of the tick: coalesced unreliable messages, then an open FEC group's
        // parity, go out now.
        self.flush_unreliable(ctx);
        self.link.close_fec_group(&mut *ctx.tx);
        if self.state == ConnectionState::Disconnecting
            && (self.kcp.wait_snd() == 0 || time_diff(ctx.now, self.deadline) >= 0)
        {
            let reason = if self.kcp.wait_snd() > 0 {
                debug!(
                    "{}: linger timeout with {} segments unacknowledged",
                    ctx.id,
                    self.kcp.wait_snd()
                );
                DisconnectReason::Local
            } else if self.fin_sent && self.fin_received {
                DisconnectReason::Finished
            } else {
                DisconnectReason::Local
            };
            self.close(ctx, reason, None, true);
        }
    }

    /// Sends a message. Reliable messages are queued in KCP (sent at the next flush);
    /// unreliable ones go out at once.
    pub(crate) fn send(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        channel: Channel,
        flags: SendFlags,
    ) -> Result<(), Error> {
        let no_delay = flags.contains(SendFlags::NO_DELAY);
        if no_delay && channel == Channel::Reliable {
            return Err(Error::InvalidArgument(
                "SendFlags::NO_DELAY applies to unreliable messages only".into(),
            ));
        }
        match self.state {
            ConnectionState::Connected | ConnectionState::PeerSendClosed => {}
            ConnectionState::Connecting if no_delay => {
                // It cannot leave now: dropped and counted, as the flag asks.
                if data.is_empty() {
                    return Err(Error::EmptyMessage);
                }
                if data.len() > (self.limits.unreliable_max as usize) {
                    return Err(Error::MessageTooLarge {
                        size: data.len(),
                        max: self.limits.unreliable_max as usize,
                    });
                }
                self.link.stats.unreliable_dropped_no_delay += 1;
                return Ok(());
            }
            ConnectionState::Disconnected => return Err(Error::ConnectionClosed),
            ConnectionState::SendClosed => return Err(Error::SendClosed),
            ConnectionState::Disconnecting if self.fin_sent => return Err(Error::SendClosed),
            _ => return Err(Error::NotConnected),
        }
        self.roll_window(ctx.now);
        if data.is_empty() {
            return Err(Error::EmptyMessage);
        }
        match channel {
            Channel::Reliable => {
                if data.len() > (self.limits.reliable_max as usize) {
                    return Err(Error::MessageTooLarge {
                        size: data.len(),
                        max: self.limits.reliable_max as usize,
                    });
                }
                let queued = self.send_queued_bytes();
                if queued >= (self.limits.send_queue_limit as usize) {
                    return Err(Error::SendQueueFull {
                        queued,
                        limit: self.limits.send_queue_limit as usize,
                    });
                }
                self.kcp
                    .send_with_header(&[ReliableHeader::Data.as_u8()], data)
                    .map_err(|e| Error::InvalidArgument(e.to_string()))?;
                self.link.stats.reliable_sent += 1;
            }
            Channel::Unreliable => {
                if data.len() > (self.limits.unreliable_max as usize) {
                    return Err(Error::MessageTooLarge {
                        size: data.len(),
                        max: self.limits.unreliable_max as usize,
                    });
                }
                // Under a rate cap it may be held back for a later flush (counted as sent
                // when it leaves) or dropped (counted as such).
                if self.pace_unreliable(ctx.now, data, no_delay) {
                    self.send_unreliable(ctx, data);
                    self.link.stats.unreliable_sent += 1;
                }
            }
        }
        Ok(())
    }

    /// Sends what the connection holds now ([`SendFlags::FLUSH`]): KCP's ACKs and the data
    /// its window admits, whatever its interval, and an open FEC group's parity.
    pub(crate) fn flush_now(&mut self, ctx: &mut Ctx<'_>) {
        if !matches!(
            self.state,
            ConnectionState::Connected
                | ConnectionState::PeerSendClosed
                | ConnectionState::SendClosed
                | ConnectionState::Disconnecting
        ) {
            return;
        }
        self.roll_window(ctx.now);
        self.pace_flush(ctx);
        self.flush_kcp_now(ctx);
        self.flush_unreliable(ctx);
        self.link.close_fec_group(&mut *ctx.tx);
    }

    /// KCP's flush at `ctx.now`, outside its interval: pending ACKs and the data its window
    /// (and the rate cap's budget) admits.
    fn flush_kcp_now(&mut self, ctx: &mut Ctx<'_>) {
        let link = &mut self.link;
        let tx = &mut *ctx.tx;
        self.kcp
            .flush_at(ctx.now, |buf| link.transmit_reliable(tx, buf));
    }

    /// The absolute time (ms) by which [`Connection::process`] / [`Connection::flush`]
    /// must run again.
    pub(crate) fn next_deadline(&self, now: u32) -> u32 {
        let mut due = now.wrapping_add(60_000);
        let mut take = |t: u32| {
            if time_diff(t, due) < 0 {
                due = t;
            }
        };
        match self.state {
            ConnectionState::Disconnected => return now,
            ConnectionState::Connecting => {
                take(self.deadline);
                if self.role == Role::Client {
                    take(self.last_ping.wrapping_add(PING_INTERVAL_MS));
                }
            }
            ConnectionState::Connected
            | ConnectionState::SendClosed
            | ConnectionState::PeerSendClosed => {
                take(self.last_receive.wrapping_add(self.limits.timeout));
                take(self.ping_due());
            }
            ConnectionState::Disconnecting => {
                take(self.deadline);
                take(self.last_receive.wrapping_add(self.limits.timeout));
            }
        }
        if !self.kcp.is_idle() {
            // Not `check`: while only ACKs are awaited, the intervals before the earliest
            // retransmission would flush nothing, and an idle server need not wake for them.
            take(self.kcp.next_due(now));
        }
        if let Some(ms) = self.pace_ready_in() {
            take(now.wrapping_add(ms));
        }
        due
    }
}
