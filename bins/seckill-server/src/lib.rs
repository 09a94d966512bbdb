//! The wiring of `seckill-server`: configuration loading and validation, and telemetry.
//!
//! # Layout
//! - [`config`]: the configuration tree, its defaults (the specification's) and its validation.
//! - [`telemetry`]: logging and the Prometheus exporter.

pub mod config;
pub mod telemetry;
