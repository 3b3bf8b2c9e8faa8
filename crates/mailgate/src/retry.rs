//! Retry delays shared by the outbox worker and the webhook deliverer: exponential backoff
//! with jitter.

/// How far a retry delay may stray from its exponential value, in percent either way, so
/// that messages queued together during an outage do not all retry in the same second.
pub const JITTER_PERCENT: i64 = 20;

/// The delay before retry `attempts + 1`: `base` doubled per attempt, at most an hour, then
/// moved by up to ±[`JITTER_PERCENT`] by `roll` (any `u64`; the worker passes a random one,
/// tests pass the extremes).
pub fn backoff(base: i64, attempts: i64, roll: u64) -> i64 {
    let exp = base
        .saturating_mul(1i64 << (attempts - 1).clamp(0, 20))
        .min(3600);
    let spread = exp * JITTER_PERCENT / 100;
    let offset = (roll % (2 * spread as u64 + 1)) as i64 - spread;
    (exp + offset).max(1)
}

/// A random number for [`backoff`]'s jitter. Each `RandomState` is seeded afresh by the
/// standard library; jitter needs spread, not secrecy.
pub fn jitter_roll() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0u8)
}

#[cfg(test)]
mod tests {
    use super::{JITTER_PERCENT, backoff, jitter_roll};

    #[test]
    fn backoff_doubles_up_to_an_hour_within_the_jitter() {
        for (attempts, exp) in [(1, 30), (2, 60), (4, 240), (12, 3600), (40, 3600)] {
            let spread = exp * JITTER_PERCENT / 100;
            // The extremes of the roll reach the bounds, and never pass them.
            assert_eq!(backoff(30, attempts, 0), exp - spread);
            assert_eq!(backoff(30, attempts, 2 * spread as u64), exp + spread);
            assert_eq!(backoff(30, attempts, spread as u64), exp);
            for roll in [1, 7, 12345, u64::MAX / 3, u64::MAX - 1, u64::MAX] {
                let d = backoff(30, attempts, roll);
                assert!((exp - spread..=exp + spread).contains(&d), "{d} for {exp}");
            }
        }
    }

    #[test]
    fn a_short_base_still_waits_at_least_a_second() {
        for roll in 0..10 {
            assert_eq!(backoff(1, 1, roll), 1);
            assert!((4..=6).contains(&backoff(5, 1, roll)));
        }
    }

    #[test]
    fn random_rolls_spread_the_retries_within_the_bounds() {
        let delays: std::collections::BTreeSet<i64> =
            (0..200).map(|_| backoff(100, 1, jitter_roll())).collect();
        assert!(delays.iter().all(|d| (80..=120).contains(d)), "{delays:?}");
        assert!(delays.len() > 10, "the rolls vary: {delays:?}");
    }
}
