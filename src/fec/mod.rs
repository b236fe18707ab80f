//! Forward error correction for kcpnet↔kcpnet connections (the `fec` feature; issue 18):
//! the wire format of data and parity shards, a per-connection encoder that groups
//! outgoing datagrams and closes a group when it is full or when the tick that opened it
//! ends, and a decoder that rebuilds lost datagrams from parity within a fixed memory bound.
//! Pure functions of bytes, below `connection`; Reed-Solomon over GF(2⁸) through the
//! `reed-solomon-erasure` crate (why that one: `docs/PERFORMANCE.md`, "FEC codec").
//!
//! ```text
//! data shard:   [3][cookie u32 LE][group u16 LE][index u8][inner channel u8][inner payload]
//! parity shard: [4][cookie u32 LE][group u16 LE][index u8][k u8][m u8][parity bytes]
//! ```
//!
//! The inner channel and payload are the plain kcp2k datagram's bytes after its cookie: a
//! receiver hands a data shard to the connection at once, as if it were that datagram (FEC
//! never delays a datagram). A group's shards are the inner datagrams prefixed with their
//! length (u16 LE) and zero-padded to the longest; its `m` parity shards (Reed-Solomon) are
//! that long. Only parity says how many data shards (`k`) the group has, since a group may
//! close before it is full.

use reed_solomon_erasure::galois_8::ReedSolomon;

pub(crate) mod adapt;

/// Channel byte of a data shard.
pub(crate) const DATA: u8 = 3;
/// Channel byte of a parity shard.
pub(crate) const PARITY: u8 = 4;
/// The most data shards in a group.
pub const MAX_DATA_SHARDS: usize = 16;
/// The most parity shards in a group.
pub const MAX_PARITY_SHARDS: usize = 4;
/// Groups a decoder keeps (the newest and the three before it).
pub const GROUPS_KEPT: usize = 4;
/// Bytes a data shard adds to its datagram: group, index and the wrapped channel byte.
pub const DATA_OVERHEAD: usize = 4;
/// Bytes a parity datagram has beyond its group's longest data datagram: its group,
/// index, k and m (5) and the shards' length prefix (2), less the data shard's group,
/// index and channel (3).
pub const PARITY_OVERHEAD: usize = 5 + 2 - 3;
/// The kcp2k header: channel and cookie.
const HEADER: usize = 5;

/// A parsed shard datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shard<'a> {
    /// A data shard: its group, its index, and the inner datagram (channel and payload).
    Data {
        group: u16,
        index: u8,
        inner: &'a [u8],
    },
    /// A parity shard.
    Parity {
        group: u16,
        index: u8,
        k: u8,
        m: u8,
        bytes: &'a [u8],
    },
}

impl<'a> Shard<'a> {
    /// Parses a datagram whose channel byte is [`DATA`] or [`PARITY`]; `None` for anything
    /// malformed (too short, an index or a group size out of range, an empty inner
    /// datagram).
    pub(crate) fn parse(datagram: &'a [u8]) -> Option<Shard<'a>> {
        let kind = *datagram.first()?;
        let rest = datagram.get(HEADER..)?;
        let group = u16::from_le_bytes([*rest.first()?, *rest.get(1)?]);
        let index = *rest.get(2)?;
        match kind {
            DATA => {
                let inner = rest.get(3..).filter(|i| !i.is_empty())?;
                (usize::from(index) < MAX_DATA_SHARDS).then_some(Shard::Data {
                    group,
                    index,
                    inner,
                })
            }
            PARITY => {
                let (k, m) = (*rest.get(3)?, *rest.get(4)?);
                let bytes = rest.get(5..).filter(|b| b.len() > 2)?;
                let ok = (1..=MAX_DATA_SHARDS).contains(&usize::from(k))
                    && (1..=MAX_PARITY_SHARDS).contains(&usize::from(m))
                    && index < m;
                ok.then_some(Shard::Parity {
                    group,
                    index,
                    k,
                    m,
                    bytes,
                })
            }
            _ => None,
        }
    }
}

/// Where `a` is after `b` in the wrapping group sequence.
fn newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// How an encoder shapes its groups (`Config::fec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// Groups of up to `k` data datagrams with `m` parity datagrams each.
    Fixed { k: u8, m: u8 },
    /// Up to `k` and `m`, shaped by the measured loss ([`adapt`]).
    Adaptive { k: u8, m: u8 },
}

/// Reed-Solomon codecs an encoder keeps, by shape: a tick-closed group's size varies, and
/// building a codec inverts a matrix and allocates its decode cache.
pub(crate) const CODECS_KEPT: usize = 3;
/// The most heap one kept codec holds: `reed-solomon-erasure` 6 gives each codec an LRU
/// cache of decode matrices whose table is allocated for 254 entries (about 8.7 KB, empty in
/// an encoder), beside its encoding matrix of at most 20 × 16 bytes.
pub(crate) const CODEC_HEAP_BOUND: usize = 10 * 1024;

/// The sending side of a connection's FEC: the open group's shards.
#[derive(Debug)]
pub(crate) struct Encoder {
    group: u16,
    policy: Policy,
    /// Data datagrams that fill the next group (fixed, or from the loss).
    k: u8,
    /// The loss the shape is planned for (adaptive).
    loss: f64,
    /// The open group's shards (length prefix + inner datagram), unpadded; capacity kept.
    shards: Vec<Vec<u8>>,
    count: usize,
    longest: usize,
    /// Recently used codecs, the latest last.
    codecs: Vec<(usize, usize, ReedSolomon)>,
    /// Parity shard buffers and the parity datagram being written; capacity kept.
    parity: Vec<Vec<u8>>,
    datagram: Vec<u8>,
    /// Parity datagrams sent so far.
    pub(crate) parity_sent: u64,
    /// Bytes of parity datagrams sent so far.
    pub(crate) parity_bytes: u64,
    /// Groups closed so far, and those that went without parity (adaptive, clean link).
    pub(crate) groups: u64,
    pub(crate) groups_unprotected: u64,
}

impl Encoder {
    /// An encoder with `policy`; its bounds are clamped to 1..=16 data and 1..=4 parity.
    pub(crate) fn new(policy: Policy) -> Encoder {
        let clamp = |k: u8, m: u8| {
            (
                k.clamp(1, MAX_DATA_SHARDS as u8),
                m.clamp(1, MAX_PARITY_SHARDS as u8),
            )
        };
        let policy = match policy {
            Policy::Fixed { k, m } => {
                let (k, m) = clamp(k, m);
                Policy::Fixed { k, m }
            }
            Policy::Adaptive { k, m } => {
                let (k, m) = clamp(k, m);
                Policy::Adaptive { k, m }
            }
        };
        let mut e = Encoder {
            group: 0,
            policy,
            k: 1,
            loss: adapt::PRIOR_LOSS,
            shards: Vec::new(),
            count: 0,
            longest: 0,
            codecs: Vec::new(),
            parity: Vec::new(),
            datagram: Vec::new(),
            parity_sent: 0,
            parity_bytes: 0,
            groups: 0,
            groups_unprotected: 0,
        };
        e.plan();
        e
    }

    /// The size of the next full group, from the policy and the loss.
    fn plan(&mut self) {
        self.k = match self.policy {
            Policy::Fixed { k, .. } => k,
            Policy::Adaptive { k, m } => adapt::group_size(k, m, self.loss),
        };
    }

    /// The measured loss of this end's datagrams (`None`: no estimate): an adaptive encoder
    /// shapes the groups it opens from now on, and the parity of the open one, by it.
    pub(crate) fn set_loss(&mut self, estimate: Option<(f32, f32)>) {
        self.loss = adapt::planning_loss(estimate);
        if self.count == 0 {
            self.plan();
        }
    }

    /// The current shape: data datagrams of a full group and the parity it gets.
    pub(crate) fn shape(&self) -> (u8, u8) {
        (self.k, self.parity_count(self.k))
    }

    /// Parity datagrams for a group closing with `n` data datagrams.
    fn parity_count(&self, n: u8) -> u8 {
        match self.policy {
            Policy::Fixed { m, .. } => m,
            Policy::Adaptive { m, .. } => adapt::parity_for(n, m, self.loss),
        }
    }

    /// Whether the next datagram may skip FEC altogether: an adaptive encoder on a link
    /// clean enough for no parity, with no group open.
    pub(crate) fn idle(&self) -> bool {
        self.count == 0
            && matches!(self.policy, Policy::Adaptive { .. })
            && self.loss <= adapt::TARGET_RESIDUAL
    }

    /// Whether a group is open (parity owed).
    pub(crate) fn is_open(&self) -> bool {
        self.count > 0
    }

    /// Writes the data-shard datagram of the plain datagram `plain` (`[channel][cookie]
    /// [payload]`) into `out` and keeps its shard. Returns true when the group is full:
    /// call [`Encoder::close`].
    pub(crate) fn wrap(&mut self, plain: &[u8], out: &mut Vec<u8>) -> bool {
        let inner_len = plain.len().saturating_sub(HEADER - 1);
        out.clear();
        out.push(DATA);
        out.extend_from_slice(&plain[1..HEADER]);
        out.extend_from_slice(&self.group.to_le_bytes());
        out.push(self.count as u8);
        out.push(plain[0]);
        out.extend_from_slice(&plain[HEADER..]);
        if self.shards.len() <= self.count {
            self.shards.push(Vec::new());
        }
        let shard = &mut self.shards[self.count];
        shard.clear();
        shard.extend_from_slice(&(inner_len as u16).to_le_bytes());
        shard.push(plain[0]);
        shard.extend_from_slice(&plain[HEADER..]);
        self.longest = self.longest.max(shard.len());
        self.count += 1;
        self.count >= usize::from(self.k)
    }

    /// The codec for `k` data and `m` parity shards, built once and kept among the latest
    /// [`CODECS_KEPT`].
    fn codec(&mut self, k: usize, m: usize) -> Option<&ReedSolomon> {
        match self
            .codecs
            .iter()
            .position(|(ck, cm, _)| (*ck, *cm) == (k, m))
        {
            Some(i) => {
                let c = self.codecs.remove(i);
                self.codecs.push(c);
            }
            None => {
                let codec = ReedSolomon::new(k, m).ok()?;
                if self.codecs.len() >= CODECS_KEPT {
                    self.codecs.remove(0);
                }
                self.codecs.push((k, m, codec));
            }
        }
        self.codecs.last().map(|(_, _, c)| c)
    }

    /// Closes the open group: its parity datagrams go to `emit` (with `cookie`), and the
    /// next group starts. Nothing happens if no group is open.
    pub(crate) fn close(&mut self, cookie: u32, mut emit: impl FnMut(&[u8])) {
        if self.count == 0 {
            return;
        }
        let k = self.count;
        let m = usize::from(self.parity_count(k as u8));
        let len = self.longest;
        self.groups += 1;
        if m == 0 {
            self.groups_unprotected += 1;
        } else if self.codec(k, m).is_some() {
            for s in &mut self.shards[..k] {
                s.resize(len, 0);
            }
            while self.parity.len() < m {
                self.parity.push(Vec::new());
            }
            for p in &mut self.parity[..m] {
                p.clear();
                p.resize(len, 0);
            }
            let Some((_, _, codec)) = self.codecs.last() else {
                unreachable!("codec() just kept it")
            };
            if codec
                .encode_sep(&self.shards[..k], &mut self.parity[..m])
                .is_ok()
            {
                let d = &mut self.datagram;
                for (i, p) in self.parity[..m].iter().enumerate() {
                    d.clear();
                    d.push(PARITY);
                    d.extend_from_slice(&cookie.to_le_bytes());
                    d.extend_from_slice(&self.group.to_le_bytes());
                    d.extend_from_slice(&[i as u8, k as u8, m as u8]);
                    d.extend_from_slice(p);
                    self.parity_sent += 1;
                    self.parity_bytes += d.len() as u64;
                    emit(d);
                }
            }
        }
        self.group = self.group.wrapping_add(1);
        self.count = 0;
        self.longest = 0;
        self.plan();
    }

    /// Heap bytes held (the open group's shard buffers, parity buffers and codecs).
    pub(crate) fn heap_bytes(&self) -> usize {
        let vecs = |v: &Vec<Vec<u8>>| {
            v.iter().map(Vec::capacity).sum::<usize>()
                + v.capacity() * std::mem::size_of::<Vec<u8>>()
        };
        vecs(&self.shards)
            + vecs(&self.parity)
            + self.datagram.capacity()
            + self.codecs.len() * CODEC_HEAP_BOUND
    }
}

/// One group being received.
#[derive(Debug, Default)]
struct Group {
    id: u16,
    /// From its parity: data shards and parity shards.
    k: u8,
    m: u8,
    data: Vec<Option<Vec<u8>>>,
    parity: Vec<Option<Vec<u8>>>,
    /// Rebuilt already (or nothing was missing).
    done: bool,
}

impl Group {
    fn reset(&mut self, id: u16) {
        self.id = id;
        self.k = 0;
        self.m = 0;
        self.done = false;
        self.data.clear();
        self.parity.clear();
    }

    fn have_data(&self) -> usize {
        self.data.iter().filter(|s| s.is_some()).count()
    }

    fn have_parity(&self) -> usize {
        self.parity.iter().filter(|s| s.is_some()).count()
    }
}

/// Counters of a decoder.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DecoderStats {
    /// Datagrams rebuilt from parity.
    pub recovered: u64,
    /// Parity shards received.
    pub parity_received: u64,
    /// Shards of groups older than the ones kept, or inconsistent with their group
    /// (another `k` or `m`, another parity length), dropped.
    pub dropped: u64,
}

/// The receiving side of a connection's FEC: the last [`GROUPS_KEPT`] groups. Holds at most
/// `GROUPS_KEPT × (16 + 4)` shards of at most one MTU each, whatever the peer sends.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    groups: Vec<Group>,
    newest: Option<u16>,
    pub(crate) stats: DecoderStats,
}

impl Decoder {
    /// The group slot for `id`, made current if `id` is newer than every group seen;
    /// `None` if `id` is older than the groups kept.
    fn slot(&mut self, id: u16) -> Option<&mut Group> {
        if self.groups.is_empty() {
            self.groups.resize_with(GROUPS_KEPT, Group::default);
            for (i, g) in self.groups.iter_mut().enumerate() {
                g.id = id.wrapping_sub(1 + i as u16);
                g.done = true;
            }
        }
        match self.newest {
            Some(n) if !newer(id, n) => {
                if n.wrapping_sub(id) as usize >= GROUPS_KEPT {
                    return None;
                }
            }
            _ => self.newest = Some(id),
        }
        let g = &mut self.groups[usize::from(id) % GROUPS_KEPT];
        if g.id != id {
            g.reset(id);
        }
        Some(g)
    }

    /// A data shard arrived (the caller delivers it). Returns false if it is a duplicate of
    /// a shard received or rebuilt already: the caller must then drop it (an unreliable
    /// message would otherwise be delivered twice). Rebuilt datagrams (if the group can be
    /// completed now) go to `rebuilt`.
    pub(crate) fn on_data(
        &mut self,
        group: u16,
        index: u8,
        inner: &[u8],
        rebuilt: impl FnMut(&[u8]),
    ) -> bool {
        let Some(g) = self.slot(group) else {
            // Too old to know: deliver (KCP drops reliable duplicates).
            return true;
        };
        let i = usize::from(index);
        if g.data.len() <= i {
            g.data.resize_with(i + 1, || None);
        }
        if g.data[i].is_some() {
            return false;
        }
        let mut shard = Vec::with_capacity(2 + inner.len());
        shard.extend_from_slice(&(inner.len() as u16).to_le_bytes());
        shard.extend_from_slice(inner);
        g.data[i] = Some(shard);
        self.try_rebuild(group, rebuilt);
        true
    }

    /// A parity shard arrived; rebuilt datagrams go to `rebuilt`.
    pub(crate) fn on_parity(
        &mut self,
        group: u16,
        index: u8,
        k: u8,
        m: u8,
        bytes: &[u8],
        rebuilt: impl FnMut(&[u8]),
    ) {
        self.stats.parity_received += 1;
        let Some(g) = self.slot(group) else {
            self.stats.dropped += 1;
            return;
        };
        let consistent = (g.k == 0 || (g.k == k && g.m == m))
            && g.parity.iter().flatten().all(|p| p.len() == bytes.len())
            && g.data.len()
                <= usize::from(k).max(
                    g.data
                        .iter()
                        .rposition(Option::is_some)
                        .map_or(0, |i| i + 1),
                )
            && g.data.iter().skip(usize::from(k)).all(Option::is_none);
        if !consistent {
            self.stats.dropped += 1;
            return;
        }
        g.k = k;
        g.m = m;
        let i = usize::from(index);
        if g.parity.len() <= i {
            g.parity.resize_with(i + 1, || None);
        }
        if g.parity[i].is_none() {
            g.parity[i] = Some(bytes.to_vec());
        }
        self.try_rebuild(group, rebuilt);
    }

    fn try_rebuild(&mut self, group: u16, mut rebuilt: impl FnMut(&[u8])) {
        let g = &mut self.groups[usize::from(group) % GROUPS_KEPT];
        let (k, m) = (usize::from(g.k), usize::from(g.m));
        if g.done || k == 0 {
            return;
        }
        let (have, parity) = (g.have_data(), g.have_parity());
        if have >= k {
            g.done = true;
            return;
        }
        if have + parity < k {
            return;
        }
        g.done = true;
        let Some(len) = g.parity.iter().flatten().map(Vec::len).next() else {
            return;
        };
        if g.data.iter().flatten().any(|d| d.len() > len) {
            self.stats.dropped += 1;
            return;
        }
        let Ok(codec) = ReedSolomon::new(k, m) else {
            return;
        };
        let mut shards: Vec<Option<Vec<u8>>> = (0..k)
            .map(|i| {
                g.data.get(i).cloned().flatten().map(|mut d| {
                    d.resize(len, 0);
                    d
                })
            })
            .chain((0..m).map(|i| g.parity.get(i).cloned().flatten()))
            .collect();
        if codec.reconstruct_data(&mut shards).is_err() {
            self.stats.dropped += 1;
            return;
        }
        if g.data.len() < k {
            g.data.resize_with(k, || None);
        }
        for (i, shard) in shards.into_iter().take(k).enumerate() {
            if g.data[i].is_some() {
                continue;
            }
            let Some(s) = shard else { continue };
            let n = usize::from(u16::from_le_bytes([s[0], s[1]]));
            if n == 0 || 2 + n > s.len() {
                continue;
            }
            self.stats.recovered += 1;
            rebuilt(&s[2..2 + n]);
            g.data[i] = Some(s);
        }
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.groups
            .iter()
            .map(|g| {
                g.data
                    .iter()
                    .chain(&g.parity)
                    .flatten()
                    .map(Vec::capacity)
                    .sum::<usize>()
                    + (g.data.capacity() + g.parity.capacity())
                        * std::mem::size_of::<Option<Vec<u8>>>()
            })
            .sum::<usize>()
            + self.groups.capacity() * std::mem::size_of::<Group>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain datagram: channel, cookie 7, payload.
    fn plain(ch: u8, payload: &[u8]) -> Vec<u8> {
        let mut d = vec![ch, 7, 0, 0, 0];
        d.extend_from_slice(payload);
        d
    }

    /// Encodes `msgs` as one group (closed after the last), returning the datagrams.
    fn group(enc: &mut Encoder, msgs: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut data = Vec::new();
        let mut out = Vec::new();
        for m in msgs {
            enc.wrap(m, &mut out);
            data.push(out.clone());
        }
        let mut parity = Vec::new();
        enc.close(7, |p| parity.push(p.to_vec()));
        (data, parity)
    }

    /// Feeds datagrams to a decoder; returns the inner datagrams delivered (directly or
    /// rebuilt), as plain datagrams.
    fn feed(dec: &mut Decoder, datagrams: &[&Vec<u8>]) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        for d in datagrams {
            let mut rebuilt = Vec::new();
            match Shard::parse(d).expect("a shard") {
                Shard::Data {
                    group,
                    index,
                    inner,
                } => {
                    if dec.on_data(group, index, inner, |r| rebuilt.push(r.to_vec())) {
                        got.push(inner.to_vec());
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
            got.extend(rebuilt);
        }
        got
    }

    fn inner(p: &[u8]) -> Vec<u8> {
        let mut v = vec![p[0]];
        v.extend_from_slice(&p[5..]);
        v
    }

    #[test]
    fn every_datagram_of_a_group_lost_in_turn_is_rebuilt() {
        for (k, m) in [(1u8, 1u8), (3, 1), (4, 2), (8, 2), (16, 4)] {
            let msgs: Vec<Vec<u8>> = (0..k)
                .map(|i| plain(1 + i % 2, &vec![i; 10 + 37 * usize::from(i)]))
                .collect();
            for lost in 0..usize::from(k) {
                let mut enc = Encoder::new(Policy::Fixed { k, m });
                let mut dec = Decoder::default();
                let (data, parity) = group(&mut enc, &msgs);
                assert_eq!(parity.len(), usize::from(m));
                let arriving: Vec<&Vec<u8>> = data
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| i != lost)
                    .map(|(_, d)| d)
                    .chain(parity.iter().take(1))
                    .collect();
                let mut got = feed(&mut dec, &arriving);
                got.sort();
                let mut want: Vec<Vec<u8>> = msgs.iter().map(|p| inner(p)).collect();
                want.sort();
                assert_eq!(got, want, "k {k} m {m} lost {lost}");
                assert_eq!(dec.stats.recovered, 1);
            }
        }
    }

    #[test]
    fn a_group_closed_early_is_protected_and_late_or_duplicate_shards_are_harmless() {
        let mut enc = Encoder::new(Policy::Fixed { k: 8, m: 2 });
        let mut dec = Decoder::default();
        let msgs = vec![plain(2, b"input 1"), plain(2, b"input 2, longer")];
        let (data, parity) = group(&mut enc, &msgs);
        // The first lost; parity then the second; then the first arrives late, twice.
        let got = feed(
            &mut dec,
            &[&parity[0], &data[1], &data[0], &data[0], &parity[1]],
        );
        assert_eq!(got, vec![inner(&msgs[1]), inner(&msgs[0])]);
        assert_eq!(dec.stats.recovered, 1);
        // The next group has another id.
        let (data2, _) = group(&mut enc, &[plain(1, b"next")]);
        assert!(matches!(
            Shard::parse(&data2[0]),
            Some(Shard::Data { group: 1, .. })
        ));
    }

    #[test]
    fn an_adaptive_encoder_shapes_groups_by_the_loss_and_its_parity_rebuilds() {
        let mut enc = Encoder::new(Policy::Adaptive { k: 16, m: 4 });
        // Before any estimate: the prior (5 %), a lone datagram gets two copies.
        assert!(!enc.idle());
        let (_, parity) = group(&mut enc, &[plain(1, b"alone")]);
        assert_eq!(parity.len(), 2);
        // 10 % measured: a full group is as the rule says, with parity to match.
        enc.set_loss(Some((0.1, 0.01)));
        let p = adapt::planning_loss(Some((0.1, 0.01)));
        let (k, m) = enc.shape();
        assert_eq!(k, adapt::group_size(16, 4, p));
        assert_eq!(m, adapt::parity_for(k, 4, p));
        let msgs: Vec<Vec<u8>> = (0..k).map(|i| plain(1, &[i; 30])).collect();
        let mut data = Vec::new();
        let mut out = Vec::new();
        for (i, msg) in msgs.iter().enumerate() {
            let full = enc.wrap(msg, &mut out);
            assert_eq!(full, i + 1 == usize::from(k));
            data.push(out.clone());
        }
        let mut parity = Vec::new();
        enc.close(7, |d| parity.push(d.to_vec()));
        assert_eq!(parity.len(), usize::from(m));
        // Lose as many data datagrams as there is parity: all rebuilt.
        let mut dec = Decoder::default();
        let arriving: Vec<&Vec<u8>> = data[usize::from(m)..].iter().chain(&parity).collect();
        assert_eq!(feed(&mut dec, &arriving).len(), msgs.len());
        assert_eq!(dec.stats.recovered, u64::from(m));
        // A change of loss while a group is open reshapes the next group, and the open
        // group's parity follows the new loss.
        enc.wrap(&plain(1, b"open"), &mut out);
        enc.set_loss(Some((0.3, 0.02)));
        let mut parity = Vec::new();
        enc.close(7, |d| parity.push(d.to_vec()));
        assert_eq!(parity.len(), usize::from(adapt::parity_for(1, 4, 0.31)));
        assert_eq!(enc.shape().0, adapt::group_size(16, 4, 0.31));
        // Measured clean: no parity, and the encoder stands aside.
        enc.set_loss(Some((0.0, 0.004)));
        assert!(enc.idle());
        assert_eq!(enc.shape().1, 0);
        let (_, parity) = group(&mut enc, &[plain(1, b"x")]);
        assert!(parity.is_empty());
        assert_eq!((enc.groups, enc.groups_unprotected), (4, 1));
    }

    #[test]
    fn a_slot_reused_by_a_smaller_group_still_rebuilds() {
        let mut enc = Encoder::new(Policy::Fixed { k: 8, m: 1 });
        let mut dec = Decoder::default();
        // Group 0: three shards, all arrive. Groups 1-3: one each. Group 4 (group 0's
        // slot): one shard, lost; its parity must rebuild it.
        let (g0, p0) = group(&mut enc, &[plain(1, b"a"), plain(1, b"b"), plain(1, b"c")]);
        let mut all: Vec<&Vec<u8>> = g0.iter().chain(&p0).collect();
        let mut later = Vec::new();
        for i in 1..=3u8 {
            later.push(group(&mut enc, &[plain(2, &[i])]));
        }
        for (d, p) in &later {
            all.extend(d.iter().chain(p));
        }
        let (_lost, p4) = group(&mut enc, &[plain(2, b"lost")]);
        all.extend(p4.iter());
        let got = feed(&mut dec, &all);
        assert_eq!(got.last(), Some(&inner(&plain(2, b"lost"))));
        assert_eq!((dec.stats.recovered, dec.stats.dropped), (1, 0));
    }

    #[test]
    fn losses_beyond_the_parity_leave_the_rest_to_arq() {
        let mut enc = Encoder::new(Policy::Fixed { k: 4, m: 1 });
        let mut dec = Decoder::default();
        let msgs: Vec<Vec<u8>> = (0..4).map(|i| plain(1, &[i; 20])).collect();
        let (data, parity) = group(&mut enc, &msgs);
        let got = feed(&mut dec, &[&data[0], &data[3], &parity[0]]);
        assert_eq!(got.len(), 2, "two lost, one parity: nothing rebuilt");
        assert_eq!(dec.stats.recovered, 0);
    }

    #[test]
    fn hostile_shards_are_refused_or_dropped_within_the_bound() {
        assert!(Shard::parse(&[3, 0, 0, 0, 0, 1, 0, 16, 1]).is_none()); // index 16
        assert!(Shard::parse(&[3, 0, 0, 0, 0, 1, 0, 0]).is_none()); // no inner datagram
        assert!(Shard::parse(&[4, 0, 0, 0, 0, 1, 0, 0, 0, 1, 9, 9, 9]).is_none()); // k 0
        assert!(Shard::parse(&[4, 0, 0, 0, 0, 1, 0, 2, 4, 2, 9, 9, 9]).is_none()); // index ≥ m
        assert!(Shard::parse(&[4, 0, 0, 0, 0, 1, 0, 0, 4, 5, 9, 9, 9]).is_none()); // m 5
        let mut dec = Decoder::default();
        // Parity for groups never sent, of every id: memory stays bounded.
        for id in 0..=u16::MAX {
            dec.on_parity(id, 0, 16, 4, &[0xAB; 1200], |_| {
                panic!("nothing to rebuild")
            });
        }
        assert!(
            dec.heap_bytes() < GROUPS_KEPT * (20 * 1300) + 4096,
            "{}",
            dec.heap_bytes()
        );
        // Inconsistent parity (another k) for a group is dropped.
        let before = dec.stats.dropped;
        dec.on_parity(u16::MAX, 1, 3, 4, &[0xAB; 1200], |_| {});
        assert_eq!(dec.stats.dropped, before + 1);
        // Garbage parity with enough shards rebuilds garbage only inside the length prefix
        // rules: a rebuilt shard whose prefix is out of range is not delivered.
        let mut dec = Decoder::default();
        dec.on_data(5, 0, &[1, 2, 3], |_| {});
        dec.on_parity(5, 0, 2, 1, &[0xFF; 8], |r| assert!(r.len() <= 6));
    }
}
