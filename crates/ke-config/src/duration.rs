//! Go `time.Duration` text syntax (`"10s"`, `"5m0s"`, `"1h30m"`, `"100ms"`).
//!
//! Kubelet-derived fields are `metav1.Duration` upstream, which is written as
//! Go's `Duration.String()` and read with `time.ParseDuration`. We keep the
//! value as signed nanoseconds (Go's representation) so every value Go can
//! write round-trips, and print it back exactly the way Go does, so a rendered
//! default config is identical to upstream's.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const NANOS_PER_MICRO: u64 = 1_000;
const NANOS_PER_MILLI: u64 = 1_000_000;
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A duration with Go's range (signed 64-bit nanoseconds) and text syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration {
    nanos: i64,
}

/// Why a duration string was rejected; the message mirrors Go's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct ParseDurationError {
    input: String,
    reason: &'static str,
}

impl GoDuration {
    pub const ZERO: GoDuration = GoDuration { nanos: 0 };

    pub const fn from_nanos(nanos: i64) -> Self {
        GoDuration { nanos }
    }

    pub const fn from_secs(secs: i64) -> Self {
        GoDuration {
            nanos: secs.saturating_mul(NANOS_PER_SEC as i64),
        }
    }

    pub const fn from_millis(millis: i64) -> Self {
        GoDuration {
            nanos: millis.saturating_mul(NANOS_PER_MILLI as i64),
        }
    }

    pub const fn as_nanos(self) -> i64 {
        self.nanos
    }

    pub const fn is_negative(self) -> bool {
        self.nanos < 0
    }

    pub const fn is_zero(self) -> bool {
        self.nanos == 0
    }

    /// The std duration, or `None` for negative values (which Go allows but
    /// no timer can use).
    pub fn to_std(self) -> Option<Duration> {
        u64::try_from(self.nanos).ok().map(Duration::from_nanos)
    }
}

impl TryFrom<Duration> for GoDuration {
    type Error = std::num::TryFromIntError;

    fn try_from(d: Duration) -> Result<Self, Self::Error> {
        i64::try_from(d.as_nanos()).map(GoDuration::from_nanos)
    }
}

impl FromStr for GoDuration {
    type Err = ParseDurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s).map_err(|reason| ParseDurationError {
            input: s.to_owned(),
            reason,
        })
    }
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => NANOS_PER_MICRO as u128,
        "ms" => NANOS_PER_MILLI as u128,
        "s" => NANOS_PER_SEC as u128,
        "m" => 60 * NANOS_PER_SEC as u128,
        "h" => 3600 * NANOS_PER_SEC as u128,
        _ => return None,
    })
}

fn parse(input: &str) -> Result<GoDuration, &'static str> {
    let (negative, mut rest) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    // Go accepts a bare "0" (and "-0"/"+0") without a unit, nothing else.
    if rest == "0" {
        return Ok(GoDuration::ZERO);
    }
    if rest.is_empty() {
        return Err("empty duration");
    }
    // Magnitude limit: Go allows exactly one more nanosecond for negatives.
    let limit: u128 = if negative {
        i64::MAX as u128 + 1
    } else {
        i64::MAX as u128
    };
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(tail) => {
                let n = tail.bytes().take_while(u8::is_ascii_digit).count();
                tail.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err("expected a number");
        }
        let unit_len = after
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(after.len(), |(i, _)| i);
        let (unit, tail) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err("missing unit");
        }
        let per_unit = unit_nanos(unit).ok_or("unknown unit")?;

        let mut whole: u128 = 0;
        for b in int_part.bytes() {
            whole = whole * 10 + u128::from(b - b'0');
            if whole > limit {
                return Err("out of range");
            }
        }
        let mut value = whole.checked_mul(per_unit).ok_or("out of range")?;
        // Digits past ~20 cannot change the result at nanosecond precision;
        // ignoring them (like Go) keeps the arithmetic in range.
        let mut frac: u128 = 0;
        let mut scale: u128 = 1;
        for b in frac_part.bytes().take(20) {
            frac = frac * 10 + u128::from(b - b'0');
            scale *= 10;
        }
        value += frac * per_unit / scale;
        total = total.checked_add(value).ok_or("out of range")?;
        if total > limit {
            return Err("out of range");
        }
        rest = tail;
    }
    let nanos = if negative {
        // total <= 2^63 here, so this is exact (including i64::MIN).
        (total as i128).wrapping_neg() as i64
    } else {
        total as i64
    };
    Ok(GoDuration { nanos })
}

/// `v` split at `10^prec`: the integer part, and the fraction as `.ddd` with
/// trailing zeros removed (empty when the fraction is zero).
fn split_frac(v: u64, prec: u32) -> (u64, String) {
    let p = 10u64.pow(prec);
    let frac = v % p;
    if frac == 0 {
        return (v / p, String::new());
    }
    let digits = format!("{frac:0width$}", width = prec as usize);
    (v / p, format!(".{}", digits.trim_end_matches('0')))
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0s");
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        let u = self.nanos.unsigned_abs();
        if u < NANOS_PER_SEC {
            return if u < NANOS_PER_MICRO {
                write!(f, "{sign}{u}ns")
            } else if u < NANOS_PER_MILLI {
                let (int, frac) = split_frac(u, 3);
                write!(f, "{sign}{int}{frac}\u{b5}s")
            } else {
                let (int, frac) = split_frac(u, 6);
                write!(f, "{sign}{int}{frac}ms")
            };
        }
        let (secs_total, frac) = split_frac(u, 9);
        let secs = secs_total % 60;
        let mins_total = secs_total / 60;
        if mins_total == 0 {
            return write!(f, "{sign}{secs}{frac}s");
        }
        let mins = mins_total % 60;
        let hours = mins_total / 60;
        if hours == 0 {
            write!(f, "{sign}{mins}m{secs}{frac}s")
        } else {
            write!(f, "{sign}{hours}h{mins}m{secs}{frac}s")
        }
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Go duration string such as \"10s\" or \"5m0s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GoDuration, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// Kubernetes' `TimeOrMetaDuration` (used by `logging.flushFrequency`):
/// accepts a duration string or an integer count of nanoseconds, and writes
/// back in the form it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeOrMetaDuration {
    pub duration: GoDuration,
    pub serialize_as_string: bool,
}

impl Default for TimeOrMetaDuration {
    fn default() -> Self {
        TimeOrMetaDuration {
            duration: GoDuration::ZERO,
            serialize_as_string: true,
        }
    }
}

impl Serialize for TimeOrMetaDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.serialize_as_string {
            self.duration.serialize(serializer)
        } else {
            serializer.serialize_i64(self.duration.as_nanos())
        }
    }
}

impl<'de> Deserialize<'de> for TimeOrMetaDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TimeOrMetaDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Go duration string or an integer number of nanoseconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TimeOrMetaDuration {
                    duration: v.parse().map_err(E::custom)?,
                    serialize_as_string: true,
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(TimeOrMetaDuration {
                    duration: GoDuration::from_nanos(v),
                    serialize_as_string: false,
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                let v = i64::try_from(v).map_err(|_| E::custom("duration out of range"))?;
                self.visit_i64(v)
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> GoDuration {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn prints_like_go() {
        let cases = [
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1\u{b5}s"),
            (2_200_000, "2.2ms"),
            (100_000_000, "100ms"),
            (10 * NANOS_PER_SEC as i64, "10s"),
            (60 * NANOS_PER_SEC as i64, "1m0s"),
            (120 * NANOS_PER_SEC as i64, "2m0s"),
            (300 * NANOS_PER_SEC as i64, "5m0s"),
            (4 * 3600 * NANOS_PER_SEC as i64, "4h0m0s"),
            (1_500_000_000, "1.5s"),
            (-1_500_000_000, "-1.5s"),
            (3_723_000_000_001, "1h2m3.000000001s"),
            (i64::MAX, "2562047h47m16.854775807s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ];
        for (nanos, text) in cases {
            assert_eq!(GoDuration::from_nanos(nanos).to_string(), text);
            assert_eq!(d(text).as_nanos(), nanos, "parse {text}");
        }
    }

    #[test]
    fn parses_go_syntax() {
        assert_eq!(d("1h30m"), GoDuration::from_secs(5400));
        assert_eq!(d("1.5h"), GoDuration::from_secs(5400));
        assert_eq!(d(".5s"), GoDuration::from_millis(500));
        assert_eq!(d("1.s"), GoDuration::from_secs(1));
        assert_eq!(d("+10s"), GoDuration::from_secs(10));
        assert_eq!(d("-0"), GoDuration::ZERO);
        assert_eq!(d("3us"), d("3\u{3bc}s"));
        assert_eq!(d("1h1m1s1ms1us1ns").as_nanos(), 3_661_001_001_001);
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "-",
            "10",
            "s",
            ".s",
            "1x",
            "1.2.3s",
            "9223372036854775808ns",
            "3000000h",
            "1s 2s",
        ] {
            assert!(bad.parse::<GoDuration>().is_err(), "{bad:?} should fail");
        }
        assert_eq!(
            "-9223372036854775808ns".parse::<GoDuration>(),
            Ok(GoDuration::from_nanos(i64::MIN))
        );
    }
}
