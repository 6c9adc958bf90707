//! Restart policy and exponential backoff, kept free of clocks and tasks so the
//! arithmetic can be tested exhaustively without waiting.

use std::time::Duration;

/// When a module whose `run` returned should be started again.
///
/// Mirrors beehive's `RestartType` (`Always` | `OnFailure`), plus `Never`, which
/// is what upstream does for every module while the `moduleRestart` feature
/// gate is off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RestartKind {
    /// Restart after a failure and after a clean return.
    Always,
    /// Restart only after an error or a panic.
    OnFailure,
    /// Run once.
    #[default]
    Never,
}

/// How one run of a module ended, as far as the restart policy cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `run` returned `Ok(())`.
    Completed,
    /// `run` returned an error or panicked.
    Failed,
}

/// A module's restart policy.
///
/// Delays grow as `initial_interval * growth_rate^n` for the n-th consecutive
/// restart and never exceed `max_interval`.
#[derive(Clone, Debug, PartialEq)]
pub struct RestartPolicy {
    pub kind: RestartKind,
    /// Consecutive restarts allowed before the module is given up on;
    /// `None` restarts forever.
    pub max_retries: Option<u32>,
    pub initial_interval: Duration,
    pub growth_rate: f64,
    pub max_interval: Duration,
    /// A run that lasted at least this long counts as healthy and resets the
    /// consecutive-restart count, so a module that fails once a day is not
    /// eventually stuck at the cap or out of retries. Upstream has no such
    /// reset; `None` reproduces upstream.
    pub reset_after: Option<Duration>,
}

/// Upstream `IntervalSecond` default.
pub const DEFAULT_INITIAL_INTERVAL: Duration = Duration::from_secs(1);
/// Upstream `RestartIntervalLimit` default.
pub const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(30);
/// Growth rate upstream's core modules (EdgeHub, MetaManager, Edged, EventBus) use.
pub const CORE_GROWTH_RATE: f64 = 2.0;
const DEFAULT_RESET_AFTER: Duration = Duration::from_secs(60);

impl Default for RestartPolicy {
    fn default() -> Self {
        Self::never()
    }
}

impl RestartPolicy {
    fn with_kind(kind: RestartKind) -> Self {
        Self {
            kind,
            max_retries: None,
            initial_interval: DEFAULT_INITIAL_INTERVAL,
            growth_rate: CORE_GROWTH_RATE,
            max_interval: DEFAULT_MAX_INTERVAL,
            reset_after: Some(DEFAULT_RESET_AFTER),
        }
    }

    /// Run once; the default, as upstream with the restart feature gate off.
    pub fn never() -> Self {
        Self::with_kind(RestartKind::Never)
    }

    /// Restart after errors and panics: 1 s, doubling, capped at 30 s, no retry limit.
    /// This is the policy upstream gives its core modules.
    pub fn on_failure() -> Self {
        Self::with_kind(RestartKind::OnFailure)
    }

    /// Restart whenever `run` returns, with the same backoff as [`Self::on_failure`].
    pub fn always() -> Self {
        Self::with_kind(RestartKind::Always)
    }

    pub fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
        self
    }

    pub fn with_backoff(mut self, initial: Duration, growth_rate: f64, max: Duration) -> Self {
        self.initial_interval = initial;
        self.growth_rate = growth_rate;
        self.max_interval = max;
        self
    }

    pub fn with_reset_after(mut self, reset_after: Option<Duration>) -> Self {
        self.reset_after = reset_after;
        self
    }

    /// Delay before the restart that follows `consecutive` earlier consecutive
    /// restarts (0 for the first restart).
    pub fn delay(&self, consecutive: u32) -> Duration {
        // A growth rate below 1 (or NaN) would shrink delays into a hot loop.
        let rate = if self.growth_rate.is_finite() && self.growth_rate >= 1.0 {
            self.growth_rate
        } else {
            1.0
        };
        let exponent = i32::try_from(consecutive).unwrap_or(i32::MAX);
        let secs = self.initial_interval.as_secs_f64() * rate.powi(exponent);
        let cap = self.max_interval.max(self.initial_interval);
        // Overflow to infinity lands on the cap instead of panicking in from_secs_f64.
        Duration::try_from_secs_f64(secs).map_or(cap, |d| d.min(cap))
    }
}

/// What the supervisor should do after a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start the module again after this delay.
    Restart(Duration),
    /// Leave the module stopped.
    Stop,
}

/// Per-module restart bookkeeping: the policy plus the consecutive-restart count.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: RestartPolicy,
    consecutive: u32,
}

impl Backoff {
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            consecutive: 0,
        }
    }

    pub fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    /// Restarts decided since the last healthy run.
    pub fn consecutive(&self) -> u32 {
        self.consecutive
    }

    /// Decides what follows a run that ended with `exit` after `ran_for`.
    pub fn on_exit(&mut self, exit: Exit, ran_for: Duration) -> Decision {
        let wanted = match (self.policy.kind, exit) {
            (RestartKind::Never, _) | (RestartKind::OnFailure, Exit::Completed) => false,
            (RestartKind::Always, _) | (RestartKind::OnFailure, Exit::Failed) => true,
        };
        if !wanted {
            return Decision::Stop;
        }
        if self
            .policy
            .reset_after
            .is_some_and(|healthy| ran_for >= healthy)
        {
            self.consecutive = 0;
        }
        if self
            .policy
            .max_retries
            .is_some_and(|max| self.consecutive >= max)
        {
            return Decision::Stop;
        }
        let delay = self.policy.delay(self.consecutive);
        self.consecutive = self.consecutive.saturating_add(1);
        Decision::Restart(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZERO: Duration = Duration::ZERO;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn default_policy_never_restarts() {
        let mut b = Backoff::new(RestartPolicy::default());
        assert_eq!(b.on_exit(Exit::Failed, ZERO), Decision::Stop);
        assert_eq!(b.on_exit(Exit::Completed, ZERO), Decision::Stop);
    }

    #[test]
    fn on_failure_restarts_failures_but_not_clean_returns() {
        let mut b = Backoff::new(RestartPolicy::on_failure());
        assert_eq!(b.on_exit(Exit::Completed, ZERO), Decision::Stop);
        assert_eq!(b.on_exit(Exit::Failed, ZERO), Decision::Restart(secs(1)));
    }

    #[test]
    fn always_restarts_clean_returns_too() {
        let mut b = Backoff::new(RestartPolicy::always());
        assert_eq!(b.on_exit(Exit::Completed, ZERO), Decision::Restart(secs(1)));
        assert_eq!(b.on_exit(Exit::Failed, ZERO), Decision::Restart(secs(2)));
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let mut b = Backoff::new(RestartPolicy::on_failure());
        let delays: Vec<_> = (0..8)
            .map(|_| match b.on_exit(Exit::Failed, ZERO) {
                Decision::Restart(d) => d.as_secs(),
                Decision::Stop => u64::MAX,
            })
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn retry_limit_counts_consecutive_restarts() {
        let mut b = Backoff::new(RestartPolicy::on_failure().with_max_retries(2));
        assert_eq!(b.on_exit(Exit::Failed, ZERO), Decision::Restart(secs(1)));
        assert_eq!(b.on_exit(Exit::Failed, ZERO), Decision::Restart(secs(2)));
        assert_eq!(b.on_exit(Exit::Failed, ZERO), Decision::Stop);
    }

    #[test]
    fn zero_retries_means_no_restart() {
        let mut b = Backoff::new(RestartPolicy::on_failure().with_max_retries(0));
        assert_eq!(b.on_exit(Exit::Failed, ZERO), Decision::Stop);
    }

    #[test]
    fn a_long_healthy_run_resets_backoff_and_retries() {
        let mut b = Backoff::new(RestartPolicy::on_failure().with_max_retries(2));
        assert_eq!(b.on_exit(Exit::Failed, ZERO), Decision::Restart(secs(1)));
        assert_eq!(b.on_exit(Exit::Failed, ZERO), Decision::Restart(secs(2)));
        assert_eq!(
            b.on_exit(Exit::Failed, secs(60)),
            Decision::Restart(secs(1))
        );
        assert_eq!(b.consecutive(), 1);
    }

    #[test]
    fn reset_can_be_disabled_to_match_upstream() {
        let mut b = Backoff::new(RestartPolicy::on_failure().with_reset_after(None));
        b.on_exit(Exit::Failed, ZERO);
        assert_eq!(
            b.on_exit(Exit::Failed, secs(3600)),
            Decision::Restart(secs(2))
        );
    }

    #[test]
    fn huge_exponents_and_bad_rates_stay_bounded() {
        let p = RestartPolicy::on_failure();
        assert_eq!(p.delay(u32::MAX), secs(30));
        let shrinking = RestartPolicy::on_failure().with_backoff(secs(1), 0.5, secs(30));
        assert_eq!(shrinking.delay(5), secs(1));
        let nan = RestartPolicy::on_failure().with_backoff(secs(1), f64::NAN, secs(30));
        assert_eq!(nan.delay(5), secs(1));
        let fractional =
            RestartPolicy::on_failure().with_backoff(Duration::from_millis(500), 1.5, secs(2));
        assert_eq!(fractional.delay(2), Duration::from_millis(1125));
        assert_eq!(fractional.delay(10), secs(2));
    }

    #[test]
    fn cap_below_initial_interval_uses_initial_interval() {
        let p = RestartPolicy::on_failure().with_backoff(secs(5), 2.0, secs(1));
        assert_eq!(p.delay(0), secs(5));
        assert_eq!(p.delay(3), secs(5));
    }
}
