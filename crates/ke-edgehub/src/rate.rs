//! Upstream's edge→cloud rate limit (`messageQPS` / `messageBurst`): a token bucket, with time
//! passed in so it is testable without sleeping.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    /// A full bucket. A non-positive rate means "no limit" (upstream treats 0 as unlimited too).
    pub fn new(per_second: f64, burst: u32, now: Instant) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            per_second,
            burst,
            tokens: burst,
            refilled_at: now,
        }
    }

    /// Takes a token, or says how long to wait until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.per_second,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_the_steady_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(30.0, 60, start);
        for _ in 0..60 {
            bucket.try_take(start).unwrap();
        }
        let wait = bucket.try_take(start).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0 / 30.0).abs() < 1e-6, "{wait:?}");
        // One second later, 30 more.
        let later = start + Duration::from_secs(1);
        for _ in 0..30 {
            bucket.try_take(later).unwrap();
        }
        assert!(bucket.try_take(later).is_err());
        // Refill never exceeds the burst.
        let much_later = start + Duration::from_secs(3600);
        for _ in 0..60 {
            bucket.try_take(much_later).unwrap();
        }
        assert!(bucket.try_take(much_later).is_err());
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let now = Instant::now();
        let mut bucket = TokenBucket::new(0.0, 0, now);
        for _ in 0..10_000 {
            bucket.try_take(now).unwrap();
        }
    }
}
