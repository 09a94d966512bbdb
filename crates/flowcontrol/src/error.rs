//! Configuration errors.

/// An invalid configuration passed to a fallible constructor or
/// [`BreakerConfig::validate`](crate::BreakerConfig::validate).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A duration that must be positive was zero.
    #[error("`{name}` must be greater than zero")]
    ZeroDuration {
        /// The parameter's name.
        name: &'static str,
    },
    /// A count that must be positive was zero.
    #[error("`{name}` must be greater than zero")]
    ZeroCount {
        /// The parameter's name.
        name: &'static str,
    },
    /// A number was outside its allowed range (or was NaN).
    #[error("`{name}` must be in {expected}, got {value}")]
    OutOfRange {
        /// The parameter's name.
        name: &'static str,
        /// The rejected value.
        value: f64,
        /// The allowed range, for humans.
        expected: &'static str,
    },
    /// A parameter was invalid for another reason.
    #[error("`{name}` {reason}")]
    Invalid {
        /// The parameter's name.
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}
