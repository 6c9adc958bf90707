//! Time as Kubernetes objects write it.

use time::OffsetDateTime;

/// RFC 3339 in UTC: `metav1.Time` (seconds) or `MicroTime` (six fractional digits).
pub fn rfc3339(t: OffsetDateTime, micros: bool) -> String {
    let seconds = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if micros {
        format!("{seconds}.{:06}Z", t.microsecond())
    } else {
        format!("{seconds}Z")
    }
}

pub fn now(micros: bool) -> String {
    rfc3339(OffsetDateTime::now_utc(), micros)
}

/// A CRI timestamp (nanoseconds since the epoch) as `metav1.Time`.
pub fn from_unix_nanos(nanos: i64) -> String {
    OffsetDateTime::from_unix_timestamp(nanos / 1_000_000_000)
        .map(|t| rfc3339(t, false))
        .unwrap_or_default()
}
