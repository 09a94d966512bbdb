//! Flow control primitives.
