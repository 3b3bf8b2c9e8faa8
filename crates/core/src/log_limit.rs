//! At most one log line per key and interval, counting the ones left out.
//!
//! A failure that repeats in a tight loop (a full disk failing every write) must not write
//! thousands of identical lines a second: the first is logged, the repeats within the
//! interval are counted, and the next line that passes says how many were left out. Time is
//! a parameter, like everywhere else in `core`.

use crate::clock::Timestamp;
use std::collections::HashMap;
use std::sync::Mutex;

pub struct LogLimit {
    interval_secs: i64,
    /// Per key: when it was last logged, and how many times it was left out since.
    seen: Mutex<HashMap<String, (Timestamp, u64)>>,
}

impl LogLimit {
    pub fn new(interval_secs: i64) -> Self {
        LogLimit {
            interval_secs,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(n)` when a line for `key` should be logged now, `n` being how many were left
    /// out since the last one; `None` when this one is left out.
    pub fn allow(&self, key: &str, now: Timestamp) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get_mut(key) {
            Some((last, suppressed)) if last.secs_until(now) < self.interval_secs => {
                *suppressed += 1;
                None
            }
            Some(entry) => {
                let left_out = entry.1;
                *entry = (now, 0);
                Some(left_out)
            }
            None => {
                seen.insert(key.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LogLimit;
    use crate::clock::Timestamp;

    #[test]
    fn one_line_per_interval_and_key_with_the_count_left_out() {
        let limit = LogLimit::new(10);
        let t = Timestamp(1_000);
        assert_eq!(limit.allow("claim", t), Some(0));
        for _ in 0..5_000 {
            assert_eq!(limit.allow("claim", t.plus_secs(9)), None);
        }
        // Another key is not held back by the first.
        assert_eq!(limit.allow("record", t.plus_secs(9)), Some(0));
        assert_eq!(limit.allow("claim", t.plus_secs(10)), Some(5_000));
        assert_eq!(limit.allow("claim", t.plus_secs(11)), None);
        assert_eq!(limit.allow("claim", t.plus_secs(25)), Some(1));
    }
}
