//! [`SendFlags`]: what one send asks beyond its channel (`Server::send_with`,
//! `Client::send_with`, `Endpoint::send_with`).

/// Per-send options, combined with `|`. [`SendFlags::NONE`] is what plain `send` does.
///
/// ```
/// use kcpnet::SendFlags;
/// let f = SendFlags::FLUSH | SendFlags::NO_DELAY;
/// assert!(f.contains(SendFlags::FLUSH) && f.contains(SendFlags::NO_DELAY));
/// assert!(!SendFlags::NONE.contains(SendFlags::FLUSH));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SendFlags(u8);

impl SendFlags {
    /// No option: reliable messages leave at the next `tick_outgoing`, unreliable ones are
    /// handed to the socket at once (a batching socket sends them at the end of the tick).
    pub const NONE: SendFlags = SendFlags(0);
    /// This message, and everything queued on the connection before it, leaves within the
    /// call: KCP flushes the connection's reliable data (as far as its window allows), an
    /// open FEC group's parity goes out, and a batching socket sends what it holds. For a
    /// message that must not wait for the end of the frame (a shot, an input) — it costs a
    /// datagram where waiting might have shared one (GameNetworkingSockets' `NoNagle` with a
    /// flush).
    pub const FLUSH: SendFlags = SendFlags(1);
    /// For unreliable messages: if the message cannot leave now — the connection is not
    /// established yet (or is closing), the connection's send-rate cap is reached
    /// (`Config::send_rate_limit`), or the socket refused it — it is dropped and counted
    /// (`ConnectionStats::unreliable_dropped_no_delay`) and `send_with` returns `Ok`, instead
    /// of an error. Never waits, never queues (GameNetworkingSockets' `NoDelay`): for
    /// positions and other state the next update replaces. A reliable send with it is
    /// [`crate::Error::InvalidArgument`].
    pub const NO_DELAY: SendFlags = SendFlags(2);

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: SendFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The flags of both.
    pub const fn union(self, other: SendFlags) -> SendFlags {
        SendFlags(self.0 | other.0)
    }
}

impl std::ops::BitOr for SendFlags {
    type Output = SendFlags;
    fn bitor(self, rhs: SendFlags) -> SendFlags {
        self.union(rhs)
    }
}

impl std::ops::BitOrAssign for SendFlags {
    fn bitor_assign(&mut self, rhs: SendFlags) {
        *self = self.union(rhs);
    }
}
