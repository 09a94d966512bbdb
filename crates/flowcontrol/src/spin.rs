//! The lock bit a quota change sets in a limiter's state word, and the short spin of the
//! decisions that meet it.
//!
//! A limiter keeps its whole state in one `AtomicU64` (a token bucket's TAT, a window's
//! cell) whose top bit is free. `set_quota` sets that bit while it swaps the parameters, so a
//! decision's compare-and-swap on the word fails and the next one waits: the hot path pays
//! one bit test, the lever a few nanoseconds.

use std::sync::atomic::{AtomicU64, Ordering};

/// Set in a state word while its parameters are being replaced.
pub(crate) const LOCK: u64 = 1 << 63;

/// Spins (briefly) until `word` is not locked, returning its value.
#[cold]
pub(crate) fn load_unlocked(word: &AtomicU64) -> u64 {
    let mut spins = 0u32;
    loop {
        let v = word.load(Ordering::Acquire);
        if v & LOCK == 0 {
            return v;
        }
        backoff(&mut spins);
    }
}

/// Sets the lock bit, returning the unlocked value it replaced.
pub(crate) fn lock(word: &AtomicU64) -> u64 {
    let mut v = load_unlocked(word);
    loop {
        match word.compare_exchange_weak(v, v | LOCK, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return v,
            Err(_) => v = load_unlocked(word),
        }
    }
}

/// One step of a short spin, then yields: the lock is held for nanoseconds.
fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_returns_the_unlocked_value_and_blocks_until_released() {
        let word = std::sync::Arc::new(AtomicU64::new(41));
        assert_eq!(lock(&word), 41);
        assert_eq!(word.load(Ordering::Acquire), 41 | LOCK);
        let waiter = std::thread::spawn({
            let word = std::sync::Arc::clone(&word);
            move || load_unlocked(&word)
        });
        word.store(42, Ordering::Release);
        assert_eq!(waiter.join().unwrap(), 42);
    }
}
