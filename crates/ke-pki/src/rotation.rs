//! When an edge should rotate its certificate.

use std::time::{Duration, SystemTime};

/// `not_before + (0.7 + 0.2 × jitter) × lifetime`, i.e. between 70 % and 90 %
/// of the certificate's lifetime, as upstream's CertManager (`wait.Jitter(d,
/// 0.2) - 0.3d`). Jitter spreads the rotations of nodes that joined together.
///
/// `jitter` is supplied by the caller (a uniform random number in `[0, 1)`)
/// so the result is testable; values outside that range, and NaN, are
/// clamped. An inverted validity (`not_after <= not_before`) yields
/// `not_before`, i.e. "rotate now".
pub fn rotation_deadline(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let Ok(lifetime) = not_after.duration_since(not_before) else {
        return not_before;
    };
    let jitter = if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(0.0, 1.0)
    };
    let fraction = 0.7 + 0.2 * jitter;
    // Millisecond resolution, rounded, so 0.7 × 365 d is exactly 255.5 d
    // instead of a few nanoseconds short of it.
    let millis = (lifetime.as_millis() as f64 * fraction).round();
    not_before + Duration::from_millis(millis as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn deadline_is_between_70_and_90_percent() {
        let nb = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let life = Duration::from_secs(365 * 86400);
        let na = nb + life;
        let at = |j: f64| rotation_deadline(nb, na, j).duration_since(nb).unwrap();
        assert_eq!(at(0.0), Duration::from_secs(365 * 86400 * 7 / 10));
        assert_eq!(at(0.5), Duration::from_secs(365 * 86400 * 8 / 10));
        for j in [0.0, 0.1, 0.33, 0.5, 0.77, 0.999_999, -3.0, 7.0, f64::NAN] {
            let d = at(j);
            let (lo, hi) = (life * 7 / 10, life * 9 / 10);
            assert!(d >= lo && d <= hi, "{j}: {d:?}");
        }
        assert_eq!(rotation_deadline(na, nb, 0.5), na);
    }
}
