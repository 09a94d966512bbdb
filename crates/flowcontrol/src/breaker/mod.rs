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

mod config;

pub use config::BreakerConfig;
use config::FIELD_MAX;

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
mod tests;
