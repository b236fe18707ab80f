//! How connections end: hard and graceful disconnects, close reasons (the close-reasons
//! extension's Close datagram), and half-close (the half-close extension's SendShutdown).
//!
//! * Every close that notifies the peer sends [`DISCONNECT_REPEAT`] unreliable datagrams:
//!   kcp2k's Disconnect, or — once the close-reasons extension was negotiated and there is
//!   a cause to tell — the same number of Close datagrams carrying the cause, a code and a
//!   message, so a reason survives loss exactly as well as a plain Disconnect.
//! * Half-close: `shutdown_send` queues a reliable SendShutdown behind everything already
//!   queued; the peer reports [`crate::Event::PeerSendClosed`] once every message before it
//!   was delivered. When a side has sent its SendShutdown, had all of its data
//!   acknowledged, and received the peer's, it flushes its ACKs and closes with a Close of
//!   cause `Finished` (`Disconnected { Finished }`); the peer, on that Close (or on the
//!   acknowledgement of its own SendShutdown), ends the same way. Without the extension
//!   (a kcp2k peer) `shutdown_send` is a graceful disconnect.

use std::borrow::Cow;

use log::info;

use super::extensions::{
    close_head, parse_close, CloseCause, Extensions, CLOSE_OVERHEAD, RELIABLE_SEND_SHUTDOWN,
};
use super::{Connection, ConnectionState, Ctx, Role, DISCONNECT_REPEAT};
use crate::error::{Error, ErrorCode};
use crate::event::{truncate_utf8, CloseMessage, DisconnectReason, MAX_CLOSE_MESSAGE};
use crate::wire::datagram::UnreliableHeader;

impl Connection {
    /// Ends the connection. Reports `Error` (if any) and `Disconnected` when the application
    /// knows the connection (it saw `Connected`, or it is a client's attempt); tells the
    /// peer when `notify_peer` (kcp2k Disconnect datagrams, or kcpnet Close datagrams with
    /// the cause: see the module docs).
    pub(crate) fn close(
        &mut self,
        ctx: &mut Ctx<'_>,
        reason: DisconnectReason,
        error: Option<(ErrorCode, Cow<'static, str>)>,
        notify_peer: bool,
    ) {
        if self.state == ConnectionState::Disconnected {
            return;
        }
        // What the rate cap held back cannot leave within it any more.
        self.pace_discard();
        if notify_peer {
            // Unreliable messages sent before the close go before its datagrams.
            self.flush_unreliable(ctx);
            let text = error.as_ref().map_or("", |(_, m)| m);
            self.notify_close(ctx, reason, text);
        } else {
            self.discard_unreliable();
        }
        if self.established || self.role == Role::Client {
            if let Some((code, message)) = error {
                ctx.events.push_error(ctx.id, code, message);
            }
            ctx.events.push_disconnected(ctx.id, reason);
        }
        if self.established {
            info!("{} ({}) disconnected: {reason}", ctx.id, self.link.remote);
        }
        self.state = ConnectionState::Disconnected;
        self.close_note = None;
    }

    /// Sends the close datagrams for a close of `reason` (`text`: the error's explanation).
    fn notify_close(&mut self, ctx: &mut Ctx<'_>, reason: DisconnectReason, text: &str) {
        if reason == DisconnectReason::Finished {
            // The peer may be waiting for the ACK of its SendShutdown: let it go first.
            let link = &mut self.link;
            let tx = &mut *ctx.tx;
            self.kcp
                .flush_at(ctx.now, |buf| link.transmit_reliable(tx, buf));
        }
        let note = self.close_note.as_deref().copied();
        let cause = if self.ext.contains(Extensions::CLOSE_REASONS) {
            match reason {
                DisconnectReason::Local => note.map(|(code, m)| (CloseCause::App, code, m)),
                DisconnectReason::Closed => {
                    Some((CloseCause::Shutdown, 0, CloseMessage::default()))
                }
                DisconnectReason::ProtocolError => {
                    Some((CloseCause::ProtocolError, 0, CloseMessage::truncated(text)))
                }
                DisconnectReason::Timeout => {
                    Some((CloseCause::Timeout, 0, CloseMessage::truncated(text)))
                }
                DisconnectReason::Congestion => {
                    Some((CloseCause::Congestion, 0, CloseMessage::truncated(text)))
                }
                DisconnectReason::Finished => {
                    Some((CloseCause::Finished, 0, CloseMessage::default()))
                }
                _ => None,
            }
        } else {
            None
        };
        match cause {
            Some((cause, code, message)) => {
                let message = truncate_utf8(message.as_str(), self.close_message_max());
                let head = close_head(self.link.cookie, cause, code, message.len());
                for _ in 0..DISCONNECT_REPEAT {
                    self.link.transmit(ctx.tx, &head, message.as_bytes());
                }
            }
            None => {
                let head = self.link.unreliable_header(UnreliableHeader::Disconnect);
                for _ in 0..DISCONNECT_REPEAT {
                    self.link.transmit(ctx.tx, &head, &[]);
                }
            }
        }
    }

    /// A Close datagram from the peer (its bytes after the header byte).
    pub(super) fn on_close_datagram(&mut self, ctx: &mut Ctx<'_>, body: &[u8]) {
        let (cause, code, message) = match parse_close(body) {
            Ok((cause, code, message)) => (cause, code, CloseMessage::truncated(message)),
            Err(e) => {
                self.protocol_error(ctx, format!("invalid Close datagram: {e}"));
                return;
            }
        };
        info!(
            "{}: peer closed ({cause:?}, code {code}, {message:?})",
            self.link.remote
        );
        // Reliable messages that arrived before it are delivered first (as for Disconnect);
        // a SendShutdown among them completes a half-close.
        self.drain_messages(ctx, true);
        let reason = match cause {
            CloseCause::App => DisconnectReason::App { code, message },
            CloseCause::Shutdown => DisconnectReason::RemoteShutdown,
            CloseCause::ProtocolError => DisconnectReason::RemoteProtocolError { message },
            CloseCause::Timeout => DisconnectReason::RemoteTimeout,
            CloseCause::Congestion => DisconnectReason::RemoteCongestion,
            CloseCause::Finished if self.fin_sent && self.fin_received => {
                DisconnectReason::Finished
            }
            CloseCause::Finished | CloseCause::Unspecified => DisconnectReason::Remote,
        };
        self.close(ctx, reason, None, false);
    }

    /// The longest close message one Close datagram of `mtu` bytes carries.
    fn close_message_max(&self) -> usize {
        MAX_CLOSE_MESSAGE.min((self.limits.mtu as usize).saturating_sub(CLOSE_OVERHEAD))
    }

    /// Closes with a reason the peer receives as `DisconnectReason::App { code, message }`
    /// (with the close-reasons extension; a kcp2k peer sees a plain Disconnect): at once, or
    /// `graceful`ly (see [`Connection::disconnect_graceful`]). The message may have at most
    /// `min(128, mtu - 12)` bytes (what one Close datagram carries).
    pub(crate) fn disconnect_with(
        &mut self,
        ctx: &mut Ctx<'_>,
        code: u32,
        message: &str,
        graceful: bool,
    ) -> Result<(), Error> {
        let max = self.close_message_max();
        if message.len() > max {
            return Err(Error::ReasonTooLong {
                size: message.len(),
                max,
            });
        }
        if self.ext.contains(Extensions::CLOSE_REASONS) {
            self.close_note = Some(Box::new((code, CloseMessage::truncated(message))));
        }
        if graceful {
            self.disconnect_graceful(ctx);
        } else {
            self.close(ctx, DisconnectReason::Local, None, true);
        }
        Ok(())
    }

    /// Starts a graceful disconnect: no more sends, queued reliable data keeps flowing until
    /// acknowledged or `linger_timeout_ms` passes, then Disconnect is sent.
    pub(crate) fn disconnect_graceful(&mut self, ctx: &mut Ctx<'_>) {
        match self.state {
            ConnectionState::Connected
            | ConnectionState::SendClosed
            | ConnectionState::PeerSendClosed => {
                self.state = ConnectionState::Disconnecting;
                self.deadline = ctx.now.wrapping_add(self.limits.linger_timeout);
            }
            ConnectionState::Connecting => {
                self.close(ctx, DisconnectReason::Local, None, true);
            }
            _ => {}
        }
    }

    /// Shuts down this side's sending (half-close): further sends fail with
    /// [`Error::SendClosed`], everything queued is still delivered, then the peer is told
    /// (reliably, after the last message). Receiving goes on until the peer shuts down too.
    /// Without the half-close extension (a kcp2k peer) this is a graceful disconnect.
    pub(crate) fn shutdown_send(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Error> {
        match self.state {
            ConnectionState::Connecting => Err(Error::NotConnected),
            ConnectionState::Disconnected => Err(Error::ConnectionClosed),
            ConnectionState::Connected | ConnectionState::PeerSendClosed => {
                if !self.ext.contains(Extensions::HALF_CLOSE) {
                    self.disconnect_graceful(ctx);
                    return Ok(());
                }
                let _ = self.kcp.send(&[RELIABLE_SEND_SHUTDOWN]);
                self.fin_sent = true;
                if self.fin_received {
                    self.state = ConnectionState::Disconnecting;
                    self.deadline = ctx.now.wrapping_add(self.limits.linger_timeout);
                } else {
                    self.state = ConnectionState::SendClosed;
                }
                Ok(())
            }
            // Already shut down, or closing anyway.
            _ => Ok(()),
        }
    }

    /// The peer's SendShutdown: every message it sent has been delivered.
    pub(super) fn on_send_shutdown(&mut self, ctx: &mut Ctx<'_>) {
        if self.fin_received {
            self.protocol_error(ctx, "a second SendShutdown".into());
            return;
        }
        self.fin_received = true;
        ctx.events.push_peer_send_closed(ctx.id);
        match self.state {
            ConnectionState::Connected => self.state = ConnectionState::PeerSendClosed,
            ConnectionState::SendClosed => {
                self.state = ConnectionState::Disconnecting;
                self.deadline = ctx.now.wrapping_add(self.limits.linger_timeout);
            }
            _ => {}
        }
    }

    /// Ends a half-close whose both directions are done: both SendShutdowns exchanged and
    /// all our data acknowledged.
    pub(super) fn finish_if_done(&mut self, ctx: &mut Ctx<'_>) {
        if self.state == ConnectionState::Disconnecting
            && self.fin_sent
            && self.fin_received
            && self.kcp.wait_snd() == 0
        {
            self.close(ctx, DisconnectReason::Finished, None, true);
        }
    }
}
