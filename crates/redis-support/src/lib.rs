//! Redis plumbing shared by the seckill libraries.
