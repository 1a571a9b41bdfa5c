//! Per-key request rate limits (`rpm`), counted in memory with `pingora-limits`. The estimate is
//! the sliding-window interpolation of the previous and current minute (as Cloudflare's), so a
//! client cannot get twice its limit by straddling a window boundary. Refused requests are not
//! counted: a client that waits for `Retry-After` gets in.

use std::time::Duration;

use pingora_limits::rate::{Rate, RateComponents};

const WINDOW: Duration = Duration::from_secs(60);

/// Counts requests per key over a one-minute sliding window.
pub struct Limiter {
    rate: Rate,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new()
    }
}

impl Limiter {
    /// An empty limiter.
    pub fn new() -> Limiter {
        Limiter {
            rate: Rate::new(WINDOW),
        }
    }

    /// Count one request for `key` (the key's hash) against `rpm`. `Err(secs)` when over the
    /// limit: the number of whole seconds after which a retry will be accepted (at least 1).
    pub fn check(&self, key: &[u8; 32], rpm: u32) -> Result<(), u64> {
        let rpm = f64::from(rpm);
        self.rate.observe(key, 1);
        let verdict = self.rate.rate_with(key, |c: RateComponents| {
            let prev = c.prev_samples as f64;
            let curr = c.curr_samples as f64;
            let left = 1.0 - c.current_interval_fraction;
            let estimate = prev * left + curr;
            if estimate <= rpm {
                return Ok(());
            }
            let window = c.interval.as_secs_f64();
            // The previous minute's weight decays linearly over the current one; past its end
            // only the current count (minus this request) remains.
            let wait = if prev > 0.0 && curr - 1.0 < rpm {
                let excess = estimate - rpm;
                (excess / prev * window).min(left * window)
            } else {
                left * window
            };
            Err(wait.ceil().max(1.0) as u64)
        });
        if verdict.is_err() {
            self.rate.observe(key, -1);
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_up_to_rpm_then_refuses_with_a_retry_hint() {
        let l = Limiter::new();
        let a = [1u8; 32];
        let b = [2u8; 32];
        for _ in 0..5 {
            assert_eq!(l.check(&a, 5), Ok(()));
        }
        let wait = l.check(&a, 5).unwrap_err();
        assert!((1..=60).contains(&wait), "{wait}");
        // Refusals are not counted, and keys are independent.
        assert!(l.check(&a, 5).is_err());
        assert_eq!(l.check(&b, 5), Ok(()));
        // A higher limit for the same key lets the next request in.
        assert_eq!(l.check(&a, 6), Ok(()));
    }
}
