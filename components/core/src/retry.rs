//! When to try an upstream call again: jittered exponential backoff within a total budget,
//! honouring the server's `Retry-After`. Sans-IO: the caller measures time and supplies the
//! randomness, so the schedule is deterministic under test.

use std::time::Duration;

/// Limits of the retry schedule for one logical upstream call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first one included.
    pub max_attempts: u32,
    /// Backoff ceiling before the first retry; doubled for every later one.
    pub base_delay: Duration,
    /// Cap on any single backoff (a longer `Retry-After` is still honoured within the budget).
    pub max_delay: Duration,
    /// Time allowed for all attempts and waits together.
    pub total_budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(4),
            total_budget: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// How long to wait before the next attempt, or `None` to give up.
    ///
    /// `attempt` counts the attempts made so far (1 after the first failure); `elapsed` is the
    /// time spent since the first attempt began; `random` is any uniformly random `u64`.
    /// Backoff is "full jitter": uniform in `0..=min(max_delay, base * 2^(attempt-1))`.
    /// A `Retry-After` is used as given when it fits in the remaining budget; if it does not,
    /// retrying earlier would be refused again, so the answer is `None`.
    pub fn next_delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        elapsed: Duration,
        random: u64,
    ) -> Option<Duration> {
        if attempt == 0 || attempt >= self.max_attempts {
            return None;
        }
        let remaining = self.total_budget.checked_sub(elapsed)?;
        let delay = match retry_after {
            Some(wait) => wait,
            None => {
                let exponent = (attempt - 1).min(31);
                let ceiling = self
                    .base_delay
                    .saturating_mul(1u32 << exponent)
                    .min(self.max_delay);
                let ceiling_nanos = ceiling.as_nanos() as u64;
                Duration::from_nanos(random % ceiling_nanos.saturating_add(1))
            }
        };
        // Waiting must leave time for the attempt itself; a wait that uses up the whole
        // budget would only end in a timeout.
        (delay < remaining).then_some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base_delay: MS(100),
            max_delay: MS(300),
            total_budget: MS(2000),
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = policy();
        // random = the ceiling in nanoseconds selects exactly the ceiling.
        let max = |ceiling_ms: u64| ceiling_ms * 1_000_000;
        assert_eq!(p.next_delay(1, None, MS(0), max(100)), Some(MS(100)));
        assert_eq!(p.next_delay(2, None, MS(0), max(200)), Some(MS(200)));
        assert_eq!(p.next_delay(3, None, MS(0), max(300)), Some(MS(300)));
        assert_eq!(
            p.next_delay(3, None, MS(0), max(400)),
            Some(Duration::from_nanos(400_000_000 % 300_000_001)),
            "capped at 300ms: 400ms wraps around"
        );
        assert_eq!(p.next_delay(1, None, MS(0), 0), Some(MS(0)));
    }

    #[test]
    fn jitter_stays_within_the_ceiling() {
        let p = policy();
        for random in [1u64, 12345, u64::MAX, 0xdead_beef_cafe] {
            let delay = p.next_delay(2, None, MS(0), random).unwrap();
            assert!(delay <= MS(200), "{delay:?}");
        }
        let a = p.next_delay(2, None, MS(0), 17).unwrap();
        let b = p.next_delay(2, None, MS(0), 1_000_000_017).unwrap();
        assert_ne!(a, b, "different randomness gives different delays");
    }

    #[test]
    fn gives_up_after_max_attempts() {
        let p = policy();
        assert!(p.next_delay(3, None, MS(0), 0).is_some());
        assert_eq!(p.next_delay(4, None, MS(0), 0), None);
    }

    #[test]
    fn retry_after_is_honoured_within_budget() {
        let p = policy();
        assert_eq!(
            p.next_delay(1, Some(MS(1500)), MS(0), 0),
            Some(MS(1500)),
            "above max_delay"
        );
        assert_eq!(
            p.next_delay(1, Some(MS(1500)), MS(600), 0),
            None,
            "exceeds remaining budget"
        );
        assert_eq!(
            p.next_delay(1, None, MS(2500), 0),
            None,
            "budget already spent"
        );
        assert_eq!(
            p.next_delay(1, None, MS(1950), 99_000_000),
            None,
            "backoff exceeds remaining"
        );
    }
}
