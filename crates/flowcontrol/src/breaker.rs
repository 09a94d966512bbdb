//! Circuit breaker: closed → open → half-open → closed.
//!
//! Strategies that open a closed breaker (any may be combined):
//! - **consecutive failures**: `failure_threshold` failures in a row
//!   (a success resets the run);
//! - **failure ratio**: over the rolling `window`, once at least
//!   `minimum_calls` calls were recorded, `failures / calls >= failure_ratio`;
//! - **slow-call ratio**: likewise with calls that took at least
//!   `slow_call_duration`, against `slow_call_ratio`.
//!
//! An open breaker rejects every call for `recovery_timeout`, then turns
//! half-open and admits at most `half_open_max_probes` concurrent probes.
//! `success_threshold` successful probes close it; one failed probe (or,
//! with the slow-call strategy, one slow probe) opens it again.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::clock::{Clock, SystemClock, duration_to_nanos, now_nanos};
use crate::error::ConfigError;

/// The state of a [`CircuitBreaker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls are rejected until the recovery timeout has passed.
    Open,
    /// A limited number of probe calls test whether the dependency is back.
    HalfOpen,
}

/// The outcome of a call made under a [`CallPermit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// The dependency worked.
    Success,
    /// The dependency failed.
    Failure,
    /// Neither (for example a business-level rejection): counts as nothing,
    /// but frees a half-open probe slot.
    Ignored,
}

/// The rejection returned while the breaker does not admit calls (also the error of the
/// tower `BreakerLayer`, feature `tower`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerOpen {
    /// While open: the time left until the breaker turns half-open. While
    /// half-open with every probe slot taken: zero, as the state changes
    /// as soon as a probe finishes (callers should apply their own minimum).
    pub retry_after: Duration,
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("circuit breaker is open")
    }
}

impl std::error::Error for BreakerOpen {}

/// Configuration of a [`CircuitBreaker`]; see the module docs for the
/// strategies. [`Default`] gives the service's specification defaults.
///
/// With the `serde` feature it is the `circuit_breaker` section of a configuration file: the
/// keys are the field names, every key is optional (its default applies), unknown keys are
/// refused, durations are humantime strings (`"60s"`, `"200ms"`) and an absent strategy is
/// `null`. Check it with [`validate`](Self::validate), whose errors name the key.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize, serde::Serialize),
    serde(default, deny_unknown_fields)
)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (default 10); 0 disables
    /// this strategy.
    pub failure_threshold: u32,
    /// How long the breaker stays open (default 60 s), more than zero.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub recovery_timeout: Duration,
    /// Concurrent probes admitted while half-open (default 1), at least 1.
    pub half_open_max_probes: u32,
    /// Successful probes needed to close again (default 1), at least 1.
    pub success_threshold: u32,
    /// Rolling window of the ratio strategies (default 10 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub window: Duration,
    /// Calls needed in the window before a ratio applies (default 20).
    pub minimum_calls: u32,
    /// Open when `failures / calls >= failure_ratio` over the window
    /// (default `None`: off). In `0.0..=1.0`.
    pub failure_ratio: Option<f64>,
    /// A call at least this long is slow (default `None`).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub slow_call_duration: Option<Duration>,
    /// Open when `slow / calls >= slow_call_ratio` over the window (default
    /// `None`: off). In `0.0..=1.0`; needs `slow_call_duration`.
    pub slow_call_ratio: Option<f64>,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 10,
            recovery_timeout: Duration::from_secs(60),
            half_open_max_probes: 1,
            success_threshold: 1,
            window: Duration::from_secs(10),
            minimum_calls: 20,
            failure_ratio: None,
            slow_call_duration: None,
            slow_call_ratio: None,
        }
    }
}

/// Largest value of the packed probe and success counters.
const FIELD_MAX: u32 = (1 << 20) - 1;

impl BreakerConfig {
    /// Checks the configuration: a non-zero `recovery_timeout`, probes and success threshold
    /// in `1..=1_048_575`, ratios in `0.0..=1.0`, a non-zero window when a ratio is set, and
    /// `slow_call_duration` when `slow_call_ratio` is set.
    ///
    /// # Errors
    /// The first invalid field, named by its key ([`ConfigError::name`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.recovery_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration {
                name: "recovery_timeout",
            });
        }
        for (name, v) in [
            ("half_open_max_probes", self.half_open_max_probes),
            ("success_threshold", self.success_threshold),
        ] {
            if v == 0 {
                return Err(ConfigError::ZeroCount { name });
            }
            if v > FIELD_MAX {
                return Err(ConfigError::OutOfRange {
                    name,
                    value: f64::from(v),
                    expected: "1..=1048575",
                });
            }
        }
        for (name, r) in [
            ("failure_ratio", self.failure_ratio),
            ("slow_call_ratio", self.slow_call_ratio),
        ] {
            if let Some(r) = r {
                if !(0.0..=1.0).contains(&r) {
                    return Err(ConfigError::OutOfRange {
                        name,
                        value: r,
                        expected: "0.0..=1.0",
                    });
                }
                if self.window.is_zero() {
                    return Err(ConfigError::ZeroDuration { name: "window" });
                }
            }
        }
        if self.slow_call_ratio.is_some() && self.slow_call_duration.is_none() {
            return Err(ConfigError::Invalid {
                name: "slow_call_duration",
                reason: "must be set when slow_call_ratio is set",
            });
        }
        Ok(())
    }

    fn uses_window(&self) -> bool {
        self.failure_ratio.is_some() || self.slow_call_ratio.is_some()
    }
}

// The state word: state (2 bits) | probes in flight (20) | probe
// successes (20) | generation (22). Every transition bumps the generation,
// so permits from an earlier state are recognised and ignored.
const STATE_MASK: u64 = 0b11;
const PROBE_SHIFT: u32 = 2;
const SUCC_SHIFT: u32 = 22;
const GEN_SHIFT: u32 = 42;
const FIELD_MASK: u64 = FIELD_MAX as u64;
const PROBE_ONE: u64 = 1 << PROBE_SHIFT;
const SUCC_ONE: u64 = 1 << SUCC_SHIFT;

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;

fn state_of(w: u64) -> BreakerState {
    match w & STATE_MASK {
        OPEN => BreakerState::Open,
        HALF_OPEN => BreakerState::HalfOpen,
        _ => BreakerState::Closed,
    }
}

fn generation(w: u64) -> u64 {
    w >> GEN_SHIFT
}

fn probes(w: u64) -> u32 {
    ((w >> PROBE_SHIFT) & FIELD_MASK) as u32
}

fn successes(w: u64) -> u32 {
    ((w >> SUCC_SHIFT) & FIELD_MASK) as u32
}

/// The word of a fresh state after `w`: next generation, counters zero.
fn next(w: u64, state: u64) -> u64 {
    (generation(w).wrapping_add(1) << GEN_SHIFT) | state
}

type Listener = Box<dyn Fn(BreakerState, BreakerState) + Send + Sync>;

/// A circuit breaker.
///
/// [`try_acquire`](Self::try_acquire) returns a [`CallPermit`] to report
/// the call's outcome with; dropping the permit unreported counts as
/// [`CallOutcome::Ignored`]. State, generation and half-open probe counts
/// live in one `AtomicU64`: the closed path with the default
/// (consecutive-failure) strategy is a few atomic operations and reads the
/// clock only when the slow-call strategy is on. The ratio strategies add
/// a small mutex around the rolling counters, taken once per recorded
/// outcome.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use seckill_flowcontrol::{BreakerConfig, BreakerState, CircuitBreaker, ManualClock};
///
/// let clock = ManualClock::new();
/// let config = BreakerConfig { failure_threshold: 2, ..BreakerConfig::default() };
/// let breaker = CircuitBreaker::with_clock(config, clock.clone());
/// breaker.try_acquire().unwrap().failure();
/// breaker.try_acquire().unwrap().failure(); // two in a row: open
/// assert_eq!(breaker.state(), BreakerState::Open);
/// let open = breaker.try_acquire().unwrap_err();
/// assert_eq!(open.retry_after, Duration::from_secs(60)); // the recovery timeout
/// clock.advance(open.retry_after);
/// let probe = breaker.try_acquire().unwrap(); // half-open: one probe call
/// assert!(probe.is_probe());
/// probe.success();
/// assert_eq!(breaker.state(), BreakerState::Closed);
/// ```
pub struct CircuitBreaker<C: Clock = SystemClock> {
    word: AtomicU64,
    opened_at: AtomicU64,
    consecutive: AtomicU32,
    window: Option<Mutex<Rolling>>,
    listeners: RwLock<Vec<Listener>>,
    slow_nanos: Option<u64>,
    timeout: u64,
    config: BreakerConfig,
    clock: C,
}

impl CircuitBreaker<SystemClock> {
    /// A closed breaker on the system clock.
    ///
    /// # Panics
    /// If the configuration is invalid; see [`CircuitBreaker::try_new`].
    pub fn new(config: BreakerConfig) -> Self {
        Self::with_clock(config, SystemClock)
    }

    /// A closed breaker on the system clock, or the configuration error.
    ///
    /// # Errors
    /// As [`BreakerConfig::validate`].
    pub fn try_new(config: BreakerConfig) -> Result<Self, ConfigError> {
        Self::try_with_clock(config, SystemClock)
    }
}

impl<C: Clock> CircuitBreaker<C> {
    /// A closed breaker reading time from `clock`.
    ///
    /// # Panics
    /// If the configuration is invalid; see [`BreakerConfig::validate`].
    pub fn with_clock(config: BreakerConfig, clock: C) -> Self {
        match Self::try_with_clock(config, clock) {
            Ok(b) => b,
            Err(e) => panic!("invalid BreakerConfig: {e}"),
        }
    }

    /// A closed breaker reading time from `clock`, or the configuration
    /// error.
    ///
    /// # Errors
    /// As [`BreakerConfig::validate`].
    pub fn try_with_clock(config: BreakerConfig, clock: C) -> Result<Self, ConfigError> {
        config.validate()?;
        let slow_nanos = match (config.slow_call_ratio, config.slow_call_duration) {
            (Some(_), Some(d)) => Some(duration_to_nanos(d)),
            _ => None,
        };
        let window = config
            .uses_window()
            .then(|| Mutex::new(Rolling::new(duration_to_nanos(config.window))));
        Ok(Self {
            word: AtomicU64::new(CLOSED),
            opened_at: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            window,
            listeners: RwLock::new(Vec::new()),
            slow_nanos,
            timeout: duration_to_nanos(config.recovery_timeout),
            config,
            clock,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The current state. An open breaker whose timeout has passed reports
    /// `Open` until the next [`try_acquire`](Self::try_acquire) moves it on.
    pub fn state(&self) -> BreakerState {
        state_of(self.word.load(Ordering::Acquire))
    }

    /// Registers `f(from, to)`, called after every state change by the
    /// thread that made it. Callbacks must be quick and must not register
    /// further callbacks.
    pub fn on_state_change(&self, f: impl Fn(BreakerState, BreakerState) + Send + Sync + 'static) {
        self.listeners.write().push(Box::new(f));
    }

    /// Forces the breaker closed and clears its counters; outstanding
    /// permits are then ignored.
    pub fn reset(&self) {
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            match self.word.compare_exchange_weak(
                w,
                next(w, CLOSED),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => w = actual,
            }
        }
        self.entered(state_of(w), BreakerState::Closed);
    }

    /// Asks to make a call. Closed: always a permit. Open: rejected until
    /// the recovery timeout, after which the breaker turns half-open.
    /// Half-open: a permit while fewer than `half_open_max_probes` probes
    /// are in flight.
    pub fn try_acquire(&self) -> Result<CallPermit<'_, C>, BreakerOpen> {
        self.admit()
            .map(|word| self.permit(Handle::Borrowed(self), word))
    }

    /// Like [`try_acquire`](Self::try_acquire), but the permit owns a
    /// reference to the breaker, so it can travel into a `'static` future
    /// (a tower service's response future, a spawned task).
    pub fn try_acquire_owned(self: &Arc<Self>) -> Result<OwnedCallPermit<C>, BreakerOpen> {
        self.admit()
            .map(|word| self.permit(Handle::Shared(Arc::clone(self)), word))
    }

    /// The state word a permit is issued under, or the rejection.
    fn admit(&self) -> Result<u64, BreakerOpen> {
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            match w & STATE_MASK {
                CLOSED => return Ok(w),
                OPEN => {
                    let now = now_nanos(&self.clock);
                    let until = self
                        .opened_at
                        .load(Ordering::Acquire)
                        .saturating_add(self.timeout);
                    if now < until {
                        return Err(BreakerOpen {
                            retry_after: Duration::from_nanos(until - now),
                        });
                    }
                    let half = next(w, HALF_OPEN);
                    match self
                        .word
                        .compare_exchange(w, half, Ordering::AcqRel, Ordering::Acquire)
                    {
                        Ok(_) => {
                            self.entered(BreakerState::Open, BreakerState::HalfOpen);
                            w = half;
                        }
                        Err(actual) => w = actual,
                    }
                }
                _ => {
                    if probes(w) >= self.config.half_open_max_probes {
                        return Err(BreakerOpen {
                            retry_after: Duration::ZERO,
                        });
                    }
                    let taken = w + PROBE_ONE;
                    match self.word.compare_exchange_weak(
                        w,
                        taken,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return Ok(taken),
                        Err(actual) => w = actual,
                    }
                }
            }
        }
    }

    #[inline]
    fn permit<'a>(&self, breaker: Handle<'a, C>, word: u64) -> CallPermit<'a, C> {
        let start = if self.slow_nanos.is_some() {
            now_nanos(&self.clock)
        } else {
            0
        };
        CallPermit {
            breaker,
            word,
            start,
            done: false,
        }
    }

    fn record(&self, word: u64, start: u64, outcome: CallOutcome) {
        let slow = match self.slow_nanos {
            Some(limit) if outcome != CallOutcome::Ignored => {
                now_nanos(&self.clock).saturating_sub(start) >= limit
            }
            _ => false,
        };
        if word & STATE_MASK == HALF_OPEN {
            self.record_probe(word, outcome, slow);
        } else {
            self.record_closed(word, outcome, slow);
        }
    }

    fn record_closed(&self, word: u64, outcome: CallOutcome, slow: bool) {
        if outcome == CallOutcome::Ignored {
            return;
        }
        let current = self.word.load(Ordering::Acquire);
        if generation(current) != generation(word) || current & STATE_MASK != CLOSED {
            return;
        }
        let mut trip = false;
        if outcome == CallOutcome::Failure {
            let run = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
            trip = self.config.failure_threshold != 0 && run >= self.config.failure_threshold;
        } else if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Release);
        }
        if let Some(window) = &self.window {
            let now = now_nanos(&self.clock);
            let totals = window
                .lock()
                .record(now, outcome == CallOutcome::Failure, slow);
            trip |= totals.calls >= u64::from(self.config.minimum_calls.max(1))
                && (ratio_reached(totals.failures, totals.calls, self.config.failure_ratio)
                    || ratio_reached(totals.slow, totals.calls, self.config.slow_call_ratio));
        }
        if trip {
            self.open_from(word, BreakerState::Closed);
        }
    }

    fn record_probe(&self, word: u64, outcome: CallOutcome, slow: bool) {
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            if generation(w) != generation(word) || w & STATE_MASK != HALF_OPEN {
                return;
            }
            let failed =
                outcome == CallOutcome::Failure || (outcome == CallOutcome::Success && slow);
            if failed {
                self.open_from(w, BreakerState::HalfOpen);
                return;
            }
            let new = if outcome == CallOutcome::Ignored {
                w - PROBE_ONE
            } else if successes(w) + 1 >= self.config.success_threshold {
                next(w, CLOSED)
            } else {
                w - PROBE_ONE + SUCC_ONE
            };
            match self
                .word
                .compare_exchange_weak(w, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if new & STATE_MASK == CLOSED {
                        self.entered(BreakerState::HalfOpen, BreakerState::Closed);
                    }
                    return;
                }
                Err(actual) => w = actual,
            }
        }
    }

    /// Opens the breaker if it is still in the state (and generation) of `word`.
    fn open_from(&self, word: u64, from: BreakerState) {
        let mut w = self.word.load(Ordering::Acquire);
        while generation(w) == generation(word) && state_of(w) == from {
            // Published before the state word, so whoever sees Open sees it.
            self.opened_at
                .store(now_nanos(&self.clock), Ordering::Release);
            match self.word.compare_exchange_weak(
                w,
                next(w, OPEN),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.entered(from, BreakerState::Open);
                    return;
                }
                Err(actual) => w = actual,
            }
        }
    }

    /// Side effects of a transition made by this thread.
    fn entered(&self, from: BreakerState, to: BreakerState) {
        if to == BreakerState::Closed {
            self.consecutive.store(0, Ordering::Release);
            if let Some(window) = &self.window {
                window.lock().clear();
            }
        }
        if from != to {
            for f in self.listeners.read().iter() {
                f(from, to);
            }
        }
    }
}

fn ratio_reached(part: u64, calls: u64, ratio: Option<f64>) -> bool {
    match ratio {
        Some(r) if calls > 0 => part as f64 / calls as f64 >= r,
        _ => false,
    }
}

impl<C: Clock> fmt::Debug for CircuitBreaker<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("state", &self.state())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Permission to make one call; report its outcome with
/// [`success`](Self::success), [`failure`](Self::failure) or
/// [`record`](Self::record). Dropping it unreported counts as
/// [`CallOutcome::Ignored`]. The call's duration (for the slow-call
/// strategy) runs from `try_acquire` to the report.
///
/// [`CircuitBreaker::try_acquire`] lends the breaker to the permit;
/// [`CircuitBreaker::try_acquire_owned`] gives it an `Arc` of the breaker
/// ([`OwnedCallPermit`], `'static`).
#[must_use = "report the call's outcome, or drop the permit to ignore it"]
pub struct CallPermit<'a, C: Clock = SystemClock> {
    breaker: Handle<'a, C>,
    word: u64,
    start: u64,
    done: bool,
}

/// A [`CallPermit`] holding an `Arc` of its breaker, so it can outlive the borrow; see
/// [`CircuitBreaker::try_acquire_owned`].
pub type OwnedCallPermit<C = SystemClock> = CallPermit<'static, C>;

/// How a permit holds its breaker.
enum Handle<'a, C: Clock> {
    Borrowed(&'a CircuitBreaker<C>),
    Shared(Arc<CircuitBreaker<C>>),
}

impl<C: Clock> std::ops::Deref for Handle<'_, C> {
    type Target = CircuitBreaker<C>;

    #[inline]
    fn deref(&self) -> &CircuitBreaker<C> {
        match self {
            Self::Borrowed(b) => b,
            Self::Shared(b) => b,
        }
    }
}

impl<C: Clock> CallPermit<'_, C> {
    /// The call succeeded.
    pub fn success(self) {
        self.record(CallOutcome::Success);
    }

    /// The call failed.
    pub fn failure(self) {
        self.record(CallOutcome::Failure);
    }

    /// Reports `outcome`.
    pub fn record(mut self, outcome: CallOutcome) {
        self.done = true;
        self.breaker.record(self.word, self.start, outcome);
    }

    /// Whether this permit is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.word & STATE_MASK == HALF_OPEN
    }
}

impl<C: Clock> Drop for CallPermit<'_, C> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker
                .record(self.word, self.start, CallOutcome::Ignored);
        }
    }
}

impl<C: Clock> fmt::Debug for CallPermit<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallPermit")
            .field("probe", &self.is_probe())
            .field("owned", &matches!(self.breaker, Handle::Shared(_)))
            .finish_non_exhaustive()
    }
}

/// Rolling call counters: 10 sub-buckets over the window.
#[derive(Debug)]
struct Rolling {
    width: u64,
    slots: [Slot; ROLLING_SLOTS],
}

const ROLLING_SLOTS: usize = 10;

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    idx: u64,
    calls: u64,
    failures: u64,
    slow: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    calls: u64,
    failures: u64,
    slow: u64,
}

impl Rolling {
    fn new(window: u64) -> Self {
        Self {
            width: window.div_ceil(ROLLING_SLOTS as u64).max(1),
            slots: [Slot {
                idx: u64::MAX,
                ..Slot::default()
            }; ROLLING_SLOTS],
        }
    }

    fn clear(&mut self) {
        for s in &mut self.slots {
            s.idx = u64::MAX;
        }
    }

    fn record(&mut self, now: u64, failure: bool, slow: bool) -> Totals {
        let idx = now / self.width;
        let slot = &mut self.slots[(idx % ROLLING_SLOTS as u64) as usize];
        if slot.idx != idx {
            *slot = Slot {
                idx,
                ..Slot::default()
            };
        }
        slot.calls += 1;
        slot.failures += u64::from(failure);
        slot.slow += u64::from(slow);
        let oldest = idx.saturating_sub(ROLLING_SLOTS as u64 - 1);
        self.slots
            .iter()
            .filter(|s| s.idx != u64::MAX && s.idx >= oldest && s.idx <= idx)
            .fold(Totals::default(), |t, s| Totals {
                calls: t.calls + s.calls,
                failures: t.failures + s.failures,
                slow: t.slow + s.slow,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::Arc;

    fn breaker(config: BreakerConfig) -> (CircuitBreaker<ManualClock>, ManualClock) {
        let clock = ManualClock::new();
        (CircuitBreaker::with_clock(config, clock.clone()), clock)
    }

    #[test]
    fn defaults_match_spec() {
        let c = BreakerConfig::default();
        assert_eq!(c.failure_threshold, 10);
        assert_eq!(c.recovery_timeout, Duration::from_secs(60));
        assert_eq!((c.half_open_max_probes, c.success_threshold), (1, 1));
        assert_eq!(c.window, Duration::from_secs(10));
        assert_eq!(c.minimum_calls, 20);
        assert!(c.failure_ratio.is_none() && c.slow_call_duration.is_none());
        assert!(c.slow_call_ratio.is_none());
        assert!(c.validate().is_ok());
    }

    #[cfg(feature = "serde")]
    #[test]
    fn config_reads_like_its_configuration_section() {
        let parse = |json: &str| serde_json::from_str::<BreakerConfig>(json);
        assert_eq!(parse("{}").unwrap(), BreakerConfig::default());
        let c = parse(
            r#"{"failure_threshold": 3, "recovery_timeout": "30s", "window": "5s",
                "slow_call_duration": "200ms", "slow_call_ratio": 0.8, "failure_ratio": null}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            BreakerConfig {
                failure_threshold: 3,
                recovery_timeout: Duration::from_secs(30),
                window: Duration::from_secs(5),
                slow_call_duration: Some(Duration::from_millis(200)),
                slow_call_ratio: Some(0.8),
                ..BreakerConfig::default()
            }
        );
        assert!(c.validate().is_ok());
        let unknown = parse(r#"{"failure_treshold": 3}"#).unwrap_err();
        assert!(
            unknown.to_string().contains("failure_treshold"),
            "{unknown}"
        );
        assert!(
            parse(r#"{"recovery_timeout": 60}"#).is_err(),
            "durations are strings"
        );
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""slow_call_duration":"200ms""#), "{json}");
        assert!(json.contains(r#""failure_ratio":null"#), "{json}");
        assert_eq!(parse(&json).unwrap(), c);
    }

    #[test]
    fn validate_names_the_key() {
        let bad = |c: BreakerConfig| c.validate().unwrap_err().name();
        let zero_recovery = BreakerConfig {
            recovery_timeout: Duration::ZERO,
            ..Default::default()
        };
        assert_eq!(bad(zero_recovery), "recovery_timeout");
        let no_probes = BreakerConfig {
            half_open_max_probes: 0,
            ..Default::default()
        };
        assert_eq!(bad(no_probes), "half_open_max_probes");
        let no_successes = BreakerConfig {
            success_threshold: 0,
            ..Default::default()
        };
        assert_eq!(bad(no_successes), "success_threshold");
        let ratio = BreakerConfig {
            failure_ratio: Some(-0.1),
            ..Default::default()
        };
        assert_eq!(bad(ratio), "failure_ratio");
        let no_duration = BreakerConfig {
            slow_call_ratio: Some(0.5),
            ..Default::default()
        };
        assert_eq!(bad(no_duration), "slow_call_duration");
        assert!(
            CircuitBreaker::try_new(BreakerConfig {
                recovery_timeout: Duration::ZERO,
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn validate_rejects_bad_values() {
        let bad = |c: BreakerConfig| c.validate().unwrap_err();
        assert!(matches!(
            bad(BreakerConfig {
                failure_ratio: Some(1.5),
                ..Default::default()
            }),
            ConfigError::OutOfRange {
                name: "failure_ratio",
                ..
            }
        ));
        assert!(matches!(
            bad(BreakerConfig {
                slow_call_ratio: Some(f64::NAN),
                slow_call_duration: Some(Duration::from_secs(1)),
                ..Default::default()
            }),
            ConfigError::OutOfRange { .. }
        ));
        assert_eq!(
            bad(BreakerConfig {
                half_open_max_probes: 0,
                ..Default::default()
            }),
            ConfigError::ZeroCount {
                name: "half_open_max_probes"
            }
        );
        assert_eq!(
            bad(BreakerConfig {
                failure_ratio: Some(0.5),
                window: Duration::ZERO,
                ..Default::default()
            }),
            ConfigError::ZeroDuration { name: "window" }
        );
        assert!(
            CircuitBreaker::try_new(BreakerConfig {
                slow_call_ratio: Some(0.5),
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn consecutive_failures_open_and_success_resets_the_run() {
        let (b, clock) = breaker(BreakerConfig {
            failure_threshold: 3,
            recovery_timeout: Duration::from_secs(5),
            ..Default::default()
        });
        b.try_acquire().unwrap().failure();
        b.try_acquire().unwrap().failure();
        b.try_acquire().unwrap().success();
        b.try_acquire().unwrap().failure();
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Closed);
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(
            b.try_acquire().unwrap_err().retry_after,
            Duration::from_secs(5)
        );
        clock.advance(Duration::from_secs(4));
        assert_eq!(
            b.try_acquire().unwrap_err().retry_after,
            Duration::from_secs(1)
        );
        clock.advance(Duration::from_secs(1));
        let probe = b.try_acquire().unwrap();
        assert!(probe.is_probe());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.try_acquire().unwrap_err().retry_after, Duration::ZERO);
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn failed_probe_reopens_and_ignored_frees_the_slot() {
        let (b, clock) = breaker(BreakerConfig {
            failure_threshold: 1,
            recovery_timeout: Duration::from_secs(1),
            success_threshold: 2,
            ..Default::default()
        });
        b.try_acquire().unwrap().failure();
        clock.advance(Duration::from_secs(1));
        let p = b.try_acquire().unwrap();
        drop(p); // ignored: frees the slot, counts nothing
        b.try_acquire().unwrap().record(CallOutcome::Ignored);
        b.try_acquire().unwrap().success();
        assert_eq!(b.state(), BreakerState::HalfOpen, "needs two successes");
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(
            b.try_acquire().unwrap_err().retry_after,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn ignored_does_not_count_and_zero_threshold_disables() {
        let (b, _clock) = breaker(BreakerConfig {
            failure_threshold: 2,
            ..Default::default()
        });
        b.try_acquire().unwrap().failure();
        for _ in 0..10 {
            b.try_acquire().unwrap().record(CallOutcome::Ignored);
        }
        b.try_acquire().unwrap().failure();
        assert_eq!(
            b.state(),
            BreakerState::Open,
            "ignored calls do not break the run"
        );

        let (b, _clock) = breaker(BreakerConfig {
            failure_threshold: 0,
            ..Default::default()
        });
        for _ in 0..1000 {
            b.try_acquire().unwrap().failure();
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn failure_ratio_waits_for_minimum_calls() {
        let (b, clock) = breaker(BreakerConfig {
            failure_threshold: 0,
            failure_ratio: Some(0.5),
            minimum_calls: 10,
            ..Default::default()
        });
        for _ in 0..9 {
            b.try_acquire().unwrap().failure();
        }
        assert_eq!(b.state(), BreakerState::Closed, "below minimum_calls");
        b.try_acquire().unwrap().success();
        assert_eq!(b.state(), BreakerState::Open, "9/10 failed");

        // Old failures slide out of the window.
        b.reset();
        for _ in 0..9 {
            b.try_acquire().unwrap().failure();
        }
        clock.advance(Duration::from_secs(11));
        for _ in 0..9 {
            b.try_acquire().unwrap().success();
        }
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Closed, "1/10 in the window");
    }

    #[test]
    fn slow_calls_open_and_slow_probe_fails() {
        let (b, clock) = breaker(BreakerConfig {
            failure_threshold: 0,
            minimum_calls: 4,
            slow_call_duration: Some(Duration::from_millis(100)),
            slow_call_ratio: Some(0.5),
            recovery_timeout: Duration::from_secs(1),
            ..Default::default()
        });
        for i in 0..4 {
            let p = b.try_acquire().unwrap();
            if i % 2 == 0 {
                clock.advance(Duration::from_millis(100));
            }
            p.success();
            if i < 3 {
                assert_eq!(b.state(), BreakerState::Closed);
            }
        }
        assert_eq!(b.state(), BreakerState::Open, "2 of 4 calls slow");
        clock.advance(Duration::from_secs(1));
        let probe = b.try_acquire().unwrap();
        clock.advance(Duration::from_millis(150));
        probe.success();
        assert_eq!(
            b.state(),
            BreakerState::Open,
            "slow probe counts as failure"
        );
    }

    #[test]
    fn state_change_callback_sees_every_transition() {
        let (b, clock) = breaker(BreakerConfig {
            failure_threshold: 1,
            recovery_timeout: Duration::from_secs(1),
            ..Default::default()
        });
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        b.on_state_change(move |from, to| s.lock().push((from, to)));
        b.try_acquire().unwrap().failure();
        clock.advance(Duration::from_secs(1));
        b.try_acquire().unwrap().success();
        b.try_acquire().unwrap().failure();
        b.reset();
        b.reset();
        use BreakerState::*;
        assert_eq!(
            *seen.lock(),
            vec![
                (Closed, Open),
                (Open, HalfOpen),
                (HalfOpen, Closed),
                (Closed, Open),
                (Open, Closed)
            ]
        );
    }

    #[test]
    fn stale_permits_are_ignored() {
        let (b, clock) = breaker(BreakerConfig {
            failure_threshold: 1,
            recovery_timeout: Duration::from_secs(1),
            half_open_max_probes: 2,
            ..Default::default()
        });
        let old = b.try_acquire().unwrap();
        b.try_acquire().unwrap().failure();
        clock.advance(Duration::from_secs(1));
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err(), "two probes at most");
        old.failure(); // from the closed era: ignored
        assert_eq!(b.state(), BreakerState::HalfOpen);
        p1.success();
        assert_eq!(b.state(), BreakerState::Closed);
        p2.failure(); // from the half-open era: ignored
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn owned_permits_report_like_borrowed_ones() {
        let clock = ManualClock::new();
        let b = Arc::new(CircuitBreaker::with_clock(
            BreakerConfig {
                failure_threshold: 2,
                ..BreakerConfig::default()
            },
            clock.clone(),
        ));
        let p = b.try_acquire_owned().unwrap();
        assert!(!p.is_probe());
        p.failure();
        drop(b.try_acquire_owned().unwrap()); // ignored: the run continues
        let p = std::thread::spawn({
            let b = Arc::clone(&b);
            move || b.try_acquire_owned().unwrap()
        })
        .join()
        .unwrap();
        p.record(CallOutcome::Failure);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.try_acquire_owned().is_err());
    }
}
