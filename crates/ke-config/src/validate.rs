//! Semantic checks run after a config is parsed.
//!
//! They follow upstream's `ValidateCloudCoreConfiguration` /
//! `ValidateEdgeCoreConfiguration` where those exist and add checks for
//! values that upstream accepts but then fails on at run time (a zero
//! heartbeat, a negative channel buffer, a port out of range). Unlike
//! upstream they are pure: no file-existence checks and no directories
//! created; the binaries check files when they open them, where the error
//! can say what the file was for. Checks for a module run only when that
//! module is enabled, like upstream, so a disabled module's leftovers never
//! block start-up. All problems are collected, not just the first.

use std::net::IpAddr;

use crate::cloudcore::CloudCoreConfig;
use crate::edgecore::{EdgeCoreConfig, EdgeHubTransport};
use crate::error::FieldError;
use crate::kubelet::TailoredKubeletConfig;
use crate::load::ConfigDoc;

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    fn port(&mut self, field: &str, value: i64) {
        if !(1..=65535).contains(&value) {
            self.push(field, format!("{value} is not a valid port (1-65535)"));
        }
    }

    fn positive(&mut self, field: &str, value: i64) {
        if value <= 0 {
            self.push(field, format!("must be greater than 0, got {value}"));
        }
    }

    fn non_negative(&mut self, field: &str, value: i64) {
        if value < 0 {
            self.push(field, format!("must not be negative, got {value}"));
        }
    }

    fn non_empty(&mut self, field: &str, value: &str) {
        if value.trim().is_empty() {
            self.push(field, "must not be empty");
        }
    }

    fn ip(&mut self, field: &str, value: &str) {
        if value.parse::<IpAddr>().is_err() {
            self.push(field, format!("{value:?} is not a valid IP address"));
        }
    }

    /// `host:port` (IPv6 hosts bracketed), as Go's net.SplitHostPort takes.
    fn host_port(&mut self, field: &str, value: &str, require_ip: bool) {
        let Some((host, port)) = split_host_port(value) else {
            self.push(field, format!("{value:?} must be host:port"));
            return;
        };
        if host.is_empty() {
            self.push(field, format!("{value:?} has an empty host"));
        } else if require_ip && host.parse::<IpAddr>().is_err() {
            self.push(field, format!("{host:?} is not a valid IP address"));
        }
        match port.parse::<i64>() {
            Ok(p) if (1..=65535).contains(&p) => {}
            _ => self.push(field, format!("{port:?} is not a valid port (1-65535)")),
        }
    }

    fn one_of(&mut self, field: &str, value: &str, allowed: &[&str]) {
        if !allowed.contains(&value) {
            self.push(
                field,
                format!("{value:?} is not one of {}", allowed.join(", ")),
            );
        }
    }
}

fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return Some((host, port));
    }
    let (host, port) = s.rsplit_once(':')?;
    // An unbracketed host may not contain ':' (that would be IPv6 without
    // brackets, which Go rejects as ambiguous).
    (!host.contains(':')).then_some((host, port))
}

/// Kubernetes node names are DNS-1123 subdomains.
fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && !s.is_empty()
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            let edge_ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            !b.is_empty()
                && b.first().is_some_and(edge_ok)
                && b.last().is_some_and(edge_ok)
                && b.iter().all(|c| edge_ok(c) || *c == b'-')
        })
}

impl CloudCoreConfig {
    /// Checks field values; returns every problem found, each naming its
    /// dotted field path. [`CloudCoreConfig::load`] calls this already.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let errors = self.validation_errors();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

impl ConfigDoc for CloudCoreConfig {
    const API_VERSION: &'static str = crate::cloudcore::CLOUDCORE_API_VERSION;
    const KIND: &'static str = crate::cloudcore::CLOUDCORE_KIND;

    fn validation_errors(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        let c = &self.common_config;
        e.port("commonConfig.tunnelPort", c.tunnel_port);
        e.host_port(
            "commonConfig.monitorServer.bindAddress",
            &c.monitor_server.bind_address,
            true,
        );

        let k = &self.kube_api_config;
        if !k.kube_config.is_empty() && !k.kube_config.starts_with('/') {
            e.push(
                "kubeAPIConfig.kubeConfig",
                format!("{:?} must be an absolute path", k.kube_config),
            );
        }
        e.non_negative("kubeAPIConfig.qps", k.qps.into());
        e.non_negative("kubeAPIConfig.burst", k.burst.into());
        if let Some(embedded) = &k.embedded {
            if !k.kube_config.is_empty() || !k.master.is_empty() {
                e.push(
                    "kubeAPIConfig.embedded",
                    "cannot be combined with kubeConfig or master: pick one API server",
                );
            }
            // Port 0 (pick a free one) is allowed: the address is reported in the log and
            // in admin.kubeconfig.
            if embedded
                .bind_address
                .parse::<std::net::SocketAddr>()
                .is_err()
            {
                e.push(
                    "kubeAPIConfig.embedded.bindAddress",
                    format!("{:?} must be ip:port", embedded.bind_address),
                );
            }
            e.non_empty("kubeAPIConfig.embedded.dataDir", &embedded.data_dir);
            e.positive(
                "kubeAPIConfig.embedded.nodeMonitorGracePeriod",
                embedded.node_monitor_grace_period.into(),
            );
        }

        let m = &self.modules;
        let h = &m.cloud_hub;
        if h.enable {
            let p = "modules.cloudHub";
            e.positive(
                &format!("{p}.keepaliveInterval"),
                h.keepalive_interval.into(),
            );
            e.positive(&format!("{p}.nodeLimit"), h.node_limit.into());
            e.non_negative(&format!("{p}.writeTimeout"), h.write_timeout.into());
            e.positive(
                &format!("{p}.tokenRefreshDuration"),
                h.token_refresh_duration,
            );
            e.positive(
                &format!("{p}.edgeCertSigningDuration"),
                h.edge_cert_signing_duration,
            );
            if h.advertise_address.is_empty() {
                e.push(
                    format!("{p}.advertiseAddress"),
                    "must list at least one IP (edges connect to it and it goes into the server certificate)",
                );
            }
            for (i, a) in h.advertise_address.iter().enumerate() {
                e.ip(&format!("{p}.advertiseAddress[{i}]"), a);
            }
            for (field, value) in [
                ("tlsCAFile", &h.tls_ca_file),
                ("tlsCAKeyFile", &h.tls_ca_key_file),
                ("tlsCertFile", &h.tls_cert_file),
                ("tlsPrivateKeyFile", &h.tls_private_key_file),
            ] {
                e.non_empty(&format!("{p}.{field}"), value);
            }
            if !h.websocket.enable && !h.quic.enable {
                e.push(
                    format!("{p}.websocket.enable"),
                    "websocket or quic must be enabled, or no edge can connect",
                );
            }
            for (name, enabled, address, port) in [
                (
                    "websocket",
                    h.websocket.enable,
                    &h.websocket.address,
                    h.websocket.port,
                ),
                ("quic", h.quic.enable, &h.quic.address, h.quic.port),
                ("https", h.https.enable, &h.https.address, h.https.port),
            ] {
                if enabled {
                    e.ip(&format!("{p}.{name}.address"), address);
                    e.port(&format!("{p}.{name}.port"), port.into());
                }
            }
            if h.quic.enable {
                e.positive(
                    &format!("{p}.quic.maxIncomingStreams"),
                    h.quic.max_incoming_streams.into(),
                );
            }
            if h.unix_socket.enable && !h.unix_socket.address.to_lowercase().starts_with("unix://")
            {
                e.push(
                    format!("{p}.unixsocket.address"),
                    format!("{:?} must start with unix://", h.unix_socket.address),
                );
            }
        }

        let ec = &m.edge_controller;
        if ec.enable {
            let p = "modules.edgeController";
            e.positive(
                &format!("{p}.nodeUpdateFrequency"),
                ec.node_update_frequency.into(),
            );
            // Go makes channels of these sizes: negative panics.
            for (name, v) in ec.buffer.fields() {
                e.non_negative(&format!("{p}.buffer.{name}"), v.into());
            }
            // Zero workers means the queue is never drained.
            for (name, v) in ec.load.fields() {
                e.positive(&format!("{p}.load.{name}"), v.into());
            }
        }

        let dc = &m.device_controller;
        if dc.enable {
            let p = "modules.deviceController";
            for (name, v) in [
                ("updateDeviceTwins", dc.buffer.update_device_twins),
                ("updateDeviceStatus", dc.buffer.update_device_status),
                ("deviceEvent", dc.buffer.device_event),
                ("deviceModelEvent", dc.buffer.device_model_event),
                ("deviceStatusEvent", dc.buffer.device_status_event),
            ] {
                e.non_negative(&format!("{p}.buffer.{name}"), v.into());
            }
            e.positive(
                &format!("{p}.load.updateDeviceStatusWorkers"),
                dc.load.update_device_status_workers.into(),
            );
        }

        let tm = &m.task_manager;
        if tm.enable {
            let p = "modules.taskManager";
            e.non_negative(
                &format!("{p}.buffer.taskStatus"),
                tm.buffer.task_status.into(),
            );
            e.non_negative(
                &format!("{p}.buffer.taskEvent"),
                tm.buffer.task_event.into(),
            );
            e.positive(
                &format!("{p}.load.taskWorkers"),
                tm.load.task_workers.into(),
            );
        }

        let cs = &m.cloud_stream;
        if cs.enable {
            let p = "modules.cloudStream";
            e.port(&format!("{p}.tunnelPort"), cs.tunnel_port.into());
            e.port(&format!("{p}.streamPort"), cs.stream_port.into());
            for (field, value) in [
                ("tlsTunnelCAFile", &cs.tls_tunnel_ca_file),
                ("tlsTunnelCertFile", &cs.tls_tunnel_cert_file),
                ("tlsTunnelPrivateKeyFile", &cs.tls_tunnel_private_key_file),
                ("tlsStreamCAFile", &cs.tls_stream_ca_file),
                ("tlsStreamCertFile", &cs.tls_stream_cert_file),
                ("tlsStreamPrivateKeyFile", &cs.tls_stream_private_key_file),
            ] {
                e.non_empty(&format!("{p}.{field}"), value);
            }
        }

        let r = &m.router;
        if r.enable {
            e.ip("modules.router.address", &r.address);
            e.port("modules.router.port", r.port.into());
            e.positive("modules.router.restTimeout", r.rest_timeout.into());
        }

        let ipt = &m.iptables_manager;
        if ipt.enable {
            e.one_of(
                "modules.iptablesManager.mode",
                &ipt.mode,
                &["internal", "external"],
            );
        }
        e.0
    }
}

impl EdgeCoreConfig {
    /// Checks field values; returns every problem found, each naming its
    /// dotted field path. [`EdgeCoreConfig::load`] calls this already.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let errors = self.validation_errors();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

fn validate_transport(e: &mut Errors, prefix: &str, t: &EdgeHubTransport) {
    e.host_port(&format!("{prefix}.server"), &t.server, false);
    e.positive(
        &format!("{prefix}.handshakeTimeout"),
        t.handshake_timeout.into(),
    );
    e.positive(&format!("{prefix}.readDeadline"), t.read_deadline.into());
    e.positive(&format!("{prefix}.writeDeadline"), t.write_deadline.into());
}

fn validate_kubelet(e: &mut Errors, k: &TailoredKubeletConfig) {
    let p = "modules.edged.tailoredKubeletConfig";
    e.one_of(
        &format!("{p}.cgroupDriver"),
        &k.cgroup_driver,
        &["cgroupfs", "systemd"],
    );
    e.non_empty(
        &format!("{p}.containerRuntimeEndpoint"),
        &k.container_runtime_endpoint,
    );
    e.ip(&format!("{p}.address"), &k.address);
    // 0 disables the read-only server, so it is allowed here.
    if !(0..=65535).contains(&k.read_only_port) {
        e.push(
            format!("{p}.readOnlyPort"),
            format!(
                "{} is not a valid port (0-65535, 0 disables)",
                k.read_only_port
            ),
        );
    }
    e.non_negative(&format!("{p}.maxPods"), k.max_pods.into());
    e.positive(
        &format!("{p}.nodeLeaseDurationSeconds"),
        k.node_lease_duration_seconds.into(),
    );
    if k.node_status_update_frequency.as_nanos() <= 0 {
        e.push(
            format!("{p}.nodeStatusUpdateFrequency"),
            "must be greater than 0",
        );
    }
    if let Some(v) = k.oom_score_adj.filter(|v| !(-1000..=1000).contains(v)) {
        e.push(
            format!("{p}.oomScoreAdj"),
            format!("{v} is outside -1000..1000"),
        );
    }
    for (name, v) in [
        (
            "imageGCHighThresholdPercent",
            k.image_gc_high_threshold_percent,
        ),
        (
            "imageGCLowThresholdPercent",
            k.image_gc_low_threshold_percent,
        ),
    ] {
        if let Some(v) = v.filter(|v| !(0..=100).contains(v)) {
            e.push(format!("{p}.{name}"), format!("{v} is outside 0..100"));
        }
    }
    match (
        k.image_gc_high_threshold_percent,
        k.image_gc_low_threshold_percent,
    ) {
        (Some(high), Some(low)) if low >= high => e.push(
            format!("{p}.imageGCLowThresholdPercent"),
            format!("{low} must be less than imageGCHighThresholdPercent ({high})"),
        ),
        _ => {}
    }
    for (name, v) in [
        ("registryPullQPS", k.registry_pull_qps),
        ("eventRecordQPS", k.event_record_qps),
    ] {
        if let Some(v) = v {
            e.non_negative(&format!("{p}.{name}"), v.into());
        }
    }
    if let Some(f) = k
        .memory_throttling_factor
        .filter(|f| !(*f > 0.0 && *f <= 1.0))
    {
        e.push(
            format!("{p}.memoryThrottlingFactor"),
            format!("{f} must be in (0, 1]"),
        );
    }
    for (i, dns) in k.cluster_dns.iter().enumerate() {
        e.ip(&format!("{p}.clusterDNS[{i}]"), dns);
    }
}

impl ConfigDoc for EdgeCoreConfig {
    const API_VERSION: &'static str = crate::edgecore::EDGECORE_API_VERSION;
    const KIND: &'static str = crate::edgecore::EDGECORE_KIND;

    fn validation_errors(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        let db = &self.database;
        e.non_empty("database.dataSource", &db.data_source);
        // Upstream registers only the sqlite3 driver.
        e.one_of("database.driverName", &db.driver_name, &["sqlite3"]);

        let m = &self.modules;
        let ed = &m.edged;
        if ed.enable {
            if !is_dns1123_subdomain(&ed.hostname_override) {
                e.push(
                    "modules.edged.hostnameOverride",
                    format!(
                        "{:?} is not a valid node name (lowercase letters, digits, '-' and '.', at most 253 characters)",
                        ed.hostname_override
                    ),
                );
            }
            if !ed.node_ip.is_empty() {
                e.ip("modules.edged.nodeIP", &ed.node_ip);
            }
            e.non_empty("modules.edged.rootDirectory", &ed.root_directory);
            e.non_empty("modules.edged.podSandboxImage", &ed.pod_sandbox_image);
            validate_kubelet(&mut e, &ed.tailored_kubelet_config);
        }

        let h = &m.edge_hub;
        if h.enable {
            let p = "modules.edgeHub";
            e.positive(&format!("{p}.heartbeat"), h.heartbeat.into());
            if let Some(max) = h.reconnect_max_interval {
                e.positive(&format!("{p}.reconnectMaxInterval"), max.into());
            }
            e.non_negative(&format!("{p}.messageQPS"), h.message_qps.into());
            e.non_negative(&format!("{p}.messageBurst"), h.message_burst.into());
            e.non_empty(&format!("{p}.projectID"), &h.project_id);
            for (field, value) in [
                ("tlsCaFile", &h.tls_ca_file),
                ("tlsCertFile", &h.tls_cert_file),
                ("tlsPrivateKeyFile", &h.tls_private_key_file),
            ] {
                e.non_empty(&format!("{p}.{field}"), value);
            }
            match (h.websocket.enable, h.quic.enable) {
                (true, false) => {
                    validate_transport(&mut e, &format!("{p}.websocket"), &h.websocket)
                }
                (false, true) => validate_transport(&mut e, &format!("{p}.quic"), &h.quic),
                _ => e.push(
                    format!("{p}.websocket.enable"),
                    "exactly one of websocket.enable and quic.enable must be true",
                ),
            }
            if !h.http_server.starts_with("https://") {
                e.push(
                    format!("{p}.httpServer"),
                    format!(
                        "{:?} must be an https:// URL of cloudHub's certificate server",
                        h.http_server
                    ),
                );
            }
        }

        let eb = &m.event_bus;
        if eb.enable {
            let p = "modules.eventBus";
            if !(0..=2).contains(&eb.mqtt_mode) {
                e.push(
                    format!("{p}.mqttMode"),
                    format!(
                        "{} must be 0 (internal broker), 1 (both) or 2 (external broker)",
                        eb.mqtt_mode
                    ),
                );
            }
            if eb.mqtt_qos > 2 {
                e.push(
                    format!("{p}.mqttQOS"),
                    format!("{} must be 0, 1 or 2", eb.mqtt_qos),
                );
            }
            e.positive(
                &format!("{p}.mqttSessionQueueSize"),
                eb.mqtt_session_queue_size.into(),
            );
            if eb.mqtt_mode <= 1 {
                e.non_empty(&format!("{p}.mqttServerInternal"), &eb.mqtt_server_internal);
            }
            if eb.mqtt_mode >= 1 {
                e.non_empty(&format!("{p}.mqttServerExternal"), &eb.mqtt_server_external);
            }
            if eb.tls.enable {
                for (field, value) in [
                    ("tlsMqttCAFile", &eb.tls.tls_mqtt_ca_file),
                    ("tlsMqttCertFile", &eb.tls.tls_mqtt_cert_file),
                    ("tlsMqttPrivateKeyFile", &eb.tls.tls_mqtt_private_key_file),
                ] {
                    e.non_empty(&format!("{p}.eventBusTLS.{field}"), value);
                }
            }
        }

        let mm = &m.meta_manager;
        if mm.enable {
            let p = "modules.metaManager";
            e.positive(
                &format!("{p}.remoteQueryTimeout"),
                mm.remote_query_timeout.into(),
            );
            e.non_empty(&format!("{p}.contextSendGroup"), &mm.context_send_group);
            e.non_empty(&format!("{p}.contextSendModule"), &mm.context_send_module);
            let ms = &mm.meta_server;
            if ms.enable {
                e.host_port(&format!("{p}.metaServer.server"), &ms.server, false);
                e.host_port(
                    &format!("{p}.metaServer.dummyServer"),
                    &ms.dummy_server,
                    true,
                );
            }
        }

        let sb = &m.service_bus;
        if sb.enable {
            e.non_empty("modules.serviceBus.server", &sb.server);
            e.port("modules.serviceBus.port", sb.port);
            e.positive("modules.serviceBus.timeout", sb.timeout);
        }

        let dt = &m.device_twin;
        if dt.enable {
            e.non_empty("modules.deviceTwin.dmiSockPath", &dt.dmi_sock_path);
        }

        let es = &m.edge_stream;
        if es.enable {
            let p = "modules.edgeStream";
            e.host_port(&format!("{p}.server"), &es.server, false);
            e.positive(
                &format!("{p}.handshakeTimeout"),
                es.handshake_timeout.into(),
            );
            e.positive(&format!("{p}.readDeadline"), es.read_deadline.into());
            e.positive(&format!("{p}.writeDeadline"), es.write_deadline.into());
            for (field, value) in [
                ("tlsTunnelCAFile", &es.tls_tunnel_ca_file),
                ("tlsTunnelCertFile", &es.tls_tunnel_cert_file),
                ("tlsTunnelPrivateKeyFile", &es.tls_tunnel_private_key_file),
            ] {
                e.non_empty(&format!("{p}.{field}"), value);
            }
        }
        e.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("1.2.3.4:10000"), Some(("1.2.3.4", "10000")));
        assert_eq!(split_host_port("[::1]:10000"), Some(("::1", "10000")));
        assert_eq!(
            split_host_port("cloud.example:1"),
            Some(("cloud.example", "1"))
        );
        assert_eq!(split_host_port("::1:10000"), None);
        assert_eq!(split_host_port("1.2.3.4"), None);
    }

    #[test]
    fn node_names() {
        assert!(is_dns1123_subdomain("vm"));
        assert!(is_dns1123_subdomain("edge-1.example"));
        assert!(!is_dns1123_subdomain("Edge"));
        assert!(!is_dns1123_subdomain("-edge"));
        assert!(!is_dns1123_subdomain("edge..x"));
        assert!(!is_dns1123_subdomain(""));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
    }
}
