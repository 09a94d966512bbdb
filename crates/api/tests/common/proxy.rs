//! The TCP proxy of the fault tests.

pub use seckill_test_support::Proxy;
