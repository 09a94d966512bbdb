//! The crate's Redis Functions: one library of every operation, loaded with `FUNCTION LOAD`
//! and called with `FCALL`. Functions live in the dataset — they survive `SCRIPT FLUSH`, and
//! restarts and failovers wherever the data does — so a call needs a reload only after
//! `FUNCTION FLUSH` or on a server that never had them.
//!
//! Each operation's body is a `.lua` file of its own (`lua/`, with its KEYS, ARGV and return
//! values in a header comment) wrapped into `redis.register_function` here. The library name
//! carries a version, so instances of two releases can share a Redis during a rolling upgrade.

use std::sync::LazyLock;

/// The library's name; function names are `{LIBRARY}_{operation}`.
pub(crate) const LIBRARY: &str = "seckill_v2";

/// One registered function.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Function(&'static str);

impl Function {
    /// The name to `FCALL`.
    pub(crate) fn name(self) -> &'static str {
        self.0
    }
}

macro_rules! functions {
    ($($op:ident => $file:literal),* $(,)?) => {
        /// Every operation of the library, named as its `.lua` file.
        #[allow(non_upper_case_globals)]
        pub(crate) mod op {
            use super::Function;
            $(
                #[doc = concat!("`", $file, "`")]
                pub(crate) const $op: Function =
                    Function(concat!("seckill_v2_", stringify!($op)));
            )*
        }
        const BODIES: &[(&str, &str)] = &[
            $((concat!("seckill_v2_", stringify!($op)), include_str!(concat!("../../lua/", $file))),)*
        ];
    };
}

functions! {
    purchase => "purchase.lua",
    prewarm => "prewarm.lua",
    restore => "restore.lua",
    cancel => "cancel.lua",
    stats => "stats.lua",
    outbox_claim => "outbox_claim.lua",
    outbox_ack => "outbox_ack.lua",
    lock_acquire => "lock_acquire.lua",
    lock_release => "lock_release.lua",
    lock_extend => "lock_extend.lua",
}

/// The library's source, as `FUNCTION LOAD` takes it.
pub(crate) static SOURCE: LazyLock<String> = LazyLock::new(|| {
    let mut s = format!("#!lua name={LIBRARY}\n");
    for (name, body) in BODIES {
        debug_assert!(name.starts_with(LIBRARY));
        s.push_str(&format!(
            "redis.register_function('{name}', function(KEYS, ARGV)\n{body}\nend)\n"
        ));
    }
    s
});

/// Whether a Redis error says the function (or its library) is not loaded.
pub(crate) fn is_missing(details: &str) -> bool {
    details.contains("Function not found") || details.contains("function not found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_is_registered_under_the_versioned_library() {
        assert!(SOURCE.starts_with("#!lua name=seckill_v2\n"));
        for f in [op::purchase, op::prewarm, op::outbox_ack, op::lock_extend] {
            assert!(f.name().starts_with("seckill_v2_"));
            assert!(SOURCE.contains(&format!("'{}'", f.name())), "{}", f.name());
        }
        assert_eq!(
            SOURCE.matches("redis.register_function(").count(),
            BODIES.len()
        );
    }
}
