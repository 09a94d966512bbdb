//! Load-based degradation switch with hysteresis and a manual override.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use crate::error::ConfigError;

const AUTO: u8 = 0;
const FORCED_OFF: u8 = 1;
const FORCED_ON: u8 = 2;

/// The rejection while a [`Degradation`] switch is on: the service is shedding load (also
/// the error of the tower `DegradeLayer`, feature `tower`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Degraded;

impl fmt::Display for Degraded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("service degraded")
    }
}

impl std::error::Error for Degraded {}

/// Decides whether the service is degraded (refusing requests) from a load
/// signal such as [`RequestQueue::load`](crate::RequestQueue::load) or
/// [`CpuLoad::sample`](crate::CpuLoad::sample).
///
/// It enters degradation when `load >= threshold` and leaves it when
/// `load < threshold - hysteresis`, so a load hovering around the threshold
/// does not flap. An operator can force it either way. Atomics only.
///
/// # Example
/// ```
/// use seckill_flowcontrol::Degradation;
///
/// let switch = Degradation::new(0.9, 0.2); // enter at 0.9, leave below 0.7
/// assert!(!switch.evaluate(0.85));
/// assert!(switch.evaluate(0.95));
/// assert!(switch.evaluate(0.8)); // still degraded inside the band
/// assert!(!switch.evaluate(0.6));
/// switch.set_forced(Some(true)); // operator override
/// assert!(switch.evaluate(0.0));
/// switch.set_forced(None);
/// assert!(!switch.is_degraded());
/// ```
pub struct Degradation {
    /// `f64` bits, so the threshold can change at run time.
    threshold: AtomicU64,
    /// `f64` bits.
    exit_below: AtomicU64,
    degraded: AtomicBool,
    forced: AtomicU8,
}

impl Degradation {
    /// A switch entering at `threshold` and leaving below
    /// `threshold - hysteresis`.
    ///
    /// # Panics
    /// If the parameters are invalid; see [`Degradation::try_new`].
    pub fn new(threshold: f64, hysteresis: f64) -> Self {
        match Self::try_new(threshold, hysteresis) {
            Ok(d) => d,
            Err(e) => panic!("invalid Degradation: {e}"),
        }
    }

    /// Like [`Degradation::new`]; `threshold` must be finite and positive
    /// (loads above 1 are meaningful: a queue with waiters, CPU over the
    /// limit) and `hysteresis` in `0..threshold`.
    ///
    /// # Errors
    /// [`ConfigError::OutOfRange`] naming `threshold` or `hysteresis`.
    pub fn try_new(threshold: f64, hysteresis: f64) -> Result<Self, ConfigError> {
        if !(threshold.is_finite() && threshold > 0.0) {
            return Err(ConfigError::OutOfRange {
                name: "threshold",
                value: threshold,
                expected: "a finite number > 0",
            });
        }
        if !(0.0..threshold).contains(&hysteresis) {
            return Err(ConfigError::OutOfRange {
                name: "hysteresis",
                value: hysteresis,
                expected: "0 <= hysteresis < threshold",
            });
        }
        Ok(Self {
            threshold: AtomicU64::new(threshold.to_bits()),
            exit_below: AtomicU64::new((threshold - hysteresis).to_bits()),
            degraded: AtomicBool::new(false),
            forced: AtomicU8::new(AUTO),
        })
    }

    /// Feeds a load reading and returns whether requests must be refused.
    /// The automatic state follows the load even while forced, so clearing
    /// the override resumes from the current load. A NaN load changes
    /// nothing.
    pub fn evaluate(&self, load: f64) -> bool {
        let auto = if self.degraded.load(Ordering::Relaxed) {
            if load < f64::from_bits(self.exit_below.load(Ordering::Relaxed)) {
                self.degraded.store(false, Ordering::Relaxed);
                false
            } else {
                true
            }
        } else {
            let enter = load >= self.threshold();
            if enter {
                self.degraded.store(true, Ordering::Relaxed);
            }
            enter
        };
        self.forced().unwrap_or(auto)
    }

    /// Operator override: `Some(true)` always degraded, `Some(false)` never,
    /// `None` automatic.
    pub fn set_forced(&self, forced: Option<bool>) {
        let v = match forced {
            None => AUTO,
            Some(false) => FORCED_OFF,
            Some(true) => FORCED_ON,
        };
        self.forced.store(v, Ordering::Relaxed);
    }

    /// The operator override in force.
    pub fn forced(&self) -> Option<bool> {
        match self.forced.load(Ordering::Relaxed) {
            FORCED_OFF => Some(false),
            FORCED_ON => Some(true),
            _ => None,
        }
    }

    /// Whether requests must be refused now (override, else the last
    /// evaluation).
    pub fn is_degraded(&self) -> bool {
        self.forced()
            .unwrap_or_else(|| self.degraded.load(Ordering::Relaxed))
    }

    /// The entry threshold.
    pub fn threshold(&self) -> f64 {
        f64::from_bits(self.threshold.load(Ordering::Relaxed))
    }

    /// Changes the threshold at run time, keeping the hysteresis; the next
    /// [`evaluate`](Self::evaluate) uses it.
    ///
    /// # Errors
    /// [`ConfigError::OutOfRange`] when it is not a finite number above the hysteresis;
    /// nothing changes then.
    pub fn set_threshold(&self, threshold: f64) -> Result<(), ConfigError> {
        let hysteresis = self.threshold() - f64::from_bits(self.exit_below.load(Ordering::Relaxed));
        Self::try_new(threshold, hysteresis)?;
        self.threshold.store(threshold.to_bits(), Ordering::Relaxed);
        self.exit_below
            .store((threshold - hysteresis).to_bits(), Ordering::Relaxed);
        Ok(())
    }
}

impl fmt::Debug for Degradation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Degradation")
            .field("threshold", &self.threshold())
            .field(
                "exit_below",
                &f64::from_bits(self.exit_below.load(Ordering::Relaxed)),
            )
            .field("degraded", &self.is_degraded())
            .field("forced", &self.forced())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis() {
        let d = Degradation::new(0.75, 0.25);
        assert!(!d.evaluate(0.74));
        assert!(d.evaluate(0.75));
        assert!(d.evaluate(0.6), "stays degraded inside the band");
        assert!(d.evaluate(0.5), "0.5 is not below 0.75 - 0.25");
        assert!(!d.evaluate(0.49));
        assert!(!d.evaluate(0.74));
        assert!(!d.evaluate(f64::NAN));
        assert!(d.evaluate(2.0));
        assert!(d.evaluate(f64::NAN));
        assert!(d.is_degraded());
    }

    #[test]
    fn override_wins_and_auto_keeps_tracking() {
        let d = Degradation::new(0.8, 0.0);
        d.set_forced(Some(true));
        assert_eq!(d.forced(), Some(true));
        assert!(d.evaluate(0.0));
        assert!(d.is_degraded());
        d.set_forced(Some(false));
        assert!(!d.evaluate(0.99));
        assert!(!d.is_degraded());
        d.set_forced(None);
        assert!(d.is_degraded(), "auto state followed the 0.99 reading");
        assert!(!d.evaluate(0.1));
    }

    #[test]
    fn the_threshold_changes_at_run_time() {
        let d = Degradation::new(0.8, 0.1);
        assert!(!d.evaluate(0.6));
        d.set_threshold(0.5).unwrap();
        assert!(d.evaluate(0.6));
        // The hysteresis is kept: it leaves below 0.4.
        assert!(d.evaluate(0.45));
        assert!(!d.evaluate(0.39));
        assert!(d.set_threshold(0.05).is_err(), "below the hysteresis");
        assert!(d.set_threshold(f64::NAN).is_err());
        assert!(
            (d.threshold() - 0.5).abs() < 1e-9,
            "a refused change changes nothing"
        );
    }

    #[test]
    fn invalid_parameters() {
        assert!(Degradation::try_new(0.0, 0.0).is_err());
        assert!(Degradation::try_new(f64::NAN, 0.0).is_err());
        assert!(Degradation::try_new(0.5, 0.5).is_err());
        assert!(Degradation::try_new(0.5, -0.1).is_err());
        assert!(Degradation::try_new(1.5, 0.2).is_ok());
    }
}
