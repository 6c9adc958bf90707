//! Resource quantities (`100m`, `1.5`, `128Mi`, `1e3`) as the integers scheduling compares:
//! CPU in millicores, everything else in units (bytes for memory).

/// Parses a quantity scaled by `scale` (1000 for millicores, 1 for bytes), rounding up as
/// Kubernetes does for requests. `None` for malformed input.
pub fn parse(q: &str, scale: i128) -> Option<i64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let (mantissa, exp10): (&str, i32) = match suffix {
        s if s.starts_with(['e', 'E']) => (number, s[1..].parse().ok()?),
        _ => (number, 0),
    };
    let multiplier: i128 = match suffix {
        "" => 1,
        s if s.starts_with(['e', 'E']) => 1,
        "n" | "u" | "m" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        _ => return None,
    };
    let divisor: i128 = match suffix {
        "n" => 1_000_000_000,
        "u" => 1_000_000,
        "m" => 1_000,
        _ => 1,
    };
    // Exact decimal arithmetic: value = digits / 10^frac * multiplier * 10^exp10 * scale / divisor.
    let negative = mantissa.starts_with('-');
    let mantissa = mantissa.trim_start_matches(['+', '-']);
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    let digits: i128 = format!("{int_part}{frac_part}").parse().ok()?;
    let mut num = digits.checked_mul(multiplier)?.checked_mul(scale)?;
    let mut den = divisor.checked_mul(10i128.checked_pow(u32::try_from(frac_part.len()).ok()?)?)?;
    if exp10 >= 0 {
        num = num.checked_mul(10i128.checked_pow(exp10.unsigned_abs())?)?;
    } else {
        den = den.checked_mul(10i128.checked_pow(exp10.unsigned_abs())?)?;
    }
    let value = (num + den - 1) / den;
    let value = i64::try_from(value).ok()?;
    Some(if negative { -value } else { value })
}

pub fn cpu_millis(q: &str) -> Option<i64> {
    parse(q, 1000)
}

pub fn units(q: &str) -> Option<i64> {
    parse(q, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(cpu_millis("100m"), Some(100));
        assert_eq!(cpu_millis("1"), Some(1000));
        assert_eq!(cpu_millis("1.5"), Some(1500));
        assert_eq!(cpu_millis("0.0001"), Some(1), "rounded up");
        assert_eq!(units("128Mi"), Some(128 << 20));
        assert_eq!(units("1G"), Some(1_000_000_000));
        assert_eq!(units("1e3"), Some(1000));
        assert_eq!(units("110"), Some(110));
        for bad in ["", "abc", "1Xi", "1..2", "e3"] {
            assert_eq!(units(bad), None, "{bad}");
        }
    }
}
