//! `cloudcore.yaml` (`cloudcore.config.kubeedge.io/v1alpha1`, kind `CloudCore`).
//!
//! Field names are upstream's JSON tags verbatim, including its
//! inconsistencies (`tlsCAFile` here vs edgeHub's `tlsCaFile`, the
//! capitalised `CreatePodWorks`/`ServiceAccountTokenWorkers`/
//! `UpdateRuleStatusWorkers`, `unixsocket` in lower case).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::host::HostInfo;
use crate::skip;
use crate::{ConfigError, load};

pub const CLOUDCORE_API_VERSION: &str = "cloudcore.config.kubeedge.io/v1alpha1";
pub const CLOUDCORE_KIND: &str = "CloudCore";

/// Upstream's default `modules.cloudHub.nodeLimit`; several edgeController
/// buffer and worker defaults scale with it.
pub const DEFAULT_NODE_LIMIT: i32 = 500;

const DEFAULT_CA_FILE: &str = "/etc/kubeedge/ca/rootCA.crt";
const DEFAULT_CA_KEY_FILE: &str = "/etc/kubeedge/ca/rootCA.key";
const DEFAULT_CERT_FILE: &str = "/etc/kubeedge/certs/server.crt";
const DEFAULT_KEY_FILE: &str = "/etc/kubeedge/certs/server.key";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudCoreConfig {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    #[serde(rename = "commonConfig")]
    pub common_config: CommonConfig,
    #[serde(rename = "kubeAPIConfig")]
    pub kube_api_config: KubeApiConfig,
    pub modules: CloudCoreModules,
    #[serde(
        rename = "featureGates",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub feature_gates: BTreeMap<String, bool>,
}

impl CloudCoreConfig {
    /// Names of the modules this config turns on, as upstream names them in logs.
    pub fn enabled_modules(&self) -> Vec<&'static str> {
        let m = &self.modules;
        crate::enabled_names([
            ("cloudhub", m.cloud_hub.enable),
            ("edgecontroller", m.edge_controller.enable),
            ("devicecontroller", m.device_controller.enable),
            ("taskmanager", m.task_manager.enable),
            ("synccontroller", m.sync_controller.enable),
            ("dynamiccontroller", m.dynamic_controller.enable),
            ("cloudStream", m.cloud_stream.enable),
            ("router", m.router.enable),
            ("iptablesmanager", m.iptables_manager.enable),
        ])
    }

    /// Upstream's `NewDefaultCloudCoreConfig`, with the advertise address
    /// taken from `host`.
    pub fn default_for(host: &HostInfo) -> Self {
        let node_limit = DEFAULT_NODE_LIMIT;
        CloudCoreConfig {
            api_version: CLOUDCORE_API_VERSION.into(),
            kind: CLOUDCORE_KIND.into(),
            common_config: CommonConfig {
                tunnel_port: 10350,
                monitor_server: MonitorServer {
                    bind_address: "127.0.0.1:9091".into(),
                    enable_profiling: false,
                },
            },
            kube_api_config: KubeApiConfig {
                master: String::new(),
                content_type: "application/vnd.kubernetes.protobuf".into(),
                qps: 5 * node_limit,
                burst: 10 * node_limit,
                kube_config: String::new(),
                embedded: None,
            },
            modules: CloudCoreModules {
                cloud_hub: CloudHub {
                    enable: true,
                    keepalive_interval: 30,
                    node_limit,
                    tls_ca_file: DEFAULT_CA_FILE.into(),
                    tls_ca_key_file: DEFAULT_CA_KEY_FILE.into(),
                    tls_cert_file: DEFAULT_CERT_FILE.into(),
                    tls_private_key_file: DEFAULT_KEY_FILE.into(),
                    write_timeout: 30,
                    quic: CloudHubQuic {
                        enable: false,
                        address: "0.0.0.0".into(),
                        port: 10001,
                        max_incoming_streams: 10000,
                    },
                    unix_socket: CloudHubUnixSocket {
                        enable: true,
                        address: "unix:///var/lib/kubeedge/kubeedge.sock".into(),
                    },
                    websocket: CloudHubListener {
                        enable: true,
                        address: "0.0.0.0".into(),
                        port: 10000,
                    },
                    https: CloudHubListener {
                        enable: true,
                        address: "0.0.0.0".into(),
                        port: 10002,
                    },
                    advertise_address: vec![host.ip.to_string()],
                    // Upstream's default really is one empty name.
                    dns_names: vec![String::new()],
                    edge_cert_signing_duration: 365,
                    token_refresh_duration: 12,
                    authorization: CloudHubAuthorization {
                        enable: false,
                        debug: true,
                        modes: vec![AuthorizationMode {
                            node: Some(NodeAuthorization { enable: true }),
                        }],
                    },
                },
                edge_controller: EdgeController {
                    enable: true,
                    node_update_frequency: 10,
                    buffer: EdgeControllerBuffer::for_node_limit(node_limit),
                    load: EdgeControllerLoad::for_node_limit(node_limit),
                },
                device_controller: DeviceController {
                    enable: true,
                    buffer: DeviceControllerBuffer {
                        update_device_twins: 1024,
                        update_device_status: 1024,
                        device_event: 1,
                        device_model_event: 1,
                        device_status_event: 0,
                    },
                    load: DeviceControllerLoad {
                        update_device_status_workers: 1,
                    },
                },
                task_manager: CloudTaskManager {
                    enable: false,
                    buffer: TaskManagerBuffer {
                        task_status: 1024,
                        task_event: 1,
                    },
                    load: TaskManagerLoad { task_workers: 1 },
                },
                sync_controller: Enable { enable: true },
                dynamic_controller: Enable { enable: false },
                cloud_stream: CloudStream {
                    enable: false,
                    tls_tunnel_ca_file: DEFAULT_CA_FILE.into(),
                    tls_tunnel_cert_file: DEFAULT_CERT_FILE.into(),
                    tls_tunnel_private_key_file: DEFAULT_KEY_FILE.into(),
                    tunnel_port: 10004,
                    tls_stream_ca_file: "/etc/kubeedge/ca/streamCA.crt".into(),
                    tls_stream_cert_file: "/etc/kubeedge/certs/stream.crt".into(),
                    tls_stream_private_key_file: "/etc/kubeedge/certs/stream.key".into(),
                    stream_port: 10003,
                },
                router: Router {
                    enable: false,
                    address: "0.0.0.0".into(),
                    port: 9443,
                    rest_timeout: 60,
                },
                iptables_manager: IptablesManager {
                    enable: true,
                    mode: "internal".into(),
                },
                image_pre_pull_controller: None,
            },
            feature_gates: BTreeMap::new(),
        }
    }

    /// Reads `path` and applies it on top of [`CloudCoreConfig::default_for`],
    /// then validates. See the crate docs for the rules.
    pub fn load(path: impl AsRef<Path>, host: &HostInfo) -> Result<Self, ConfigError> {
        load::load_file(path.as_ref(), &Self::default_for(host))
    }

    /// Like [`CloudCoreConfig::load`] for text already in memory.
    pub fn from_yaml_str(text: &str, host: &HostInfo) -> Result<Self, ConfigError> {
        load::load_str(text, None, &Self::default_for(host))
    }

    /// Upstream's `AdjustCloudCoreConfig`: raises the kube API rate limits
    /// and the node-count-dependent edgeController workers/buffers to what
    /// `nodeLimit` needs. Returns whether anything changed. Not applied by
    /// [`CloudCoreConfig::load`], so a loaded config equals its file; the
    /// cloudcore binary calls it (and logs) like upstream does.
    pub fn adjust_for_node_limit(&mut self) -> bool {
        let nl = self.modules.cloud_hub.node_limit;
        let ec = &mut self.modules.edge_controller;
        let mut changed = false;
        let mut set_exact = |field: &mut i32, want: i32| {
            if *field != want {
                *field = want;
                changed = true;
            }
        };
        set_exact(&mut self.kube_api_config.qps, nl.saturating_mul(5));
        set_exact(&mut self.kube_api_config.burst, nl.saturating_mul(10));
        let mut raise = |field: &mut i32, min: i32| {
            if *field < min {
                *field = min;
                changed = true;
            }
        };
        raise(&mut ec.load.query_node_workers, nl);
        raise(&mut ec.load.patch_node_workers, 100 + nl / 50);
        raise(&mut ec.load.create_lease_workers, nl);
        raise(&mut ec.buffer.patch_node, 1024 + nl / 2);
        raise(&mut ec.buffer.query_node, nl.saturating_add(1024));
        raise(&mut ec.buffer.create_lease, nl.saturating_add(1024));
        changed
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommonConfig {
    #[serde(rename = "tunnelPort")]
    pub tunnel_port: i64,
    #[serde(rename = "monitorServer")]
    pub monitor_server: MonitorServer,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorServer {
    #[serde(rename = "bindAddress")]
    pub bind_address: String,
    #[serde(rename = "enableProfiling", skip_serializing_if = "skip::is_false")]
    pub enable_profiling: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubeApiConfig {
    pub master: String,
    #[serde(rename = "contentType")]
    pub content_type: String,
    pub qps: i32,
    pub burst: i32,
    #[serde(rename = "kubeConfig")]
    pub kube_config: String,
    /// kubeedge-rs extension: run the embedded control plane (API server on SQLite, scheduler,
    /// controllers) inside cloudcore instead of connecting to `master`/`kubeConfig`. Written only
    /// when set, so `--defaultconfig` stays upstream's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded: Option<EmbeddedControlPlane>,
}

/// Where and how the embedded control plane serves (`kubeAPIConfig.embedded`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedControlPlane {
    /// Database, API-server PKI and `admin.kubeconfig` (for kubectl) live here.
    #[serde(rename = "dataDir")]
    pub data_dir: String,
    /// `host:port` the API server listens on for kubectl (mTLS).
    #[serde(rename = "bindAddress")]
    pub bind_address: String,
    /// Seconds without a lease renewal before a node goes `Unknown`.
    #[serde(rename = "nodeMonitorGracePeriod")]
    pub node_monitor_grace_period: i32,
}

impl Default for EmbeddedControlPlane {
    fn default() -> Self {
        EmbeddedControlPlane {
            data_dir: "/var/lib/kubeedge/controlplane".into(),
            bind_address: "127.0.0.1:6443".into(),
            node_monitor_grace_period: 40,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudCoreModules {
    #[serde(rename = "cloudHub")]
    pub cloud_hub: CloudHub,
    #[serde(rename = "edgeController")]
    pub edge_controller: EdgeController,
    #[serde(rename = "deviceController")]
    pub device_controller: DeviceController,
    #[serde(rename = "taskManager")]
    pub task_manager: CloudTaskManager,
    #[serde(rename = "syncController")]
    pub sync_controller: Enable,
    #[serde(rename = "dynamicController")]
    pub dynamic_controller: Enable,
    #[serde(rename = "cloudStream")]
    pub cloud_stream: CloudStream,
    pub router: Router,
    #[serde(rename = "iptablesManager")]
    pub iptables_manager: IptablesManager,
    /// Only in newer upstream releases; accepted so their configs load,
    /// never printed unless set.
    #[serde(
        rename = "imagePrePullController",
        skip_serializing_if = "Option::is_none"
    )]
    pub image_pre_pull_controller: Option<ImagePrePullController>,
}

/// A module whose only setting is whether it runs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Enable {
    pub enable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudHub {
    pub enable: bool,
    /// Seconds an edge may stay silent before its session is dropped.
    #[serde(rename = "keepaliveInterval")]
    pub keepalive_interval: i32,
    #[serde(rename = "nodeLimit")]
    pub node_limit: i32,
    #[serde(rename = "tlsCAFile")]
    pub tls_ca_file: String,
    #[serde(rename = "tlsCAKeyFile")]
    pub tls_ca_key_file: String,
    #[serde(rename = "tlsCertFile")]
    pub tls_cert_file: String,
    #[serde(rename = "tlsPrivateKeyFile")]
    pub tls_private_key_file: String,
    #[serde(rename = "writeTimeout")]
    pub write_timeout: i32,
    pub quic: CloudHubQuic,
    #[serde(rename = "unixsocket")]
    pub unix_socket: CloudHubUnixSocket,
    pub websocket: CloudHubListener,
    pub https: CloudHubListener,
    /// IPs put in the server certificate's SANs and told to edges.
    #[serde(rename = "advertiseAddress")]
    pub advertise_address: Vec<String>,
    #[serde(rename = "dnsNames")]
    pub dns_names: Vec<String>,
    /// Days (upstream stores a bare number in a `time.Duration`).
    #[serde(rename = "edgeCertSigningDuration")]
    pub edge_cert_signing_duration: i64,
    /// Hours (same bare-number convention).
    #[serde(rename = "tokenRefreshDuration")]
    pub token_refresh_duration: i64,
    pub authorization: CloudHubAuthorization,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudHubQuic {
    pub enable: bool,
    pub address: String,
    pub port: u32,
    #[serde(rename = "maxIncomingStreams")]
    pub max_incoming_streams: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudHubUnixSocket {
    pub enable: bool,
    pub address: String,
}

/// `websocket` and `https` listeners share this shape.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudHubListener {
    pub enable: bool,
    pub address: String,
    pub port: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudHubAuthorization {
    pub enable: bool,
    /// Log authorization failures but allow the message anyway.
    pub debug: bool,
    pub modes: Vec<AuthorizationMode>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthorizationMode {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeAuthorization>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeAuthorization {
    pub enable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeController {
    pub enable: bool,
    /// Seconds.
    #[serde(rename = "nodeUpdateFrequency")]
    pub node_update_frequency: i32,
    pub buffer: EdgeControllerBuffer,
    pub load: EdgeControllerLoad,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeControllerBuffer {
    #[serde(rename = "processEvent")]
    pub process_event: i32,
    #[serde(rename = "updatePodStatus")]
    pub update_pod_status: i32,
    #[serde(rename = "updateNodeStatus")]
    pub update_node_status: i32,
    #[serde(rename = "queryConfigMap")]
    pub query_config_map: i32,
    #[serde(rename = "querySecret")]
    pub query_secret: i32,
    #[serde(rename = "podEvent")]
    pub pod_event: i32,
    #[serde(rename = "configMapEvent")]
    pub config_map_event: i32,
    #[serde(rename = "secretEvent")]
    pub secret_event: i32,
    #[serde(rename = "rulesEvent")]
    pub rules_event: i32,
    #[serde(rename = "ruleEndpointsEvent")]
    pub rule_endpoints_event: i32,
    #[serde(rename = "queryPersistentVolume")]
    pub query_persistent_volume: i32,
    #[serde(rename = "queryPersistentVolumeClaim")]
    pub query_persistent_volume_claim: i32,
    #[serde(rename = "queryVolumeAttachment")]
    pub query_volume_attachment: i32,
    #[serde(rename = "createNode")]
    pub create_node: i32,
    #[serde(rename = "patchNode")]
    pub patch_node: i32,
    #[serde(rename = "queryNode")]
    pub query_node: i32,
    #[serde(rename = "updateNode")]
    pub update_node: i32,
    #[serde(rename = "patchPod")]
    pub patch_pod: i32,
    #[serde(rename = "deletePod")]
    pub delete_pod: i32,
    #[serde(rename = "createLease")]
    pub create_lease: i32,
    #[serde(rename = "queryLease")]
    pub query_lease: i32,
    #[serde(rename = "serviceAccountToken")]
    pub service_account_token: i32,
    #[serde(rename = "createPod")]
    pub create_pod: i32,
    #[serde(rename = "certificateSigningRequest")]
    pub certificate_signing_request: i32,
}

impl EdgeControllerBuffer {
    /// Upstream sizes the node-related queues from `nodeLimit`.
    pub fn for_node_limit(node_limit: i32) -> Self {
        EdgeControllerBuffer {
            process_event: 1024,
            update_pod_status: 1024,
            update_node_status: 1024,
            query_config_map: 1024,
            query_secret: 1024,
            pod_event: 1,
            config_map_event: 1,
            secret_event: 1,
            rules_event: 1,
            rule_endpoints_event: 1,
            query_persistent_volume: 1024,
            query_persistent_volume_claim: 1024,
            query_volume_attachment: 1024,
            create_node: 1024,
            patch_node: 1024 + node_limit / 2,
            query_node: node_limit.saturating_add(1024),
            update_node: 1024,
            patch_pod: 1024,
            delete_pod: 1024,
            create_lease: node_limit.saturating_add(1024),
            query_lease: 1024,
            service_account_token: 1024,
            create_pod: 1024,
            certificate_signing_request: 1024,
        }
    }

    /// `(field name, value)` pairs, for validation messages.
    pub(crate) fn fields(&self) -> [(&'static str, i32); 24] {
        [
            ("processEvent", self.process_event),
            ("updatePodStatus", self.update_pod_status),
            ("updateNodeStatus", self.update_node_status),
            ("queryConfigMap", self.query_config_map),
            ("querySecret", self.query_secret),
            ("podEvent", self.pod_event),
            ("configMapEvent", self.config_map_event),
            ("secretEvent", self.secret_event),
            ("rulesEvent", self.rules_event),
            ("ruleEndpointsEvent", self.rule_endpoints_event),
            ("queryPersistentVolume", self.query_persistent_volume),
            (
                "queryPersistentVolumeClaim",
                self.query_persistent_volume_claim,
            ),
            ("queryVolumeAttachment", self.query_volume_attachment),
            ("createNode", self.create_node),
            ("patchNode", self.patch_node),
            ("queryNode", self.query_node),
            ("updateNode", self.update_node),
            ("patchPod", self.patch_pod),
            ("deletePod", self.delete_pod),
            ("createLease", self.create_lease),
            ("queryLease", self.query_lease),
            ("serviceAccountToken", self.service_account_token),
            ("createPod", self.create_pod),
            (
                "certificateSigningRequest",
                self.certificate_signing_request,
            ),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeControllerLoad {
    #[serde(rename = "processEventWorkers")]
    pub process_event_workers: i32,
    #[serde(rename = "updatePodStatusWorkers")]
    pub update_pod_status_workers: i32,
    #[serde(rename = "updateNodeStatusWorkers")]
    pub update_node_status_workers: i32,
    #[serde(rename = "queryConfigMapWorkers")]
    pub query_config_map_workers: i32,
    #[serde(rename = "querySecretWorkers")]
    pub query_secret_workers: i32,
    #[serde(rename = "queryPersistentVolumeWorkers")]
    pub query_persistent_volume_workers: i32,
    #[serde(rename = "queryPersistentVolumeClaimWorkers")]
    pub query_persistent_volume_claim_workers: i32,
    #[serde(rename = "queryVolumeAttachmentWorkers")]
    pub query_volume_attachment_workers: i32,
    #[serde(rename = "createNodeWorkers")]
    pub create_node_workers: i32,
    #[serde(rename = "patchNodeWorkers")]
    pub patch_node_workers: i32,
    #[serde(rename = "queryNodeWorkers")]
    pub query_node_workers: i32,
    #[serde(rename = "updateNodeWorkers")]
    pub update_node_workers: i32,
    #[serde(rename = "patchPodWorkers")]
    pub patch_pod_workers: i32,
    #[serde(rename = "deletePodWorkers")]
    pub delete_pod_workers: i32,
    #[serde(rename = "createLeaseWorkers")]
    pub create_lease_workers: i32,
    #[serde(rename = "queryLeaseWorkers")]
    pub query_lease_workers: i32,
    #[serde(rename = "UpdateRuleStatusWorkers")]
    pub update_rule_status_workers: i32,
    #[serde(rename = "ServiceAccountTokenWorkers")]
    pub service_account_token_workers: i32,
    #[serde(rename = "CreatePodWorks")]
    pub create_pod_workers: i32,
    #[serde(rename = "certificateSigningRequestWorkers")]
    pub certificate_signing_request_workers: i32,
}

impl EdgeControllerLoad {
    /// Upstream scales the node query/lease/patch workers with `nodeLimit`.
    pub fn for_node_limit(node_limit: i32) -> Self {
        EdgeControllerLoad {
            process_event_workers: 4,
            update_pod_status_workers: 1,
            update_node_status_workers: 1,
            query_config_map_workers: 100,
            query_secret_workers: 100,
            query_persistent_volume_workers: 4,
            query_persistent_volume_claim_workers: 4,
            query_volume_attachment_workers: 4,
            create_node_workers: 100,
            patch_node_workers: 100 + node_limit / 50,
            query_node_workers: node_limit,
            update_node_workers: 4,
            patch_pod_workers: 100,
            delete_pod_workers: 100,
            create_lease_workers: node_limit,
            query_lease_workers: 100,
            update_rule_status_workers: 4,
            service_account_token_workers: 100,
            create_pod_workers: 4,
            certificate_signing_request_workers: 4,
        }
    }

    pub(crate) fn fields(&self) -> [(&'static str, i32); 20] {
        [
            ("processEventWorkers", self.process_event_workers),
            ("updatePodStatusWorkers", self.update_pod_status_workers),
            ("updateNodeStatusWorkers", self.update_node_status_workers),
            ("queryConfigMapWorkers", self.query_config_map_workers),
            ("querySecretWorkers", self.query_secret_workers),
            (
                "queryPersistentVolumeWorkers",
                self.query_persistent_volume_workers,
            ),
            (
                "queryPersistentVolumeClaimWorkers",
                self.query_persistent_volume_claim_workers,
            ),
            (
                "queryVolumeAttachmentWorkers",
                self.query_volume_attachment_workers,
            ),
            ("createNodeWorkers", self.create_node_workers),
            ("patchNodeWorkers", self.patch_node_workers),
            ("queryNodeWorkers", self.query_node_workers),
            ("updateNodeWorkers", self.update_node_workers),
            ("patchPodWorkers", self.patch_pod_workers),
            ("deletePodWorkers", self.delete_pod_workers),
            ("createLeaseWorkers", self.create_lease_workers),
            ("queryLeaseWorkers", self.query_lease_workers),
            ("UpdateRuleStatusWorkers", self.update_rule_status_workers),
            (
                "ServiceAccountTokenWorkers",
                self.service_account_token_workers,
            ),
            ("CreatePodWorks", self.create_pod_workers),
            (
                "certificateSigningRequestWorkers",
                self.certificate_signing_request_workers,
            ),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceController {
    pub enable: bool,
    pub buffer: DeviceControllerBuffer,
    pub load: DeviceControllerLoad,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceControllerBuffer {
    #[serde(rename = "updateDeviceTwins")]
    pub update_device_twins: i32,
    #[serde(rename = "updateDeviceStatus")]
    pub update_device_status: i32,
    #[serde(rename = "deviceEvent")]
    pub device_event: i32,
    #[serde(rename = "deviceModelEvent")]
    pub device_model_event: i32,
    /// Newer upstream field; zero (unset) by default and then not printed.
    #[serde(
        rename = "deviceStatusEvent",
        skip_serializing_if = "skip::is_zero_i32"
    )]
    pub device_status_event: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceControllerLoad {
    #[serde(rename = "updateDeviceStatusWorkers")]
    pub update_device_status_workers: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudTaskManager {
    pub enable: bool,
    pub buffer: TaskManagerBuffer,
    pub load: TaskManagerLoad,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskManagerBuffer {
    #[serde(rename = "taskStatus")]
    pub task_status: i32,
    #[serde(rename = "taskEvent")]
    pub task_event: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskManagerLoad {
    #[serde(rename = "taskWorkers")]
    pub task_workers: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagePrePullController {
    pub enable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer: Option<ImagePrePullControllerBuffer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<ImagePrePullControllerLoad>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagePrePullControllerBuffer {
    #[serde(rename = "imagePrePullJobStatus")]
    pub image_pre_pull_job_status: i32,
    #[serde(rename = "imagePrePullJobEvent")]
    pub image_pre_pull_job_event: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagePrePullControllerLoad {
    #[serde(rename = "imagePrePullJobWorkers")]
    pub image_pre_pull_job_workers: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudStream {
    pub enable: bool,
    #[serde(rename = "tlsTunnelCAFile")]
    pub tls_tunnel_ca_file: String,
    #[serde(rename = "tlsTunnelCertFile")]
    pub tls_tunnel_cert_file: String,
    #[serde(rename = "tlsTunnelPrivateKeyFile")]
    pub tls_tunnel_private_key_file: String,
    #[serde(rename = "tunnelPort")]
    pub tunnel_port: u32,
    #[serde(rename = "tlsStreamCAFile")]
    pub tls_stream_ca_file: String,
    #[serde(rename = "tlsStreamCertFile")]
    pub tls_stream_cert_file: String,
    #[serde(rename = "tlsStreamPrivateKeyFile")]
    pub tls_stream_private_key_file: String,
    #[serde(rename = "streamPort")]
    pub stream_port: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Router {
    pub enable: bool,
    pub address: String,
    pub port: u32,
    /// Seconds.
    #[serde(rename = "restTimeout")]
    pub rest_timeout: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IptablesManager {
    pub enable: bool,
    /// `internal` (inside cloudcore) or `external` (separate deployment).
    pub mode: String,
}
