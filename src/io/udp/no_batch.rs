//! Stands in for `batch.rs` off Linux, where there is no batched I/O: [`Batch`] has no
//! values, so a [`UdpTransport`]'s batching state is always `None` and every call below
//! takes the plain path.

use std::{io, net::SocketAddr};

use socket2::Socket;

use super::{OffloadStats, SocketOptions, UdpTransport};

/// The state of batched I/O, which cannot exist on this system.
#[derive(Debug)]
pub(super) enum Batch {}

impl Batch {
    /// No batching here, whatever [`SocketOptions::batch`] says.
    pub(super) fn setup(_: &Socket, _: SocketAddr, _: &SocketOptions) -> Option<Box<Batch>> {
        None
    }

    pub(super) fn is_batching(&self) -> bool {
        match *self {}
    }

    pub(super) fn is_gso(&self) -> bool {
        match *self {}
    }

    pub(super) fn is_gro(&self) -> bool {
        match *self {}
    }

    pub(super) fn offload_stats(&self) -> OffloadStats {
        match *self {}
    }

    pub(super) fn has_pending(&self) -> bool {
        match *self {}
    }
}

impl UdpTransport {
    /// Not reached (there is never a batch): the plain path.
    pub(super) fn recv_batching(
        &mut self,
        buf: &mut [u8],
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        self.recv_plain(buf)
    }

    /// Never batched: the caller sends plainly.
    pub(super) fn queue_batched(&mut self, _: &[u8], _: SocketAddr) -> Result<(), ()> {
        Err(())
    }

    /// Nothing is ever pending.
    pub(super) fn flush_batch(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Nothing is ever pending.
    pub(super) fn flush_quietly(&mut self) {}

    /// Waits always use the poller here.
    pub(super) fn wait_in_receive(&mut self, _timeout: std::time::Duration) -> io::Result<bool> {
        Ok(false)
    }

    /// The socket never leaves non-blocking mode here.
    pub(super) fn leave_receive_waits(&mut self) {}

    /// Not reached (the socket never leaves non-blocking mode here): a plain `send_to`.
    pub(super) fn send_nonblocking(&self, data: &[u8], target: SocketAddr) -> io::Result<usize> {
        self.socket.send_to(data, target)
    }
}
