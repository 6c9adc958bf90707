//! Cluster IPs and node ports for Services, as kube-apiserver's service registry allocates them:
//! a free address from the service range (kube's default `10.96.0.0/12`, of which we use the
//! first /16) for every Service but `ExternalName` and headless ones, and a free port from
//! 30000–32767 for each port of a `NodePort` or `LoadBalancer` Service. Allocation is a scan of
//! the stored Services under a lock, so two creates never take the same address.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use crate::handlers::decode;
use crate::server::ApiServer;
use crate::status::ApiError;
use crate::storage::{ListOptions, Storage};

/// `10.96.0.0/16`; `.0.1` is the `kubernetes` Service's by convention and `.0.10` the DNS one's.
const RANGE_START: u32 = u32::from_be_bytes([10, 96, 0, 0]);
const RANGE_SIZE: u32 = 1 << 16;
const RESERVED: &[u32] = &[0, 1, 10, RANGE_SIZE - 1];
const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;

/// Fills `spec.clusterIP(s)` and missing node ports of a Service about to be created.
pub(crate) async fn allocate<S: Storage>(
    server: &ApiServer<S>,
    svc: &mut Value,
) -> Result<(), ApiError> {
    let services = server.catalog().builtin_resource("", "services");
    let name = svc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let page = server
        .storage
        .list(&services.prefix(None), ListOptions::default())
        .await
        .map_err(|e| ApiError::from_storage(&services, &name, e))?;
    let mut used_ips = HashSet::new();
    let mut used_ports = HashSet::new();
    for stored in &page.items {
        let other = decode(stored)?;
        if let Some(ip) = other
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        {
            used_ips.insert(u32::from(ip));
        }
        for p in other
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = p["nodePort"].as_i64() {
                used_ports.insert(n);
            }
        }
    }
    let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let type_ = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_owned();
    if type_ == "ExternalName" {
        return Ok(());
    }
    match spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        Some("None") => {
            spec.insert("clusterIPs".into(), json!(["None"]));
        }
        Some(requested) => {
            let ip: Ipv4Addr = requested.parse().map_err(|_| {
                ApiError::invalid(
                    &services,
                    &name,
                    "spec.clusterIPs[0]",
                    &format!("Invalid value: \"{requested}\": must be a valid IP"),
                )
            })?;
            let n = u32::from(ip);
            if !(RANGE_START..RANGE_START + RANGE_SIZE).contains(&n) {
                return Err(ApiError::invalid(
                    &services,
                    &name,
                    "spec.clusterIPs",
                    &format!(
                        "Invalid value: [\"{requested}\"]: failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range. The range of valid IPs is 10.96.0.0/16"
                    ),
                ));
            }
            if used_ips.contains(&n) {
                return Err(ApiError::invalid(
                    &services,
                    &name,
                    "spec.clusterIPs",
                    &format!(
                        "Invalid value: [\"{requested}\"]: failed to allocate IP {requested}: provided IP is already allocated"
                    ),
                ));
            }
            spec.insert("clusterIPs".into(), json!([requested]));
        }
        None => {
            let start = fastrand::u32(..RANGE_SIZE);
            let offset = (0..RANGE_SIZE)
                .map(|i| (start + i) % RANGE_SIZE)
                .find(|o| !RESERVED.contains(o) && !used_ips.contains(&(RANGE_START + o)))
                .ok_or_else(|| {
                    ApiError::new(500, "InternalError", "the service IP range is full")
                })?;
            let ip = Ipv4Addr::from(RANGE_START + offset).to_string();
            spec.insert("clusterIP".into(), json!(ip));
            spec.insert("clusterIPs".into(), json!([ip]));
        }
    }
    if matches!(type_.as_str(), "NodePort" | "LoadBalancer") {
        let ports = spec
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten();
        for p in ports.filter_map(Value::as_object_mut) {
            let wanted = p
                .get("nodePort")
                .and_then(Value::as_i64)
                .filter(|n| *n != 0);
            let port = match wanted {
                Some(n) if !NODE_PORTS.contains(&n) => {
                    return Err(ApiError::invalid(
                        &services,
                        &name,
                        "spec.ports[0].nodePort",
                        &format!(
                            "Invalid value: {n}: provided port is not in the valid range. The range of valid ports is 30000-32767"
                        ),
                    ));
                }
                Some(n) if used_ports.contains(&n) => {
                    return Err(ApiError::invalid(
                        &services,
                        &name,
                        "spec.ports[0].nodePort",
                        &format!("Invalid value: {n}: provided port is already allocated"),
                    ));
                }
                Some(n) => n,
                None => NODE_PORTS
                    .clone()
                    .find(|n| !used_ports.contains(n))
                    .ok_or_else(|| {
                        ApiError::new(500, "InternalError", "the node port range is full")
                    })?,
            };
            used_ports.insert(port);
            p.insert("nodePort".into(), json!(port));
        }
    }
    Ok(())
}

/// On update the allocations stay: a client that leaves `clusterIP` or a `nodePort` out (as
/// `kubectl apply` does) keeps the ones the Service has.
pub(crate) fn keep_allocations(current: &Value, next: &mut Value) {
    let Some(spec) = next.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for field in ["clusterIP", "clusterIPs"] {
        let missing = spec.get(field).is_none_or(|v| v == "" || v == &json!([]));
        if missing && let Some(v) = current.pointer(&format!("/spec/{field}")) {
            spec.insert(field.into(), v.clone());
        }
    }
    let old_ports = current
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ports = spec
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten();
    for p in ports.filter_map(Value::as_object_mut) {
        if p.get("nodePort")
            .and_then(Value::as_i64)
            .is_some_and(|n| n != 0)
        {
            continue;
        }
        let same_port =
            |o: &&Value| Some(&o["port"]) == p.get("port") && o.get("nodePort").is_some();
        if let Some(old) = old_ports.iter().find(same_port) {
            p.insert("nodePort".into(), old["nodePort"].clone());
        }
    }
}
