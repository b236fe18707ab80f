//! The remote end of a connection and its datagram output: [`Tx`], the drivers' sink;
//! [`Link`], the address, cookie, byte accounting, the half-open send budget, and the
//! layers that wrap each datagram on its way out (sealing, FEC, the send-rate cap's
//! spending); [`Counters`], what the connection counts itself.

use std::net::SocketAddr;

use log::trace;

use super::{fec, pacing, SecureLink};
use crate::wire::datagram::{Channel, UnreliableHeader, DATAGRAM_HEADER_LEN};

/// A half-open server peer may be sent at most this many times the bytes it sent us.
const AMPLIFICATION_FACTOR: u64 = 3;

/// Datagram output of a connection, implemented by the drivers.
pub(crate) trait Tx {
    /// Sends `head ++ body` to `to`. Returns false if it was not sent.
    fn send(&mut self, head: &[u8], body: &[u8], to: SocketAddr) -> bool;

    /// Seals the plain datagram `head ++ body` with `session` (and `token` after the
    /// cookie, if given) and sends it to `to`. Returns the bytes sent, `None` if it was not
    /// sent.
    fn send_sealed(
        &mut self,
        head: &[u8],
        body: &[u8],
        to: SocketAddr,
        session: &mut crate::secure::Session,
        token: Option<&[u8]>,
    ) -> Option<usize>;
}

/// The counters a connection keeps itself (the rest of [`ConnectionStats`] is read from KCP
/// when asked).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counters {
    pub(super) datagrams_sent: u64,
    pub(super) datagrams_received: u64,
    pub(super) bytes_sent: u64,
    pub(super) bytes_received: u64,
    pub(super) reliable_sent: u64,
    pub(super) reliable_received: u64,
    pub(super) unreliable_sent: u64,
    pub(super) unreliable_dropped_no_delay: u64,
    pub(super) unreliable_dropped_rate: u64,
    pub(super) unreliable_received: u64,
    pub(super) datagrams_dropped: u64,
    pub(super) sends_dropped: u64,
}

/// The remote end: address, cookie, byte accounting and the half-open send budget.
#[derive(Debug)]
pub(super) struct Link {
    pub(super) remote: SocketAddr,
    pub(super) cookie: u32,
    /// Server half-open: sends limited to `AMPLIFICATION_FACTOR ×` received bytes.
    pub(super) budgeted: bool,
    /// The largest datagram (a client attaches its token only where it fits).
    pub(super) mtu: u32,
    pub(super) stats: Counters,
    /// A secure session's keys and state (`None`: plain kcp2k on the wire).
    pub(super) secure: Option<Box<SecureLink>>,
    /// FEC state, once negotiated (`None`: no FEC).
    pub(super) fec: Option<Box<fec::FecLink>>,
    /// The connection is established: FEC may wrap its datagrams (the handshake's never).
    pub(super) fec_encoding: bool,
    /// The send-rate cap, if any (`Config::send_rate_limit`, `set_send_rate`).
    pub(super) pacer: Option<Box<pacing::Pacer>>,
}

impl Link {
    pub(super) fn transmit(&mut self, tx: &mut dyn Tx, head: &[u8], body: &[u8]) {
        if self.fec.is_some() && self.transmit_fec(tx, head, body) {
            return;
        }
        let to = self.remote;
        self.send_raw(tx, head, body, to);
    }

    /// Sends `head ++ body` to `to` (not through FEC: a path challenge).
    pub(super) fn transmit_to(
        &mut self,
        tx: &mut dyn Tx,
        head: &[u8],
        body: &[u8],
        to: SocketAddr,
    ) {
        self.send_raw(tx, head, body, to);
    }

    /// Sends `head ++ body` to `to`, sealed if the session is secure.
    pub(super) fn send_raw(&mut self, tx: &mut dyn Tx, head: &[u8], body: &[u8], to: SocketAddr) {
        let plain = head.len() + body.len();
        let sealed = self.secure.as_deref().is_some_and(|s| s.active);
        let len = (plain
            + if sealed {
                crate::secure::SEAL_OVERHEAD
            } else {
                0
            }) as u64;
        if self.budgeted
            && self.stats.bytes_sent + len > AMPLIFICATION_FACTOR * self.stats.bytes_received
        {
            trace!(
                "{}: half-open send budget exhausted, dropping {len} bytes",
                self.remote
            );
            self.stats.sends_dropped += 1;
            return;
        }
        let sent = match self.secure.as_deref_mut().filter(|s| s.active) {
            Some(SecureLink { session, token, .. }) => {
                let mtu = self.mtu as usize;
                let token = token
                    .as_deref()
                    .filter(|t| plain + crate::secure::SEAL_OVERHEAD + t.len() <= mtu);
                tx.send_sealed(head, body, to, session, token)
            }
            None => tx.send(head, body, to).then_some(plain),
        };
        match sent {
            Some(n) => {
                self.stats.bytes_sent += n as u64;
                self.stats.datagrams_sent += 1;
                if let Some(p) = self.pacer.as_deref_mut() {
                    p.spend(n);
                }
            }
            None => self.stats.sends_dropped += 1,
        }
    }

    /// KCP output: fills in the reserved kcp2k header and sends.
    pub(super) fn transmit_reliable(&mut self, tx: &mut dyn Tx, buf: &mut [u8]) {
        buf[0] = Channel::Reliable.as_u8();
        buf[1..DATAGRAM_HEADER_LEN].copy_from_slice(&self.cookie.to_le_bytes());
        self.transmit(tx, buf, &[]);
    }

    pub(super) fn unreliable_header(
        &self,
        header: UnreliableHeader,
    ) -> [u8; DATAGRAM_HEADER_LEN + 1] {
        let c = self.cookie.to_le_bytes();
        [
            Channel::Unreliable.as_u8(),
            c[0],
            c[1],
            c[2],
            c[3],
            header.as_u8(),
        ]
    }
}
