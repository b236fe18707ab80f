//! Coalesced unreliable messages (kcpnet's `COALESCE` extension, `docs/PROTOCOL.md`,
//! "Coalesced unreliable messages"): several small unreliable messages to one peer in one
//! datagram, each still its own message on arrival.
//!
//! ```text
//! [2][cookie u32 LE][0x14] then, for each message (at least one):
//!     len u16 LE (1..=65535)   the message's bytes
//! ```
//!
//! A reader checks the whole datagram before it hands anything on: every length at least 1
//! and within the datagram, nothing left over. A datagram that fails is dropped whole.

use super::WireError;

/// The unreliable header byte of a coalesced datagram (in the place of kcp2k's `Data` = 4).
pub const BATCH_HEADER: u8 = 0x14;
/// Bytes each message adds to a coalesced datagram beyond its own: its length.
pub const ENTRY_OVERHEAD: usize = 2;

/// Appends one message to a coalesced payload being built (after its header byte).
/// `msg` must be 1..=65535 bytes; longer or empty messages are refused (false) and nothing
/// is written.
pub fn push_entry(buf: &mut Vec<u8>, msg: &[u8]) -> bool {
    let Ok(len) = u16::try_from(msg.len()) else {
        return false;
    };
    if len == 0 {
        return false;
    }
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(msg);
    true
}

/// The messages of a coalesced payload (the bytes after its header byte), checked whole
/// first: [`WireError::TooShort`] for an empty payload, [`WireError::BadBatch`] for a
/// length of 0, a length past the end, or a trailing byte.
pub fn entries(payload: &[u8]) -> Result<Entries<'_>, WireError> {
    if payload.is_empty() {
        return Err(WireError::TooShort);
    }
    let mut rest = payload;
    let mut count = 0usize;
    while !rest.is_empty() {
        let (len, after) = split_entry(rest)?;
        rest = &after[len..];
        count += 1;
    }
    Ok(Entries {
        rest: payload,
        count,
    })
}

/// One entry's length and what follows its length field, checked.
fn split_entry(bytes: &[u8]) -> Result<(usize, &[u8]), WireError> {
    let Some((head, after)) = bytes.split_first_chunk::<2>() else {
        return Err(WireError::BadBatch);
    };
    let len = usize::from(u16::from_le_bytes(*head));
    if len == 0 || len > after.len() {
        return Err(WireError::BadBatch);
    }
    Ok((len, after))
}

/// The messages of a checked coalesced payload, in order ([`entries`]).
#[derive(Debug, Clone)]
pub struct Entries<'a> {
    rest: &'a [u8],
    count: usize,
}

impl Entries<'_> {
    /// How many messages the datagram holds.
    pub fn message_count(&self) -> usize {
        self.count
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        // Checked by `entries`: every split succeeds.
        let (len, after) = split_entry(self.rest).ok()?;
        let (msg, rest) = after.split_at(len);
        self.rest = rest;
        Some(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_message_in_order() {
        let msgs: Vec<Vec<u8>> = vec![vec![1], vec![2; 300], vec![3; 7]];
        let mut buf = Vec::new();
        for m in &msgs {
            assert!(push_entry(&mut buf, m));
        }
        let e = entries(&buf).unwrap();
        assert_eq!(e.message_count(), 3);
        assert_eq!(e.map(<[u8]>::to_vec).collect::<Vec<_>>(), msgs);
    }

    #[test]
    fn bad_payloads_are_refused_whole() {
        assert_eq!(entries(&[]).err(), Some(WireError::TooShort));
        // A zero length, a length past the end, a dangling length byte, a trailing byte.
        for bad in [
            &[0u8, 0][..],
            &[5, 0, 1, 2][..],
            &[1, 0, 9, 1][..],
            &[1, 0, 9, 1, 0][..],
            &[1][..],
        ] {
            assert_eq!(entries(bad).err(), Some(WireError::BadBatch), "{bad:?}");
        }
        let mut buf = Vec::new();
        assert!(!push_entry(&mut buf, &[]));
        assert!(!push_entry(&mut buf, &vec![0; 70_000]));
        assert!(buf.is_empty());
    }
}
