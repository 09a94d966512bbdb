//! [`RabbitSettings`]: the configuration of a [`RabbitBroker`](super::RabbitBroker).

use std::time::Duration;

use crate::{MqError, Topic};

/// Settings of a [`RabbitBroker`](crate::RabbitBroker).
///
/// With the `serde` feature it reads from a configuration section (`mq.rabbitmq` of the
/// server's YAML): every field optional (the default fills it in), unknown keys refused,
/// durations as humantime strings (`"10s"`); [`RabbitSettings::groups`] is not read, the
/// program names its groups. [`RabbitSettings::validate`] checks it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct RabbitSettings {
    /// AMQP URL, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub url: String,
    /// Prefix of the exchange and queue names.
    pub prefix: String,
    /// Unacknowledged messages a subscription may hold.
    pub prefetch: u16,
    /// Failed handlings (`nack` with requeue) before a message goes to the dead-letter queue.
    pub max_attempts: u32,
    /// How long a publish waits for its confirms.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub confirm_timeout: Duration,
    /// Groups whose queues are declared at connect: `(topic, group)`.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub groups: Vec<(Topic, String)>,
}

impl Default for RabbitSettings {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            prefix: "seckill".into(),
            prefetch: 256,
            max_attempts: 5,
            confirm_timeout: Duration::from_secs(10),
            groups: Vec::new(),
        }
    }
}

impl RabbitSettings {
    /// Checks the settings, field by field in declaration order;
    /// [`RabbitBroker::connect`](crate::RabbitBroker::connect) does too.
    ///
    /// # Errors
    /// [`MqError::InvalidConfig`] for the first invalid field, its `key` the field's name:
    /// `url` (not `amqp://` or `amqps://`), `prefix` (empty), `prefetch` and `max_attempts`
    /// (0), `confirm_timeout` (0s).
    pub fn validate(&self) -> Result<(), MqError> {
        let invalid = crate::error::invalid_config;
        if !(self.url.starts_with("amqp://") || self.url.starts_with("amqps://")) {
            return invalid("url", "must start with amqp:// or amqps://");
        }
        if self.prefix.is_empty() {
            return invalid("prefix", "must be non-empty");
        }
        if self.prefetch == 0 {
            return invalid("prefetch", "must be at least 1");
        }
        if self.max_attempts == 0 {
            return invalid("max_attempts", "must be at least 1");
        }
        if self.confirm_timeout.is_zero() {
            return invalid("confirm_timeout", "must be longer than 0s");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(settings: &RabbitSettings) -> Option<&'static str> {
        match settings.validate() {
            Ok(()) => None,
            Err(MqError::InvalidConfig { key, .. }) => Some(key),
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(key_of(&RabbitSettings::default()), None);
        let tls = RabbitSettings {
            url: "amqps://user:secret@mq.example:5671/prod".into(),
            ..RabbitSettings::default()
        };
        assert_eq!(key_of(&tls), None);
    }

    #[test]
    fn each_rule_names_its_key() {
        let d = RabbitSettings::default;
        let cases = [
            (
                RabbitSettings {
                    url: "http://127.0.0.1:5672".into(),
                    ..d()
                },
                "url",
            ),
            (
                RabbitSettings {
                    prefix: String::new(),
                    ..d()
                },
                "prefix",
            ),
            (RabbitSettings { prefetch: 0, ..d() }, "prefetch"),
            (
                RabbitSettings {
                    max_attempts: 0,
                    ..d()
                },
                "max_attempts",
            ),
            (
                RabbitSettings {
                    confirm_timeout: Duration::ZERO,
                    ..d()
                },
                "confirm_timeout",
            ),
        ];
        for (settings, key) in cases {
            assert_eq!(key_of(&settings), Some(key), "{settings:?}");
        }
        let err = RabbitSettings { prefetch: 0, ..d() }
            .validate()
            .unwrap_err();
        assert_eq!(err.to_string(), "invalid prefetch: must be at least 1");
    }

    #[cfg(feature = "serde")]
    #[test]
    fn reads_a_partial_section_with_humantime_durations() {
        let settings: RabbitSettings = serde_json::from_value(serde_json::json!({
            "url": "amqp://u:p@rabbit:5672/%2f",
            "prefetch": 64,
            "confirm_timeout": "2s 500ms",
        }))
        .unwrap();
        assert_eq!(
            settings,
            RabbitSettings {
                url: "amqp://u:p@rabbit:5672/%2f".into(),
                prefetch: 64,
                confirm_timeout: Duration::from_millis(2500),
                ..RabbitSettings::default()
            }
        );
        let empty: RabbitSettings = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(empty, RabbitSettings::default());
    }

    #[cfg(feature = "serde")]
    #[test]
    fn refuses_unknown_keys_and_the_groups() {
        for key in ["prefech", "groups"] {
            let err = serde_json::from_value::<RabbitSettings>(serde_json::json!({ key: 1 }))
                .unwrap_err();
            assert!(
                err.to_string().contains(&format!("unknown field `{key}`")),
                "{err}"
            );
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serializes_without_the_groups() {
        let settings = RabbitSettings {
            groups: vec![(Topic::OrderCreated, "orders".into())],
            ..RabbitSettings::default()
        };
        let value = serde_json::to_value(&settings).unwrap();
        assert_eq!(value["confirm_timeout"], "10s");
        assert!(value.get("groups").is_none());
        assert_eq!(
            serde_json::from_value::<RabbitSettings>(value).unwrap(),
            RabbitSettings::default()
        );
    }
}
