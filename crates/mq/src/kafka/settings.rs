//! [`KafkaSettings`]: the configuration of a [`KafkaBroker`](super::KafkaBroker).

use std::time::Duration;

use crate::MqError;

/// Settings of a [`KafkaBroker`](crate::KafkaBroker).
///
/// With the `serde` feature it reads from a configuration section (`mq.kafka` of the server's
/// YAML): every field optional (the default fills it in), unknown keys refused, durations as
/// humantime strings (`"5ms"`, `"10s"`). [`KafkaSettings::validate`] checks it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct KafkaSettings {
    /// Bootstrap brokers, as `host:port`.
    pub brokers: Vec<String>,
    /// Put before every topic name: separates deployments (and tests) sharing a cluster.
    pub topic_prefix: String,
    /// Partitions of the topics [`KafkaBroker::connect`](crate::KafkaBroker::connect)
    /// creates; topics that exist keep theirs.
    pub partitions: i32,
    /// How long a publish waits for others to share its partition's batch.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub linger: Duration,
    /// Payload bytes of one produce batch per partition (a larger single message goes alone).
    pub max_batch_bytes: usize,
    /// Failed handlings (nack with requeue, delivery dropped unsettled) after which a message is
    /// dead-lettered.
    pub max_attempts: u32,
    /// Time-to-live of a partition lease; the owner renews it every third of it.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub lease_ttl: Duration,
    /// How often a partition this instance does not own is tried again.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub lease_retry: Duration,
    /// Upper bound of the record bytes one fetch returns.
    pub fetch_max_bytes: i32,
    /// How long a fetch waits on the broker for new records.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub fetch_max_wait: Duration,
    /// Fetched records waiting for a consumer, per partition, above which fetching pauses.
    pub max_buffered: usize,
    /// Deadline of one request to Kafka, retries included.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub request_timeout: Duration,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: vec!["127.0.0.1:9092".to_owned()],
            topic_prefix: String::new(),
            partitions: 4,
            linger: Duration::from_millis(5),
            max_batch_bytes: 512 * 1024,
            max_attempts: 5,
            lease_ttl: Duration::from_secs(10),
            lease_retry: Duration::from_secs(3),
            fetch_max_bytes: 1024 * 1024,
            fetch_max_wait: Duration::from_millis(200),
            max_buffered: 1000,
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl KafkaSettings {
    /// Checks the settings, field by field in declaration order;
    /// [`KafkaBroker::connect`](crate::KafkaBroker::connect) does too.
    ///
    /// # Errors
    /// [`MqError::InvalidConfig`] for the first invalid field, its `key` the field's name:
    /// `brokers` (empty, or an entry not `host:port`), `partitions` (outside 1 to 1024),
    /// `linger` (over 1s), `max_batch_bytes` and `max_attempts` (0), `lease_ttl` and
    /// `lease_retry` (0s), `fetch_max_bytes` and `max_buffered` (below 1), `request_timeout`
    /// (0s).
    pub fn validate(&self) -> Result<(), MqError> {
        let invalid = crate::error::invalid_config;
        if self.brokers.is_empty() || self.brokers.iter().any(|b| !b.contains(':')) {
            return invalid("brokers", "must list host:port addresses");
        }
        if !(1..=1024).contains(&self.partitions) {
            return invalid("partitions", "must be between 1 and 1024");
        }
        if self.linger > Duration::from_secs(1) {
            return invalid("linger", "must be at most 1s");
        }
        if self.max_batch_bytes == 0 {
            return invalid("max_batch_bytes", "must be at least 1");
        }
        if self.max_attempts == 0 {
            return invalid("max_attempts", "must be at least 1");
        }
        if self.lease_ttl.is_zero() {
            return invalid("lease_ttl", "must be longer than 0s");
        }
        if self.lease_retry.is_zero() {
            return invalid("lease_retry", "must be longer than 0s");
        }
        if self.fetch_max_bytes < 1 {
            return invalid("fetch_max_bytes", "must be at least 1");
        }
        if self.max_buffered == 0 {
            return invalid("max_buffered", "must be at least 1");
        }
        if self.request_timeout.is_zero() {
            return invalid("request_timeout", "must be longer than 0s");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(settings: &KafkaSettings) -> Option<&'static str> {
        match settings.validate() {
            Ok(()) => None,
            Err(MqError::InvalidConfig { key, .. }) => Some(key),
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(key_of(&KafkaSettings::default()), None);
    }

    #[test]
    fn each_rule_names_its_key() {
        let d = KafkaSettings::default;
        let cases = [
            (
                KafkaSettings {
                    brokers: vec![],
                    ..d()
                },
                "brokers",
            ),
            (
                KafkaSettings {
                    brokers: vec!["k1:9092".into(), "k2".into()],
                    ..d()
                },
                "brokers",
            ),
            (
                KafkaSettings {
                    partitions: 0,
                    ..d()
                },
                "partitions",
            ),
            (
                KafkaSettings {
                    partitions: 1025,
                    ..d()
                },
                "partitions",
            ),
            (
                KafkaSettings {
                    linger: Duration::from_millis(1001),
                    ..d()
                },
                "linger",
            ),
            (
                KafkaSettings {
                    max_batch_bytes: 0,
                    ..d()
                },
                "max_batch_bytes",
            ),
            (
                KafkaSettings {
                    max_attempts: 0,
                    ..d()
                },
                "max_attempts",
            ),
            (
                KafkaSettings {
                    lease_ttl: Duration::ZERO,
                    ..d()
                },
                "lease_ttl",
            ),
            (
                KafkaSettings {
                    lease_retry: Duration::ZERO,
                    ..d()
                },
                "lease_retry",
            ),
            (
                KafkaSettings {
                    fetch_max_bytes: 0,
                    ..d()
                },
                "fetch_max_bytes",
            ),
            (
                KafkaSettings {
                    max_buffered: 0,
                    ..d()
                },
                "max_buffered",
            ),
            (
                KafkaSettings {
                    request_timeout: Duration::ZERO,
                    ..d()
                },
                "request_timeout",
            ),
        ];
        for (settings, key) in cases {
            assert_eq!(key_of(&settings), Some(key), "{settings:?}");
        }
        let edges = KafkaSettings {
            partitions: 1024,
            linger: Duration::from_secs(1),
            brokers: vec!["k1:9092".into(), "[::1]:9092".into()],
            ..d()
        };
        assert_eq!(key_of(&edges), None);
    }

    #[test]
    fn the_message_names_the_key_and_the_reason() {
        let err = KafkaSettings {
            partitions: 0,
            ..KafkaSettings::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid partitions: must be between 1 and 1024"
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn reads_a_partial_section_with_humantime_durations() {
        let settings: KafkaSettings = serde_json::from_value(serde_json::json!({
            "brokers": ["k1:9092", "k2:9092"],
            "linger": "2ms",
            "lease_ttl": "1m 30s",
            "partitions": 8,
        }))
        .unwrap();
        assert_eq!(
            settings,
            KafkaSettings {
                brokers: vec!["k1:9092".into(), "k2:9092".into()],
                linger: Duration::from_millis(2),
                lease_ttl: Duration::from_secs(90),
                partitions: 8,
                ..KafkaSettings::default()
            }
        );
        let empty: KafkaSettings = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(empty, KafkaSettings::default());
    }

    #[cfg(feature = "serde")]
    #[test]
    fn refuses_unknown_keys_and_bare_numbers_for_durations() {
        let unknown = serde_json::from_value::<KafkaSettings>(serde_json::json!({
            "partition": 8,
        }))
        .unwrap_err();
        assert!(
            unknown.to_string().contains("unknown field `partition`"),
            "{unknown}"
        );
        assert!(
            serde_json::from_value::<KafkaSettings>(serde_json::json!({ "linger": 5 })).is_err()
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serializes_to_what_it_reads() {
        let settings = KafkaSettings {
            topic_prefix: "staging.".into(),
            fetch_max_wait: Duration::from_millis(150),
            ..KafkaSettings::default()
        };
        let value = serde_json::to_value(&settings).unwrap();
        assert_eq!(value["fetch_max_wait"], "150ms");
        assert_eq!(value["request_timeout"], "30s");
        assert_eq!(
            serde_json::from_value::<KafkaSettings>(value).unwrap(),
            settings
        );
    }
}
