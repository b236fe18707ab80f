//! The FEC fuzz driver (`fuzz/fuzz_targets/fec.rs`): the decoder fed hostile shard
//! sequences, and an encoder–decoder pair over a lossy, reordering path of the input's
//! choosing.
//!
//! Invariants (a panic is a finding): no panic; the decoder's memory stays within its
//! bound whatever arrives; on the honest path every datagram delivered (directly or
//! rebuilt) is one the encoder wrapped, none twice, and every group that lost no more
//! shards than it had parity delivers all of its datagrams.

use std::collections::HashSet;

use crate::fec::{Decoder, Encoder, Shard, GROUPS_KEPT, MAX_DATA_SHARDS, MAX_PARITY_SHARDS};

/// The most a decoder may hold: its groups' shards (each at most `longest` bytes plus the
/// length prefix) and their bookkeeping.
fn decoder_bound(longest: usize) -> usize {
    GROUPS_KEPT * (MAX_DATA_SHARDS + MAX_PARITY_SHARDS) * (longest + 2 + 64) + 4096
}

/// One fuzz case.
pub fn fec_session(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        hostile(rest);
    } else {
        honest(mode, rest);
    }
}

/// Arbitrary shards: `[len u8][bytes]` records, each parsed as a shard datagram and fed.
fn hostile(mut data: &[u8]) {
    let mut dec = Decoder::default();
    let mut longest = 0;
    while let Some((&len, rest)) = data.split_first() {
        let n = usize::from(len).min(rest.len());
        let (shard, tail) = rest.split_at(n);
        data = tail;
        longest = longest.max(shard.len());
        match Shard::parse(shard) {
            Some(Shard::Data {
                group,
                index,
                inner,
            }) => {
                dec.on_data(group, index, inner, |r| assert!(r.len() <= shard.len() + 8));
            }
            Some(Shard::Parity {
                group,
                index,
                k,
                m,
                bytes,
            }) => dec.on_parity(group, index, k, m, bytes, |r| {
                assert!(r.len() <= bytes.len());
            }),
            None => {}
        }
        assert!(
            dec.heap_bytes() <= decoder_bound(longest),
            "decoder holds {} bytes for shards of at most {longest}",
            dec.heap_bytes()
        );
    }
}

/// An encoder and a decoder: the input picks the group shape, the datagrams, which ticks
/// close groups, which shards are lost and which arrive late.
fn honest(mode: u8, data: &[u8]) {
    let k = 1 + (mode >> 1) % MAX_DATA_SHARDS as u8;
    let m = 1 + (mode >> 5) % MAX_PARITY_SHARDS as u8;
    let mut enc = Encoder::new(crate::fec::Policy::Fixed { k, m });
    let mut dec = Decoder::default();
    let mut wire: Vec<Vec<u8>> = Vec::new();
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut out = Vec::new();
    let mut serial = 0u32;
    for &op in data {
        if op & 0x80 != 0 {
            // The end of a tick: the open group's parity.
            enc.close(7, |p| wire.push(p.to_vec()));
            continue;
        }
        // A datagram of the input's length, numbered so each is unique.
        let len = usize::from(op & 0x3F) + 4;
        let mut plain = vec![1 + (op >> 6), 7, 0, 0, 0];
        plain.extend_from_slice(&serial.to_le_bytes());
        plain.resize(5 + len, op);
        serial += 1;
        sent.push(plain.clone());
        let full = enc.wrap(&plain, &mut out);
        wire.push(out.clone());
        if full {
            enc.close(7, |p| wire.push(p.to_vec()));
        }
    }
    enc.close(7, |p| wire.push(p.to_vec()));
    // Losses: the input's bytes again, one bit a shard (1 = lost).
    let loss: Vec<bool> = data
        .iter()
        .flat_map(|b| (0..8).map(move |i| b >> i & 1 == 1))
        .chain(std::iter::repeat(false))
        .take(wire.len())
        .collect();
    let mut delivered: Vec<Vec<u8>> = Vec::new();
    let mut lost_per_group: Vec<(u16, usize, usize)> = Vec::new();
    for (d, lost) in wire.iter().zip(&loss) {
        let shard = Shard::parse(d).expect("the encoder's shards parse");
        let group = match shard {
            Shard::Data { group, .. } | Shard::Parity { group, .. } => group,
        };
        match lost_per_group.last_mut() {
            Some(g) if g.0 == group => {
                g.1 += 1;
                g.2 += usize::from(*lost);
            }
            _ => lost_per_group.push((group, 1, usize::from(*lost))),
        }
        if *lost {
            continue;
        }
        let mut rebuilt = Vec::new();
        match shard {
            Shard::Data {
                group,
                index,
                inner,
            } => {
                if dec.on_data(group, index, inner, |r| rebuilt.push(r.to_vec())) {
                    delivered.push(inner.to_vec());
                }
            }
            Shard::Parity {
                group,
                index,
                k,
                m,
                bytes,
            } => dec.on_parity(group, index, k, m, bytes, |r| rebuilt.push(r.to_vec())),
        }
        delivered.extend(rebuilt);
    }
    // Every delivered datagram was sent, none twice.
    let sent_inner: HashSet<Vec<u8>> = sent
        .iter()
        .map(|p| {
            let mut v = vec![p[0]];
            v.extend_from_slice(&p[5..]);
            v
        })
        .collect();
    let mut seen = HashSet::new();
    for d in &delivered {
        assert!(sent_inner.contains(d), "a datagram nobody sent: {d:?}");
        assert!(seen.insert(d.clone()), "delivered twice: {d:?}");
    }
    // Losses within the parity: nothing missing overall if every group lost ≤ its parity.
    let within = lost_per_group
        .iter()
        .all(|&(_, shards, lost)| lost <= usize::from(m).min(shards.saturating_sub(1)));
    if within {
        assert_eq!(
            delivered.len(),
            sent.len(),
            "every group lost at most its parity, yet datagrams are missing"
        );
    }
}
