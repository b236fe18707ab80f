//! How replicon's channels travel over kcp2k's two.
//!
//! bevy_replicon declares any number of channels, each [`Channel::Ordered`],
//! [`Channel::Unordered`] or [`Channel::Unreliable`]; kcp2k has exactly two, a reliable
//! ordered one and an unreliable one. Every replicon message therefore travels as one kcp2k
//! message framed as
//!
//! ```text
//! +----------------+---------------------------+
//! | channel id: u8 | replicon message (n bytes)|
//! +----------------+---------------------------+
//! ```
//!
//! on the kcp2k channel [`kcp_channel`] picks for the replicon channel: `Ordered` and
//! `Unordered` go reliable (ordered is stronger than unordered, which replicon allows), and
//! `Unreliable` goes unreliable, except a message that does not fit one unreliable datagram
//! (`Config::unreliable_max_message_size() - 1` bytes), which goes reliable instead of being
//! lost. The id is the index of the channel in [`RepliconChannels`], server channels for
//! server-to-client messages and client channels for client-to-server ones, so at most 256
//! channels per direction are supported (checked when the app finishes building). A message
//! with an unknown channel id, or an empty one, is a protocol error: the server disconnects
//! such a client, a client drops the message.

use bevy_replicon::prelude::{Channel, RepliconChannels};
use bytes::Bytes;

/// The most replicon channels per direction that the one-byte prefix can name.
pub const MAX_CHANNELS: usize = 256;

/// The kcp2k channel a replicon channel travels on (before the size fallback described in
/// the [module docs](self)).
pub fn kcp_channel(channel: Channel) -> kcpnet::Channel {
    match channel {
        Channel::Unreliable => kcpnet::Channel::Unreliable,
        Channel::Ordered | Channel::Unordered => kcpnet::Channel::Reliable,
    }
}

/// The mapping of a whole [`RepliconChannels`] onto kcp2k's channels, indexed by channel id.
pub trait RepliconChannelsExt {
    /// The kcp2k channel of each server channel (server to client).
    fn kcp_server_channels(&self) -> Vec<kcpnet::Channel>;
    /// The kcp2k channel of each client channel (client to server).
    fn kcp_client_channels(&self) -> Vec<kcpnet::Channel>;
}

impl RepliconChannelsExt for RepliconChannels {
    fn kcp_server_channels(&self) -> Vec<kcpnet::Channel> {
        self.server_channels()
            .iter()
            .map(|&c| kcp_channel(c))
            .collect()
    }

    fn kcp_client_channels(&self) -> Vec<kcpnet::Channel> {
        self.client_channels()
            .iter()
            .map(|&c| kcp_channel(c))
            .collect()
    }
}

/// Why a received message could not be unframed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The message has no channel byte.
    Empty,
    /// The channel id names no channel of this direction.
    UnknownChannel(u8),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Empty => f.write_str("empty message (no channel id)"),
            FrameError::UnknownChannel(id) => write!(f, "unknown replicon channel id {id}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Writes `[channel_id][message]` into `out` (cleared first). `channel_id` must be below
/// [`MAX_CHANNELS`].
pub fn encode(channel_id: usize, message: &[u8], out: &mut Vec<u8>) {
    debug_assert!(channel_id < MAX_CHANNELS);
    out.clear();
    out.reserve(1 + message.len());
    out.push(channel_id as u8);
    out.extend_from_slice(message);
}

/// Splits a received kcp2k message into its channel id (checked against `channels`, the
/// number of channels of that direction) and the replicon message, without copying.
pub fn decode(framed: &Bytes, channels: usize) -> Result<(usize, Bytes), FrameError> {
    let &id = framed.first().ok_or(FrameError::Empty)?;
    if usize::from(id) >= channels {
        return Err(FrameError::UnknownChannel(id));
    }
    Ok((usize::from(id), framed.slice(1..)))
}

/// Panics with an explanation if `channels` declares more channels than the prefix can name.
pub(crate) fn check_channel_count(channels: &RepliconChannels) {
    let (server, client) = (
        channels.server_channels().len(),
        channels.client_channels().len(),
    );
    assert!(
        server <= MAX_CHANNELS && client <= MAX_CHANNELS,
        "bevy_replicon_kcpnet frames messages with a one-byte channel id: at most \
         {MAX_CHANNELS} channels per direction, this app has {server} server and {client} \
         client channels"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_without_copying_the_payload() {
        let mut out = Vec::new();
        encode(3, b"payload", &mut out);
        assert_eq!(out, b"\x03payload");
        let framed = Bytes::from(out);
        let (id, message) = decode(&framed, 4).unwrap();
        assert_eq!((id, &message[..]), (3, &b"payload"[..]));
        assert_eq!(
            message.as_ptr(),
            framed[1..].as_ptr(),
            "a slice, not a copy"
        );
        encode(255, b"", &mut Vec::new());
        let framed = Bytes::from_static(b"\xff");
        assert_eq!(decode(&framed, 256).unwrap(), (255, Bytes::new()));
    }

    #[test]
    fn rejects_empty_and_unknown_channels() {
        assert_eq!(decode(&Bytes::new(), 3), Err(FrameError::Empty));
        assert_eq!(
            decode(&Bytes::from_static(b"\x03x"), 3),
            Err(FrameError::UnknownChannel(3))
        );
    }

    #[test]
    fn default_channels_map_onto_both_kcp_channels() {
        let channels = RepliconChannels::default();
        // Updates (ordered) and mutations (unreliable); acks (ordered).
        assert_eq!(
            channels.kcp_server_channels(),
            vec![kcpnet::Channel::Reliable, kcpnet::Channel::Unreliable]
        );
        assert_eq!(
            channels.kcp_client_channels(),
            vec![kcpnet::Channel::Reliable]
        );
        assert_eq!(
            kcp_channel(Channel::Unordered),
            kcpnet::Channel::Reliable,
            "stronger than asked is allowed"
        );
        check_channel_count(&channels);
    }
}
