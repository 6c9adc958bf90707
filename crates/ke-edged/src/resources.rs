//! Resource quantities (`500m`, `128Mi`) and what they become for the runtime: CFS shares and
//! quota, a memory limit — kubelet's conversions, so a pod gets the same cgroup settings here.

use crate::model::{Container, Quantity, ResourceRequirements};
use ke_cri::api;

/// kubelet's CFS period.
const CPU_PERIOD: i64 = 100_000;
const MIN_SHARES: i64 = 2;

impl Quantity {
    /// The value in base units (cores, bytes), or `None` when it is not a quantity.
    pub fn value(&self) -> Option<f64> {
        const SUFFIXES: [(&str, f64); 13] = [
            ("Ki", 1024.0),
            ("Mi", 1048576.0),
            ("Gi", 1073741824.0),
            ("Ti", 1099511627776.0),
            ("Pi", 1125899906842624.0),
            ("Ei", 1152921504606846976.0),
            ("m", 1e-3),
            ("k", 1e3),
            ("M", 1e6),
            ("G", 1e9),
            ("T", 1e12),
            ("P", 1e15),
            ("E", 1e18),
        ];
        let text = self.0.trim();
        let (number, multiplier) = SUFFIXES
            .iter()
            .find_map(|(suffix, m)| text.strip_suffix(suffix).map(|n| (n, *m)))
            .unwrap_or((text, 1.0));
        let number: f64 = number.parse().ok()?;
        number.is_finite().then_some(number * multiplier)
    }

    pub fn millis(&self) -> Option<i64> {
        self.value().map(|v| (v * 1000.0).ceil() as i64)
    }

    pub fn bytes(&self) -> Option<i64> {
        self.value().map(|v| v.ceil() as i64)
    }
}

/// What the node can give a container that sets no limit.
#[derive(Debug, Clone, Copy)]
pub struct Allocatable {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
}

impl ResourceRequirements {
    fn limit(&self, name: &str) -> Option<&Quantity> {
        self.limits.get(name)
    }

    /// A request defaults to the limit, as the API server's defaulting does.
    fn request(&self, name: &str) -> Option<&Quantity> {
        self.requests.get(name).or_else(|| self.limit(name))
    }
}

/// The cgroup settings of `container`.
pub fn linux_resources(container: &Container) -> api::LinuxContainerResources {
    let resources = &container.resources;
    let cpu_request = resources.request("cpu").and_then(Quantity::millis);
    let cpu_limit = resources.limit("cpu").and_then(Quantity::millis);
    let memory_limit = resources.limit("memory").and_then(Quantity::bytes);
    api::LinuxContainerResources {
        // kubelet gives a container without a request the minimum weight.
        cpu_shares: cpu_request.map_or(MIN_SHARES, |m| (m * 1024 / 1000).max(MIN_SHARES)),
        cpu_period: cpu_limit.map_or(0, |_| CPU_PERIOD),
        cpu_quota: cpu_limit.map_or(0, |m| (m * CPU_PERIOD / 1000).max(1000)),
        memory_limit_in_bytes: memory_limit.unwrap_or(0),
        ..Default::default()
    }
}

/// A `resourceFieldRef` value (`limits.cpu`, `requests.memory`…) in units of `divisor`,
/// rounded up as kubelet does; limits that are not set are the node's allocatable.
pub fn field(
    container: &Container,
    resource: &str,
    divisor: Option<&Quantity>,
    node: Allocatable,
) -> Option<String> {
    let resources = &container.resources;
    let (value, unset) = match resource {
        "limits.cpu" => (resources.limit("cpu"), node.cpu_millis as f64 / 1000.0),
        "requests.cpu" => (resources.request("cpu"), 0.0),
        "limits.memory" => (resources.limit("memory"), node.memory_bytes as f64),
        "requests.memory" => (resources.request("memory"), 0.0),
        "limits.ephemeral-storage" | "requests.ephemeral-storage" => {
            (resources.limit("ephemeral-storage"), 0.0)
        }
        _ => return None,
    };
    let value = value.and_then(Quantity::value).unwrap_or(unset);
    let divisor = divisor
        .and_then(Quantity::value)
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    let units = (value / divisor).ceil();
    // A CPU request of zero is reported as 1 unit, as kubelet does for `requests.cpu`.
    let units = if resource == "requests.cpu" {
        units.max(1.0)
    } else {
        units
    };
    Some(format!("{units}"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn q(text: &str) -> Quantity {
        Quantity(text.to_owned())
    }

    #[test]
    fn quantities() {
        assert_eq!(q("500m").millis(), Some(500));
        assert_eq!(q("2").millis(), Some(2000));
        assert_eq!(q("0.1").millis(), Some(100));
        assert_eq!(q("128Mi").bytes(), Some(128 << 20));
        assert_eq!(q("1G").bytes(), Some(1_000_000_000));
        assert_eq!(q("1e3").bytes(), Some(1000));
        assert_eq!(q("2E").value(), Some(2e18));
        assert_eq!(q("12x").value(), None);
        assert_eq!(q("").value(), None);
    }

    #[test]
    fn limits_become_cgroup_settings() {
        let mut container = Container::default();
        container.resources.limits =
            BTreeMap::from([("cpu".into(), q("250m")), ("memory".into(), q("64Mi"))]);
        let linux = linux_resources(&container);
        assert_eq!(linux.cpu_shares, 256);
        assert_eq!((linux.cpu_period, linux.cpu_quota), (100_000, 25_000));
        assert_eq!(linux.memory_limit_in_bytes, 64 << 20);
        let none = linux_resources(&Container::default());
        assert_eq!(
            (none.cpu_shares, none.cpu_quota, none.memory_limit_in_bytes),
            (2, 0, 0)
        );
    }

    #[test]
    fn resource_fields_round_up_in_divisor_units() {
        let node = Allocatable {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
        };
        let mut container = Container::default();
        container.resources.limits = BTreeMap::from([("memory".into(), q("64Mi"))]);
        assert_eq!(
            field(&container, "limits.memory", Some(&q("1Mi")), node).as_deref(),
            Some("64")
        );
        assert_eq!(
            field(&container, "limits.cpu", None, node).as_deref(),
            Some("4")
        );
        assert_eq!(
            field(&container, "limits.cpu", Some(&q("1m")), node).as_deref(),
            Some("4000")
        );
        assert_eq!(
            field(&container, "requests.cpu", None, node).as_deref(),
            Some("1")
        );
        assert_eq!(field(&container, "limits.gpu", None, node), None);
    }
}
