//! Helpers shared by the seckill test suites.
