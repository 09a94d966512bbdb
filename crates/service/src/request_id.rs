//! Request ids, shared by the fronts: the caller's `x-request-id` when usable, else a fresh
//! one.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// The header (HTTP) and metadata key (gRPC), in both directions.
pub const HEADER: &str = "x-request-id";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh id: 32 hexadecimal digits, unique within the process and unlikely to repeat
/// across processes.
pub fn fresh() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let state = std::collections::hash_map::RandomState::new();
    format!("{:016x}{:016x}", state.hash_one(n), state.hash_one(!n))
}

/// Whether a caller's id can be used as it is: 1 to 128 visible ASCII characters.
pub fn usable(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The caller's id when usable, else a fresh one.
pub fn of(given: Option<&str>) -> String {
    given
        .filter(|v| usable(v))
        .map_or_else(fresh, str::to_owned)
}
