use std::cmp::Ordering;

/// A resourceVersion that is not a base-10 unsigned integer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("resourceVersion {value:?} is not a non-negative integer")]
pub struct ResourceVersionError {
    pub value: String,
}

/// Orders two resourceVersions numerically (`"9" < "10"`).
///
/// Kubernetes calls resourceVersions opaque, but KubeEdge's reliable delivery relies on etcd's
/// numeric revisions to keep an older object from overwriting a newer one. Upstream parses with
/// `strconv.ParseUint` and panics on failure; a malformed version from a peer must not take the
/// process down, so it is an error here.
pub fn compare_resource_versions(a: &str, b: &str) -> Result<Ordering, ResourceVersionError> {
    Ok(parse(a)?.cmp(&parse(b)?))
}

fn parse(value: &str) -> Result<u64, ResourceVersionError> {
    // u64::from_str accepts a leading '+', which Go's ParseUint does not.
    if value.starts_with('+') {
        return Err(ResourceVersionError {
            value: value.to_owned(),
        });
    }
    value.parse().map_err(|_| ResourceVersionError {
        value: value.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_numerically_not_lexically() {
        assert_eq!(compare_resource_versions("9", "10"), Ok(Ordering::Less));
        assert_eq!(compare_resource_versions("10", "10"), Ok(Ordering::Equal));
        assert_eq!(
            compare_resource_versions("18446744073709551615", "1"),
            Ok(Ordering::Greater)
        );
        assert_eq!(compare_resource_versions("0", "0"), Ok(Ordering::Equal));
    }

    #[test]
    fn non_numeric_versions_are_errors_that_name_the_value() {
        for bad in ["", "abc", "-1", "+1", "1.5", " 1", "18446744073709551616"] {
            let err = compare_resource_versions(bad, "1").unwrap_err();
            assert_eq!(err.value, bad);
            assert!(err.to_string().contains("resourceVersion"));
            assert!(compare_resource_versions("1", bad).is_err());
        }
    }
}
