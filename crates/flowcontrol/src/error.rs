//! [`ConfigError`]: invalid configuration.

/// An invalid configuration passed to a fallible constructor or a `validate` method
/// ([`BreakerConfig::validate`](crate::BreakerConfig::validate)). [`name`](Self::name) is the
/// offending parameter, spelled as its configuration key (`failure_threshold`, `window`…).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
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

impl ConfigError {
    /// The offending parameter's name (its configuration key).
    pub fn name(&self) -> &'static str {
        match self {
            Self::ZeroDuration { name }
            | Self::ZeroCount { name }
            | Self::OutOfRange { name, .. }
            | Self::Invalid { name, .. } => name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_is_the_key() {
        let e = ConfigError::OutOfRange {
            name: "failure_ratio",
            value: 2.0,
            expected: "0.0..=1.0",
        };
        assert_eq!(e.name(), "failure_ratio");
        assert_eq!(e.to_string(), "`failure_ratio` must be in 0.0..=1.0, got 2");
        assert_eq!(ConfigError::ZeroCount { name: "x" }.name(), "x");
    }
}
