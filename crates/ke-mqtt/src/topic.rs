//! Topic names (what a PUBLISH names) and filters (what a SUBSCRIBE asks for), MQTT 3.1.1
//! section 4.7.

/// A topic a message may be published to: not empty, no wildcards, no NUL.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['+', '#', '\0'])
}

/// A subscription filter: not empty; `+` only as a whole level; `#` only as the whole last
/// level.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, level)| match *level {
        "#" => i == levels.len() - 1,
        "+" => true,
        other => !other.contains(['+', '#']),
    })
}

/// Whether `filter` (valid) matches topic `name` (valid). A filter that starts with a
/// wildcard does not match a name that starts with `$`: `#` alone does not receive
/// `$hw/events/...`, only a filter that names `$hw` does.
pub fn matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut name_levels = name.split('/');
    loop {
        match (filter_levels.next(), name_levels.next()) {
            // `a/#` also matches `a` itself.
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(n)) if f == n => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_filters() {
        for name in [
            "a",
            "a/b",
            "/",
            "$hw/events/device/default/dev/twin/update",
            "a//b",
        ] {
            assert!(valid_name(name), "{name}");
        }
        for name in ["", "a/+", "#", "a\0b"] {
            assert!(!valid_name(name), "{name:?}");
        }
        for filter in [
            "#",
            "+",
            "a/#",
            "+/b/+",
            "$hw/events/device/+/+/twin/+",
            "/",
        ] {
            assert!(valid_filter(filter), "{filter}");
        }
        for filter in ["", "a/#/b", "a#", "a+/b", "#/a", "a/b#"] {
            assert!(!valid_filter(filter), "{filter:?}");
        }
    }

    #[test]
    fn matching_follows_the_specification() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "a/b", true),
            ("+/+", "/b", true),
            ("+", "/b", false),
            ("a/b", "a/c", false),
            // KubeEdge's subscriptions (upstream eventbus).
            ("$hw/events/upload/#", "$hw/events/upload/x/y", true),
            (
                "$hw/events/device/+/+/twin/+",
                "$hw/events/device/default/dev/twin/update",
                true,
            ),
            (
                "$hw/events/device/+/+/twin/+",
                "$hw/events/device/default/dev/twin/update/result",
                false,
            ),
            ("+/user/#", "node/user/temperature", true),
            // The `$` rule (spec 4.7.2).
            ("#", "$hw/events/upload/x", false),
            ("+/events/upload/x", "$hw/events/upload/x", false),
            ("$SYS/#", "$SYS/broker/uptime", true),
        ];
        for (filter, name, expected) in cases {
            assert_eq!(matches(filter, name), expected, "{filter} ~ {name}");
        }
    }
}
