//! When to redial after the link breaks.
//!
//! Upstream sleeps a fixed `2 × heartbeat` (30 s) and then tries five dials 5 s apart, with no
//! jitter, so every edge of a fleet hammers a restarted cloudcore at the same instants. Here the
//! first redial comes within a second of the break, later ones back off exponentially up to a
//! cap, and every delay is jittered so a fleet spreads out.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct ReconnectPolicy {
    /// Upper bound of the (jittered) delay before the first redial.
    pub first: Duration,
    /// Base delay of the second redial; doubles after each failure.
    pub initial: Duration,
    pub max: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> ReconnectPolicy {
        ReconnectPolicy {
            first: Duration::from_millis(500),
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl ReconnectPolicy {
    /// Delay before redial number `attempt` (0 = the first after a break). `jitter` is a random
    /// number in [0, 1) from the caller: the first delay is `jitter × first`; later ones are the
    /// exponential base scaled into [½, 1] of itself ("equal jitter"), so no delay collapses to
    /// zero and the fleet still spreads.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.5
        };
        if attempt == 0 {
            return self.first.mul_f64(jitter);
        }
        let exponent = i32::try_from(attempt - 1).unwrap_or(i32::MAX).min(62);
        let base = (self.initial.as_secs_f64() * 2f64.powi(exponent)).min(self.max.as_secs_f64());
        Duration::from_secs_f64(base * (0.5 + 0.5 * jitter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_redial_is_within_a_second() {
        let policy = ReconnectPolicy::default();
        for jitter in [0.0, 0.3, 0.999] {
            assert!(policy.delay(0, jitter) < Duration::from_secs(1));
        }
    }

    #[test]
    fn later_redials_back_off_exponentially_to_the_cap() {
        let policy = ReconnectPolicy::default();
        let full: Vec<_> = (1..8).map(|a| policy.delay(a, 1.0).as_secs()).collect();
        assert_eq!(full, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(
            policy.delay(3, 0.0),
            Duration::from_secs(2),
            "never below half"
        );
        assert_eq!(policy.delay(u32::MAX, 1.0), Duration::from_secs(30));
        assert_eq!(policy.delay(2, f64::NAN), Duration::from_millis(1500));
    }
}
