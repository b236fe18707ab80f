//! Where an endpoint's datagrams go: the [`Transmit`] sink, the [`Outbox`] that keeps them
//! for a pull-style loop, and the counting adapter through which connections reach a sink.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::connection::Tx;
use crate::secure::Session;
use crate::stats::EndpointStats;

/// Where an endpoint's datagrams go: a socket (the drivers' adapter over a
/// [`crate::io::Transport`]), an [`Outbox`], or any closure `FnMut(&[u8], SocketAddr) -> bool`.
pub trait Transmit {
    /// Sends one datagram to `to`, at once. Returns `false` if it was dropped (a full
    /// socket buffer, an error): the endpoint counts it in
    /// [`EndpointStats::send_errors`] and KCP retransmits reliable data.
    fn transmit(&mut self, data: &[u8], to: SocketAddr) -> bool;
}

impl<F: FnMut(&[u8], SocketAddr) -> bool> Transmit for F {
    fn transmit(&mut self, data: &[u8], to: SocketAddr) -> bool {
        self(data, to)
    }
}

/// A [`Transmit`] sink that keeps the datagrams, in order, for a pull-style loop (take them
/// with [`Outbox::pop`]) or a test that inspects them. One byte buffer holds them all; it is
/// reused once emptied, so a steady loop allocates nothing.
#[derive(Debug, Default, Clone)]
pub struct Outbox {
    bytes: Vec<u8>,
    datagrams: VecDeque<(SocketAddr, usize, usize)>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Outbox {
        Outbox::default()
    }

    /// Datagrams waiting.
    pub fn len(&self) -> usize {
        self.datagrams.len()
    }

    /// True when no datagram waits.
    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }

    /// The oldest datagram and its destination. Its bytes stay valid until the next call
    /// that changes the outbox.
    pub fn pop(&mut self) -> Option<(SocketAddr, &[u8])> {
        // The buffer is reused from its start by the next `transmit` after the last pop.
        let (to, start, len) = self.datagrams.pop_front()?;
        Some((to, &self.bytes[start..start + len]))
    }

    /// Drops every waiting datagram.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.datagrams.clear();
    }
}

impl Transmit for Outbox {
    fn transmit(&mut self, data: &[u8], to: SocketAddr) -> bool {
        if self.datagrams.is_empty() {
            self.bytes.clear();
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        self.datagrams.push_back((to, start, data.len()));
        true
    }
}

/// Datagram output of a connection: to the caller's sink, counted.
pub(super) struct CountingTx<'a> {
    pub(super) out: &'a mut dyn Transmit,
    pub(super) stats: &'a mut EndpointStats,
    /// Where `head ++ body` is assembled when both are present.
    pub(super) scratch: &'a mut Vec<u8>,
}

impl Tx for CountingTx<'_> {
    fn send(&mut self, head: &[u8], body: &[u8], to: SocketAddr) -> bool {
        let data: &[u8] = if body.is_empty() {
            head
        } else {
            self.scratch.clear();
            self.scratch.extend_from_slice(head);
            self.scratch.extend_from_slice(body);
            self.scratch
        };
        if self.out.transmit(data, to) {
            self.stats.datagrams_sent += 1;
            self.stats.bytes_sent += data.len() as u64;
            true
        } else {
            self.stats.send_errors += 1;
            false
        }
    }

    fn send_sealed(
        &mut self,
        head: &[u8],
        body: &[u8],
        to: SocketAddr,
        session: &mut Session,
        token: Option<&[u8]>,
    ) -> Option<usize> {
        if !session.seal(head, body, token, self.scratch) {
            return None;
        }
        let n = self.scratch.len();
        if self.out.transmit(self.scratch, to) {
            self.stats.datagrams_sent += 1;
            self.stats.bytes_sent += n as u64;
            Some(n)
        } else {
            self.stats.send_errors += 1;
            None
        }
    }
}
