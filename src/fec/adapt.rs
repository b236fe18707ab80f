//! The adaptive group shape (`Fec::Adaptive`): how many data datagrams a group takes and how
//! many parity datagrams it gets, from the measured loss of this end's datagrams
//! (`ConnectionQuality::loss_out`, the peer's count).
//!
//! The rule, for a loss rate `p` taken as independent per datagram:
//! - a data datagram of a group of `n` data and `m` parity datagrams is lost for good (left
//!   to KCP's retransmission) when it is lost and at least `m` of the group's other `n + m -
//!   1` datagrams are lost too: `residual(n, m, p) = p · P[Binomial(n + m - 1, p) ≥ m]`;
//! - a group closes with the fewest parity datagrams (up to the configured most) that bring
//!   its residual to [`TARGET_RESIDUAL`] or below, for the size it actually reached (a group
//!   closed at the end of a tick is often one or two datagrams at game rates);
//! - a full group's size is the one, up to the configured most, that needs the least parity
//!   per data datagram for that target;
//! - no parity at all while the loss is known, with 99 % confidence, to be under
//!   [`PAUSE_BELOW`] (1 %): there parity costs more than the few retransmissions it saves,
//!   and datagrams go out plain, without even the shard header;
//! - if even the most parity misses the target (very high loss), a group gets the most
//!   parity, and a full group is the size with the lowest residual among those whose
//!   parity is at most its data.
//!
//! `p` is the estimate plus half its margin (the margin being half the 99 % Wilson
//! interval), at most 0.5, so a young estimate errs toward parity; [`PRIOR_LOSS`] until
//! the first estimate.

use super::{MAX_DATA_SHARDS, MAX_PARITY_SHARDS};

/// The residual loss a group's parity aims for, per data datagram: 0.1 %, what keeps a
/// 30 Hz reliable stream's p99.9 delivery latency free of retransmission on a 5 % link.
pub const TARGET_RESIDUAL: f64 = 0.001;
/// The loss assumed before the peer's first report (a kcpnet peer reports once per ping
/// interval): 5 %.
pub const PRIOR_LOSS: f64 = 0.05;
/// Below this loss (the estimate's 99 % upper bound) a group gets no parity.
pub const PAUSE_BELOW: f64 = 0.01;
/// The highest loss the shape is computed for.
const MAX_LOSS: f64 = 0.5;

/// `P[Binomial(trials, p) ≥ at_least]`.
fn tail(trials: u32, p: f64, at_least: u32) -> f64 {
    if at_least == 0 {
        return 1.0;
    }
    if at_least > trials {
        return 0.0;
    }
    // 1 - P[X < at_least], terms built incrementally: C(n, i) p^i q^(n-i).
    let q = 1.0 - p;
    let mut term = q.powi(trials as i32);
    let mut below = 0.0;
    for i in 0..at_least {
        below += term;
        // term(i+1) = term(i) · (n - i) / (i + 1) · p / q
        if q > 0.0 {
            term *= f64::from(trials - i) / f64::from(i + 1) * p / q;
        }
    }
    (1.0 - below).clamp(0.0, 1.0)
}

/// The chance that a data datagram of a group of `n` data and `m` parity datagrams is lost
/// and cannot be rebuilt, at independent loss `p`.
pub fn residual(n: u8, m: u8, p: f64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    p * tail(u32::from(n) + u32::from(m) - 1, p, u32::from(m))
}

/// The loss rate the shape is computed for, from an estimate's value and margin (`None`:
/// no estimate yet); 0 when the loss is surely under [`PAUSE_BELOW`].
pub fn planning_loss(estimate: Option<(f32, f32)>) -> f64 {
    match estimate {
        Some((value, margin)) => {
            let (value, margin) = (f64::from(value), f64::from(margin));
            if value + margin <= PAUSE_BELOW {
                0.0
            } else {
                (value + margin / 2.0).clamp(0.0, MAX_LOSS)
            }
        }
        None => PRIOR_LOSS,
    }
}

/// Parity datagrams for a group that closed with `n` data datagrams: the fewest, up to
/// `max_m`, that meet [`TARGET_RESIDUAL`] at loss `p` (0 when `p` alone meets it), else
/// `max_m`.
pub fn parity_for(n: u8, max_m: u8, p: f64) -> u8 {
    (0..=max_m)
        .find(|&m| residual(n, m, p) <= TARGET_RESIDUAL)
        .unwrap_or(max_m)
}

/// The size of a full group (data datagrams, 1..=`max_k`) at loss `p`: among sizes whose
/// parity is at most their data (FEC never more than doubles a bulk transfer), the least
/// parity per data datagram that meets the target (ties: the smaller group, which rebuilds
/// sooner); when none does, the lowest residual among them with the most parity.
pub fn group_size(max_k: u8, max_m: u8, p: f64) -> u8 {
    let max_k = max_k.clamp(1, MAX_DATA_SHARDS as u8);
    let max_m = max_m.clamp(1, MAX_PARITY_SHARDS as u8);
    let mut best: Option<(f64, u8)> = None;
    for k in 1..=max_k {
        let m = parity_for(k, max_m, p);
        if m <= k && residual(k, m, p) <= TARGET_RESIDUAL {
            let per = f64::from(m) / f64::from(k);
            if best.is_none_or(|(b, _)| per < b - 1e-12) {
                best = Some((per, k));
            }
        }
    }
    if let Some((_, k)) = best {
        return k;
    }
    (1..=max_k)
        .filter(|&k| k >= max_m)
        .min_by(|&a, &b| residual(a, max_m, p).total_cmp(&residual(b, max_m, p)))
        .unwrap_or(max_k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binomial tail against a direct sum of terms.
    #[test]
    fn tail_matches_a_direct_sum() {
        fn choose(n: u32, k: u32) -> f64 {
            (0..k).fold(1.0, |acc, i| acc * f64::from(n - i) / f64::from(i + 1))
        }
        for n in 0..20u32 {
            for k in 0..=n + 1 {
                for p in [0.0f64, 0.01, 0.05, 0.2, 0.5] {
                    let direct: f64 = (k..=n)
                        .map(|i| choose(n, i) * p.powi(i as i32) * (1.0 - p).powi((n - i) as i32))
                        .sum();
                    let t = tail(n, p, k);
                    assert!(
                        (t - direct).abs() < 1e-9,
                        "n {n} k {k} p {p}: {t} vs {direct}"
                    );
                }
            }
        }
    }

    #[test]
    fn residual_of_known_shapes() {
        // One datagram and one copy: both lost.
        assert!((residual(1, 1, 0.05) - 0.0025).abs() < 1e-12);
        // No parity: the loss itself.
        assert!((residual(8, 0, 0.05) - 0.05).abs() < 1e-12);
        // 16 + 4 at 5 %: lost and ≥ 4 of the other 19 lost.
        let r = residual(16, 4, 0.05);
        assert!(r > 5e-4 && r < 8e-4, "{r}");
    }

    #[test]
    fn a_clean_link_gets_no_parity() {
        assert_eq!(parity_for(1, 4, 0.0), 0);
        assert_eq!(parity_for(16, 4, 0.0005), 0);
    }

    #[test]
    fn parity_grows_with_loss_and_group_size() {
        // A lone datagram on a 1 % link: one copy (1e-4); at 5 %: two (1.25e-4).
        assert_eq!(parity_for(1, 4, 0.01), 1);
        assert_eq!(parity_for(1, 4, 0.05), 2);
        let mut last = 0;
        for p in [0.002, 0.01, 0.05, 0.1, 0.2] {
            let m = parity_for(16, 4, p);
            assert!(m >= last, "p {p}: {m} < {last}");
            last = m;
        }
        assert!(parity_for(4, 4, 0.05) <= parity_for(16, 4, 0.05));
        // Beyond what 4 parity can do: the most.
        assert_eq!(parity_for(16, 4, 0.4), 4);
    }

    #[test]
    fn full_groups_take_the_cheapest_shape_that_meets_the_target() {
        let k = group_size(16, 4, 0.05);
        let m = parity_for(k, 4, 0.05);
        assert!(residual(k, m, 0.05) <= TARGET_RESIDUAL);
        for k2 in 1..=16u8 {
            let m2 = parity_for(k2, 4, 0.05);
            if residual(k2, m2, 0.05) <= TARGET_RESIDUAL {
                assert!(
                    f64::from(m) / f64::from(k) <= f64::from(m2) / f64::from(k2) + 1e-12,
                    "{k}+{m} costlier than {k2}+{m2}"
                );
            }
        }
        // Out of reach: a shape whose parity is at most its data.
        let k = group_size(16, 2, 0.4);
        assert!(k >= 2);
        // 20 %: only a lone datagram with 4 copies meets the target; a full group still
        // has no more parity than data.
        let k = group_size(16, 4, 0.2);
        assert!(k >= parity_for(k, 4, 0.2), "{k}");
        // Bounds respected, and nonsense bounds clamped.
        assert!(group_size(3, 1, 0.01) <= 3);
        assert!((1..=16).contains(&group_size(200, 9, 0.01)));
    }

    #[test]
    fn planning_loss_leans_on_the_margin_or_the_prior() {
        assert_eq!(planning_loss(None), PRIOR_LOSS);
        assert!((planning_loss(Some((0.05, 0.02))) - 0.06).abs() < 1e-6);
        assert_eq!(planning_loss(Some((0.9, 1.0))), 0.5);
        // Surely under 1 %: no parity.
        assert_eq!(planning_loss(Some((0.001, 0.005))), 0.0);
        assert_eq!(parity_for(1, 4, planning_loss(Some((0.001, 0.005)))), 0);
        // Nothing lost yet but few samples: still planned for.
        assert!(planning_loss(Some((0.0, 0.06))) > 0.02);
    }
}
