//! `edgecore.yaml` (`edgecore.config.kubeedge.io/v1alpha2`, kind `EdgeCore`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::duration::GoDuration;
use crate::host::HostInfo;
use crate::kubelet::TailoredKubeletConfig;
use crate::skip;
use crate::{ConfigError, load};

pub const EDGECORE_API_VERSION: &str = "edgecore.config.kubeedge.io/v1alpha2";
pub const EDGECORE_KIND: &str = "EdgeCore";

const DEFAULT_CA_FILE: &str = "/etc/kubeedge/ca/rootCA.crt";
const DEFAULT_CERT_FILE: &str = "/etc/kubeedge/certs/server.crt";
const DEFAULT_KEY_FILE: &str = "/etc/kubeedge/certs/server.key";

/// Go's `net.JoinHostPort`: brackets IPv6 literals.
fn join_host_port(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeCoreConfig {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub database: Database,
    /// Written by edgecore itself at start-up; empty in a fresh config.
    #[serde(rename = "edgecoreVersion")]
    pub edgecore_version: String,
    pub modules: EdgeCoreModules,
    #[serde(
        rename = "featureGates",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub feature_gates: BTreeMap<String, bool>,
}

impl EdgeCoreConfig {
    /// Names of the modules this config turns on, as upstream names them in logs.
    pub fn enabled_modules(&self) -> Vec<&'static str> {
        let m = &self.modules;
        crate::enabled_names([
            ("edged", m.edged.enable),
            ("websocket", m.edge_hub.enable),
            ("eventbus", m.event_bus.enable),
            ("metamanager", m.meta_manager.enable),
            ("servicebus", m.service_bus.enable),
            ("twin", m.device_twin.enable),
            ("dbTest", m.db_test.enable),
            ("edgestream", m.edge_stream.enable),
            ("taskmanager", m.task_manager.enable),
        ])
    }

    /// Upstream's `NewDefaultEdgeCoreConfig`, with node name and cloud
    /// addresses taken from `host`.
    pub fn default_for(host: &HostInfo) -> Self {
        let tunnel = |enable, server| EdgeHubTransport {
            enable,
            handshake_timeout: 30,
            read_deadline: 15,
            server,
            write_deadline: 15,
        };
        EdgeCoreConfig {
            api_version: EDGECORE_API_VERSION.into(),
            kind: EDGECORE_KIND.into(),
            database: Database {
                driver_name: "sqlite3".into(),
                alias_name: "default".into(),
                data_source: "/var/lib/kubeedge/edgecore.db".into(),
            },
            edgecore_version: String::new(),
            modules: EdgeCoreModules {
                edged: Edged {
                    enable: true,
                    report_event: false,
                    tailored_kubelet_config: TailoredKubeletConfig::default(),
                    hostname_override: host.hostname.clone(),
                    node_ip: String::new(),
                    runtime_cgroups: String::new(),
                    pod_sandbox_image: "kubeedge/pause:3.6".into(),
                    root_directory: "/var/lib/kubelet".into(),
                    windows_service: false,
                    windows_priority_class: String::new(),
                    experimental_mounter_path: String::new(),
                    experimental_node_allocatable_ignore_eviction_threshold: false,
                    node_labels: BTreeMap::new(),
                    minimum_gc_age: GoDuration::ZERO,
                    max_per_pod_container_count: 1,
                    max_container_count: -1,
                    register_schedulable: true,
                    keep_terminated_pod_volumes: false,
                    seccomp_default: false,
                    custom_interface_name: String::new(),
                    register_node_namespace: "default".into(),
                    bandwidth_manager: None,
                },
                edge_hub: EdgeHub {
                    enable: true,
                    heartbeat: 15,
                    message_qps: 30,
                    message_burst: 60,
                    project_id: "e632aba927ea4ac2b575ec1603d56f10".into(),
                    tls_ca_file: DEFAULT_CA_FILE.into(),
                    tls_cert_file: DEFAULT_CERT_FILE.into(),
                    tls_private_key_file: DEFAULT_KEY_FILE.into(),
                    quic: tunnel(false, join_host_port(host.ip, 10001)),
                    websocket: tunnel(true, join_host_port(host.ip, 10000)),
                    token: String::new(),
                    http_server: format!("https://{}", join_host_port(host.ip, 10002)),
                    rotate_certificates: true,
                    reconnect_max_interval: None,
                },
                event_bus: EventBus {
                    enable: true,
                    mqtt_qos: 0,
                    mqtt_retain: false,
                    mqtt_session_queue_size: 100,
                    // Ours: the embedded broker on the port mappers dial by default
                    // (upstream: 1884, behind an external broker on 1883).
                    mqtt_server_internal: "tcp://127.0.0.1:1883".into(),
                    mqtt_server_external: "tcp://127.0.0.1:1883".into(),
                    mqtt_sub_client_id: String::new(),
                    mqtt_pub_client_id: String::new(),
                    mqtt_username: String::new(),
                    mqtt_password: String::new(),
                    // Ours: embedded by default, so a node needs no broker installed
                    // (upstream: MQTT_MODE_EXTERNAL, i.e. mosquitto).
                    mqtt_mode: MQTT_MODE_INTERNAL,
                    tls: EventBusTls {
                        enable: false,
                        tls_mqtt_ca_file: DEFAULT_CA_FILE.into(),
                        tls_mqtt_cert_file: DEFAULT_CERT_FILE.into(),
                        tls_mqtt_private_key_file: DEFAULT_KEY_FILE.into(),
                    },
                },
                meta_manager: MetaManager {
                    enable: true,
                    context_send_group: "hub".into(),
                    context_send_module: "websocket".into(),
                    remote_query_timeout: 60,
                    meta_server: MetaServer {
                        enable: false,
                        server: "127.0.0.1:10550".into(),
                        tls_ca_file: DEFAULT_CA_FILE.into(),
                        tls_cert_file: DEFAULT_CERT_FILE.into(),
                        tls_private_key_file: DEFAULT_KEY_FILE.into(),
                        service_account_issuers: vec![
                            "https://kubernetes.default.svc.cluster.local".into(),
                        ],
                        api_audiences: None,
                        service_account_key_files: None,
                        dummy_server: "169.254.30.10:10550".into(),
                    },
                },
                service_bus: ServiceBus {
                    enable: false,
                    server: "127.0.0.1".into(),
                    port: 9060,
                    timeout: 60,
                    tls_cert_file: String::new(),
                    tls_private_key_file: String::new(),
                },
                device_twin: DeviceTwin {
                    enable: true,
                    dmi_sock_path: "/etc/kubeedge/".into(),
                },
                db_test: EnableOnly { enable: false },
                edge_stream: EdgeStream {
                    enable: false,
                    tls_tunnel_ca_file: DEFAULT_CA_FILE.into(),
                    tls_tunnel_cert_file: DEFAULT_CERT_FILE.into(),
                    tls_tunnel_private_key_file: DEFAULT_KEY_FILE.into(),
                    handshake_timeout: 30,
                    read_deadline: 15,
                    server: "127.0.0.1:10004".into(),
                    write_deadline: 15,
                },
                task_manager: EnableOnly { enable: false },
            },
            feature_gates: BTreeMap::new(),
        }
    }

    /// Reads `path` and applies it on top of [`EdgeCoreConfig::default_for`],
    /// then validates. See the crate docs for the rules.
    pub fn load(path: impl AsRef<Path>, host: &HostInfo) -> Result<Self, ConfigError> {
        load::load_file(path.as_ref(), &Self::default_for(host))
    }

    /// Like [`EdgeCoreConfig::load`] for text already in memory.
    pub fn from_yaml_str(text: &str, host: &HostInfo) -> Result<Self, ConfigError> {
        load::load_str(text, None, &Self::default_for(host))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    #[serde(rename = "driverName")]
    pub driver_name: String,
    #[serde(rename = "aliasName")]
    pub alias_name: String,
    #[serde(rename = "dataSource")]
    pub data_source: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeCoreModules {
    pub edged: Edged,
    #[serde(rename = "edgeHub")]
    pub edge_hub: EdgeHub,
    #[serde(rename = "eventBus")]
    pub event_bus: EventBus,
    #[serde(rename = "metaManager")]
    pub meta_manager: MetaManager,
    #[serde(rename = "serviceBus")]
    pub service_bus: ServiceBus,
    #[serde(rename = "deviceTwin")]
    pub device_twin: DeviceTwin,
    #[serde(rename = "dbTest")]
    pub db_test: EnableOnly,
    #[serde(rename = "edgeStream")]
    pub edge_stream: EdgeStream,
    #[serde(rename = "taskManager")]
    pub task_manager: EnableOnly,
}

/// A module whose only setting is whether it runs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnableOnly {
    pub enable: bool,
}

/// edged (the embedded, trimmed kubelet). Upstream embeds
/// `TailoredKubeletFlag` and `ContainerRuntimeOptions` inline; their fields
/// are flattened here by hand because serde's `flatten` cannot be combined
/// with `deny_unknown_fields`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Edged {
    pub enable: bool,
    #[serde(rename = "reportEvent")]
    pub report_event: bool,
    #[serde(rename = "tailoredKubeletConfig")]
    pub tailored_kubelet_config: TailoredKubeletConfig,
    /// The node name.
    #[serde(rename = "hostnameOverride")]
    pub hostname_override: String,
    #[serde(rename = "nodeIP", skip_serializing_if = "String::is_empty")]
    pub node_ip: String,
    #[serde(rename = "runtimeCgroups", skip_serializing_if = "String::is_empty")]
    pub runtime_cgroups: String,
    #[serde(rename = "podSandboxImage")]
    pub pod_sandbox_image: String,
    #[serde(rename = "rootDirectory")]
    pub root_directory: String,
    #[serde(rename = "windowsService", skip_serializing_if = "skip::is_false")]
    pub windows_service: bool,
    #[serde(
        rename = "windowsPriorityClass",
        skip_serializing_if = "String::is_empty"
    )]
    pub windows_priority_class: String,
    #[serde(
        rename = "experimentalMounterPath",
        skip_serializing_if = "String::is_empty"
    )]
    pub experimental_mounter_path: String,
    #[serde(
        rename = "experimentalNodeAllocatableIgnoreEvictionThreshold",
        skip_serializing_if = "skip::is_false"
    )]
    pub experimental_node_allocatable_ignore_eviction_threshold: bool,
    #[serde(rename = "nodeLabels", skip_serializing_if = "BTreeMap::is_empty")]
    pub node_labels: BTreeMap<String, String>,
    #[serde(rename = "minimumGCAge")]
    pub minimum_gc_age: GoDuration,
    #[serde(rename = "maxPerPodContainerCount")]
    pub max_per_pod_container_count: i32,
    #[serde(rename = "maxContainerCount")]
    pub max_container_count: i32,
    /// Always written: with Go's `omitempty` a `false` would vanish from a
    /// rendered file and come back as the default `true`.
    #[serde(rename = "registerSchedulable")]
    pub register_schedulable: bool,
    #[serde(
        rename = "keepTerminatedPodVolumes",
        skip_serializing_if = "skip::is_false"
    )]
    pub keep_terminated_pod_volumes: bool,
    #[serde(rename = "seccompDefault", skip_serializing_if = "skip::is_false")]
    pub seccomp_default: bool,
    #[serde(
        rename = "customInterfaceName",
        skip_serializing_if = "String::is_empty"
    )]
    pub custom_interface_name: String,
    #[serde(rename = "registerNodeNamespace")]
    pub register_node_namespace: String,
    /// Only in newer upstream releases; accepted so their configs load.
    #[serde(rename = "bandwidthManager", skip_serializing_if = "Option::is_none")]
    pub bandwidth_manager: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeHub {
    pub enable: bool,
    /// Seconds between keepalives to cloudHub.
    pub heartbeat: i32,
    #[serde(rename = "messageQPS")]
    pub message_qps: i32,
    #[serde(rename = "messageBurst")]
    pub message_burst: i32,
    #[serde(rename = "projectID")]
    pub project_id: String,
    #[serde(rename = "tlsCaFile")]
    pub tls_ca_file: String,
    #[serde(rename = "tlsCertFile")]
    pub tls_cert_file: String,
    #[serde(rename = "tlsPrivateKeyFile")]
    pub tls_private_key_file: String,
    pub quic: EdgeHubTransport,
    pub websocket: EdgeHubTransport,
    /// Bootstrap token; only needed until certificates exist.
    pub token: String,
    /// Where the edge applies for its certificate (`https://ip:10002`).
    #[serde(rename = "httpServer")]
    pub http_server: String,
    /// Always written (see `Edged::register_schedulable`).
    #[serde(rename = "rotateCertificates")]
    pub rotate_certificates: bool,
    /// kubeedge-rs extension: ceiling, in seconds, of the jittered exponential backoff between
    /// redials (default 30). Upstream has no such field (it sleeps a fixed 2 × heartbeat) and
    /// ignores unknown fields, so a config that sets it still loads there. Written only when set.
    #[serde(
        rename = "reconnectMaxInterval",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub reconnect_max_interval: Option<i32>,
}

/// edgeHub's `websocket` and `quic` client settings share this shape.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeHubTransport {
    pub enable: bool,
    /// Seconds.
    #[serde(rename = "handshakeTimeout")]
    pub handshake_timeout: i32,
    /// Seconds.
    #[serde(rename = "readDeadline")]
    pub read_deadline: i32,
    /// `host:port` of cloudHub.
    pub server: String,
    /// Seconds.
    #[serde(rename = "writeDeadline")]
    pub write_deadline: i32,
}

pub const MQTT_MODE_INTERNAL: i64 = 0;
pub const MQTT_MODE_BOTH: i64 = 1;
pub const MQTT_MODE_EXTERNAL: i64 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventBus {
    pub enable: bool,
    /// 0 at-most-once, 1 at-least-once, 2 exactly-once.
    #[serde(rename = "mqttQOS")]
    pub mqtt_qos: u8,
    #[serde(rename = "mqttRetain")]
    pub mqtt_retain: bool,
    #[serde(rename = "mqttSessionQueueSize")]
    pub mqtt_session_queue_size: i32,
    #[serde(rename = "mqttServerInternal")]
    pub mqtt_server_internal: String,
    #[serde(rename = "mqttServerExternal")]
    pub mqtt_server_external: String,
    #[serde(rename = "mqttSubClientID")]
    pub mqtt_sub_client_id: String,
    #[serde(rename = "mqttPubClientID")]
    pub mqtt_pub_client_id: String,
    #[serde(rename = "mqttUsername")]
    pub mqtt_username: String,
    #[serde(rename = "mqttPassword")]
    pub mqtt_password: String,
    /// 0 internal broker only, 1 both, 2 external broker only.
    #[serde(rename = "mqttMode")]
    pub mqtt_mode: i64,
    #[serde(rename = "eventBusTLS")]
    pub tls: EventBusTls,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventBusTls {
    pub enable: bool,
    #[serde(rename = "tlsMqttCAFile")]
    pub tls_mqtt_ca_file: String,
    #[serde(rename = "tlsMqttCertFile")]
    pub tls_mqtt_cert_file: String,
    #[serde(rename = "tlsMqttPrivateKeyFile")]
    pub tls_mqtt_private_key_file: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetaManager {
    pub enable: bool,
    #[serde(rename = "contextSendGroup")]
    pub context_send_group: String,
    #[serde(rename = "contextSendModule")]
    pub context_send_module: String,
    /// Seconds.
    #[serde(rename = "remoteQueryTimeout")]
    pub remote_query_timeout: i32,
    #[serde(rename = "metaServer")]
    pub meta_server: MetaServer,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetaServer {
    pub enable: bool,
    pub server: String,
    #[serde(rename = "tlsCaFile")]
    pub tls_ca_file: String,
    #[serde(rename = "tlsCertFile")]
    pub tls_cert_file: String,
    #[serde(rename = "tlsPrivateKeyFile")]
    pub tls_private_key_file: String,
    #[serde(rename = "serviceAccountIssuers")]
    pub service_account_issuers: Vec<String>,
    /// `None` is written as `null`, as upstream's nil slice is.
    #[serde(rename = "apiAudiences")]
    pub api_audiences: Option<Vec<String>>,
    #[serde(rename = "serviceAccountKeyFiles")]
    pub service_account_key_files: Option<Vec<String>>,
    /// `ip:port` of the dummy interface edge pods reach MetaServer on.
    #[serde(rename = "dummyServer")]
    pub dummy_server: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceBus {
    pub enable: bool,
    pub server: String,
    pub port: i64,
    /// Seconds.
    pub timeout: i64,
    /// Newer upstream releases serve serviceBus over TLS; empty (and not
    /// printed) by default.
    #[serde(rename = "tlsCertFile", skip_serializing_if = "String::is_empty")]
    pub tls_cert_file: String,
    #[serde(rename = "tlsPrivateKeyFile", skip_serializing_if = "String::is_empty")]
    pub tls_private_key_file: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceTwin {
    pub enable: bool,
    /// Directory holding `dmi.sock`.
    #[serde(rename = "dmiSockPath")]
    pub dmi_sock_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeStream {
    pub enable: bool,
    #[serde(rename = "tlsTunnelCAFile")]
    pub tls_tunnel_ca_file: String,
    #[serde(rename = "tlsTunnelCertFile")]
    pub tls_tunnel_cert_file: String,
    #[serde(rename = "tlsTunnelPrivateKeyFile")]
    pub tls_tunnel_private_key_file: String,
    #[serde(rename = "handshakeTimeout")]
    pub handshake_timeout: i32,
    #[serde(rename = "readDeadline")]
    pub read_deadline: i32,
    /// `host:port` of cloudStream's tunnel.
    pub server: String,
    #[serde(rename = "writeDeadline")]
    pub write_deadline: i32,
}
