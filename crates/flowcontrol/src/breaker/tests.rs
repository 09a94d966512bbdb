//! Unit tests of the circuit breaker over a manual clock.

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
