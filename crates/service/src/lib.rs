//! The seckill purchase service.
