//! Plumbing shared by the [`crate::Server`] and [`crate::Client`] drivers.

use std::net::SocketAddr;
use std::time::Duration;

use log::debug;

use crate::connection::Tx;
use crate::error::Error;
use crate::io::{Clock, ConditionerControl, Transport};
use crate::stats::EndpointStats;

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
/// accepted (a peer with a larger MTU is a configuration mismatch that shows up as a clear
/// error when a too-large message arrives, rather than as silent truncation).
pub(crate) const RECV_BUFFER_LEN: usize = 65_536;

/// The transport's link conditioner, or the error `set_conditions` reports without one.
pub(crate) fn require_conditioner(
    transport: &mut dyn Transport,
) -> Result<&mut dyn ConditionerControl, Error> {
    transport
        .conditioner()
        .ok_or_else(|| Error::InvalidArgument("the transport has no link conditioner".into()))
}
