//! What a link conditioner simulates: [`Conditions`] (with their validation),
//! [`GilbertElliott`] burst loss, and the [`Direction`] they apply to.

use std::time::Duration;

use crate::error::Error;

#[cfg(doc)]
use super::LinkConditioner;

/// The longest `latency`, `jitter` or `reorder_delay` [`Conditions::validate`]
/// accepts: one hour.
const MAX_DELAY: Duration = Duration::from_secs(3600);

/// Bursty loss: the Gilbert–Elliott two-state Markov model.
///
/// The link is either *good* or *bad*. Before each datagram the state may
/// change (good → bad with probability `p_good_to_bad`, bad → good with
/// probability `p_bad_to_good`); the datagram is then lost with probability
/// `loss_good` or `loss_bad` depending on the state. With `loss_good = 0` and
/// `loss_bad = 1`, losses come in bursts of mean length `1 / p_bad_to_good`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Probability (0.0..=1.0) of moving from the good to the bad state, per datagram.
    pub p_good_to_bad: f64,
    /// Probability (0.0..=1.0) of moving from the bad to the good state, per datagram.
    pub p_bad_to_good: f64,
    /// Loss probability (0.0..=1.0) in the good state.
    pub loss_good: f64,
    /// Loss probability (0.0..=1.0) in the bad state.
    pub loss_bad: f64,
}

impl GilbertElliott {
    /// A model with the given transition and loss probabilities.
    pub fn new(p_good_to_bad: f64, p_bad_to_good: f64, loss_good: f64, loss_bad: f64) -> Self {
        GilbertElliott {
            p_good_to_bad,
            p_bad_to_good,
            loss_good,
            loss_bad,
        }
    }

    /// The long-run loss rate of the model (from its stationary distribution;
    /// if both transition probabilities are zero the link stays good).
    pub fn average_loss(&self) -> f64 {
        let total = self.p_good_to_bad + self.p_bad_to_good;
        if total > 0.0 {
            let bad = self.p_good_to_bad / total;
            bad * self.loss_bad + (1.0 - bad) * self.loss_good
        } else {
            self.loss_good
        }
    }

    fn validate(&self) -> Result<(), Error> {
        check_probability("burst_loss.p_good_to_bad", self.p_good_to_bad)?;
        check_probability("burst_loss.p_bad_to_good", self.p_bad_to_good)?;
        check_probability("burst_loss.loss_good", self.loss_good)?;
        check_probability("burst_loss.loss_bad", self.loss_bad)
    }
}

/// Simulated network conditions for one direction (see [`LinkConditioner`]).
///
/// The default is a perfect link. A datagram's fate is decided when it enters
/// the conditioner:
///
/// 1. it is lost with probability `loss` (or per `burst_loss` when that is
///    `Some`, which replaces `loss`);
/// 2. with probability `duplicate`, a second copy is made;
/// 3. each copy is delayed by: the time the bandwidth cap needs to serialise
///    it behind the datagrams already on the link (if `bandwidth` is set; a
///    copy whose serialisation would finish more than 1 s from now is
///    dropped), plus `latency`, plus a uniform random `0..=jitter`; the
///    original is also held back by `reorder_delay` with probability `reorder`,
///    letting later datagrams overtake it.
///
/// Copies with zero total delay pass straight through; the others wait in a
/// delay queue and are released, in due-time order, once due.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conditions {
    /// Probability (0.0..=1.0) a datagram is dropped.
    pub loss: f64,
    /// Fixed one-way delay added to every datagram.
    pub latency: Duration,
    /// Extra delay, uniform in `0..=jitter`, drawn for every datagram (and
    /// for each copy separately).
    pub jitter: Duration,
    /// Probability (0.0..=1.0) a datagram is held back by an extra
    /// `reorder_delay`, so later ones overtake it.
    pub reorder: f64,
    /// The extra delay of reordered datagrams; must be non-zero when
    /// `reorder > 0`.
    pub reorder_delay: Duration,
    /// Probability (0.0..=1.0) a second copy of a datagram is delivered (with
    /// its own jitter).
    pub duplicate: f64,
    /// Bandwidth cap in payload bytes per second (IP/UDP headers not
    /// counted): datagrams leave one after another at this rate, and any that
    /// would wait more than 1 s are dropped. `None`: unlimited.
    pub bandwidth: Option<u64>,
    /// Bursty loss; when `Some`, replaces `loss`.
    pub burst_loss: Option<GilbertElliott>,
}

fn check_probability(name: &str, p: f64) -> Result<(), Error> {
    if p.is_finite() && (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "{name} must be a probability between 0.0 and 1.0, got {p}"
        )))
    }
}

fn check_delay(name: &str, d: Duration) -> Result<(), Error> {
    if d <= MAX_DELAY {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "{name} must be at most {MAX_DELAY:?}, got {d:?}"
        )))
    }
}

impl Conditions {
    /// Check every field: probabilities must be finite and within
    /// `0.0..=1.0`, delays at most one hour, `bandwidth` non-zero, and
    /// `reorder_delay` non-zero when `reorder > 0`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the first offending field.
    pub fn validate(&self) -> Result<(), Error> {
        check_probability("loss", self.loss)?;
        check_probability("reorder", self.reorder)?;
        check_probability("duplicate", self.duplicate)?;
        check_delay("latency", self.latency)?;
        check_delay("jitter", self.jitter)?;
        check_delay("reorder_delay", self.reorder_delay)?;
        if self.reorder > 0.0 && self.reorder_delay.is_zero() {
            return Err(Error::InvalidConfig(
                "reorder > 0 needs a non-zero reorder_delay".to_string(),
            ));
        }
        if self.bandwidth == Some(0) {
            return Err(Error::InvalidConfig(
                "bandwidth must be at least 1 byte per second (use loss 1.0 to drop everything)"
                    .to_string(),
            ));
        }
        if let Some(ge) = &self.burst_loss {
            ge.validate()?;
        }
        Ok(())
    }

    /// Whether these conditions leave every datagram untouched (no loss,
    /// delay, reordering, duplication, bandwidth cap or burst-loss model).
    pub fn is_perfect(&self) -> bool {
        self.loss == 0.0
            && self.latency.is_zero()
            && self.jitter.is_zero()
            && (self.reorder == 0.0 || self.reorder_delay.is_zero())
            && self.duplicate == 0.0
            && self.bandwidth.is_none()
            && self.burst_loss.is_none()
    }

    /// A perfect link except for random loss with probability `loss`.
    pub fn lossy(loss: f64) -> Self {
        Conditions {
            loss,
            ..Conditions::default()
        }
    }

    /// These conditions with random loss probability `loss`.
    pub fn with_loss(self, loss: f64) -> Self {
        Conditions { loss, ..self }
    }

    /// These conditions with a fixed one-way `latency`.
    pub fn with_latency(self, latency: Duration) -> Self {
        Conditions { latency, ..self }
    }

    /// These conditions with up to `jitter` of extra random delay.
    pub fn with_jitter(self, jitter: Duration) -> Self {
        Conditions { jitter, ..self }
    }

    /// These conditions where a datagram is held back by `delay` with
    /// probability `probability`.
    pub fn with_reorder(self, probability: f64, delay: Duration) -> Self {
        Conditions {
            reorder: probability,
            reorder_delay: delay,
            ..self
        }
    }

    /// These conditions where a datagram is duplicated with probability
    /// `probability`.
    pub fn with_duplicate(self, probability: f64) -> Self {
        Conditions {
            duplicate: probability,
            ..self
        }
    }

    /// These conditions with a bandwidth cap of `bytes_per_sec` payload bytes
    /// per second.
    pub fn with_bandwidth(self, bytes_per_sec: u64) -> Self {
        Conditions {
            bandwidth: Some(bytes_per_sec),
            ..self
        }
    }

    /// These conditions with bursty loss (replacing `loss`).
    pub fn with_burst_loss(self, model: GilbertElliott) -> Self {
        Conditions {
            burst_loss: Some(model),
            ..self
        }
    }
}

/// Which traffic a setting applies to, from the conditioned transport's
/// point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Datagrams we send.
    Send,
    /// Datagrams we receive.
    Receive,
    /// Both.
    Both,
}

impl Direction {
    pub(super) fn includes_send(self) -> bool {
        matches!(self, Direction::Send | Direction::Both)
    }

    pub(super) fn includes_receive(self) -> bool {
        matches!(self, Direction::Receive | Direction::Both)
    }
}
