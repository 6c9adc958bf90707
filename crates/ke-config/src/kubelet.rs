//! `modules.edged.tailoredKubeletConfig`: KubeEdge's trimmed copy of the
//! kubelet's `KubeletConfiguration`.
//!
//! Every field upstream's `TailoredKubeletConfiguration` has is typed here,
//! not only the ones `--defaultconfig` prints, because real configs set
//! others (`cgroupRoot`, `systemReserved`, `clusterDNS`, ...) and we reject
//! unknown fields.
//!
//! Serialization rule used throughout the crate: a field Go tags `omitempty`
//! is skipped only when its default is the zero value, so the rendered default
//! matches upstream and render → load never loses a value (skipping a field
//! whose default is non-zero would silently turn it back into the default).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::duration::{GoDuration, TimeOrMetaDuration};
use crate::skip;

/// A Kubernetes `resource.Quantity` kept as text (`"100Mi"`, `"0"`).
/// Accepts YAML numbers too, as Go does, and always writes a string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Quantity(pub String);

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as \"100Mi\" or 0")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TailoredKubeletConfig {
    #[serde(rename = "staticPodPath")]
    pub static_pod_path: String,
    #[serde(rename = "podLogsDir")]
    pub pod_logs_dir: String,
    #[serde(rename = "syncFrequency")]
    pub sync_frequency: GoDuration,
    #[serde(rename = "fileCheckFrequency")]
    pub file_check_frequency: GoDuration,
    pub address: String,
    #[serde(rename = "readOnlyPort")]
    pub read_only_port: i32,
    #[serde(rename = "registryPullQPS")]
    pub registry_pull_qps: Option<i32>,
    #[serde(rename = "registryBurst")]
    pub registry_burst: i32,
    #[serde(rename = "eventRecordQPS")]
    pub event_record_qps: Option<i32>,
    #[serde(rename = "eventBurst")]
    pub event_burst: i32,
    #[serde(rename = "enableDebuggingHandlers")]
    pub enable_debugging_handlers: Option<bool>,
    #[serde(
        rename = "enableContentionProfiling",
        skip_serializing_if = "skip::is_false"
    )]
    pub enable_contention_profiling: bool,
    #[serde(rename = "oomScoreAdj")]
    pub oom_score_adj: Option<i32>,
    #[serde(rename = "clusterDomain")]
    pub cluster_domain: String,
    #[serde(rename = "clusterDNS", skip_serializing_if = "Vec::is_empty")]
    pub cluster_dns: Vec<String>,
    #[serde(rename = "streamingConnectionIdleTimeout")]
    pub streaming_connection_idle_timeout: GoDuration,
    #[serde(rename = "nodeStatusUpdateFrequency")]
    pub node_status_update_frequency: GoDuration,
    #[serde(rename = "nodeStatusReportFrequency")]
    pub node_status_report_frequency: GoDuration,
    #[serde(rename = "nodeLeaseDurationSeconds")]
    pub node_lease_duration_seconds: i32,
    #[serde(rename = "imageMinimumGCAge")]
    pub image_minimum_gc_age: GoDuration,
    #[serde(rename = "imageMaximumGCAge")]
    pub image_maximum_gc_age: GoDuration,
    #[serde(rename = "imageGCHighThresholdPercent")]
    pub image_gc_high_threshold_percent: Option<i32>,
    #[serde(rename = "imageGCLowThresholdPercent")]
    pub image_gc_low_threshold_percent: Option<i32>,
    #[serde(rename = "volumeStatsAggPeriod")]
    pub volume_stats_agg_period: GoDuration,
    #[serde(rename = "kubeletCgroups", skip_serializing_if = "String::is_empty")]
    pub kubelet_cgroups: String,
    #[serde(rename = "systemCgroups", skip_serializing_if = "String::is_empty")]
    pub system_cgroups: String,
    #[serde(rename = "cgroupRoot", skip_serializing_if = "String::is_empty")]
    pub cgroup_root: String,
    #[serde(rename = "cgroupsPerQOS")]
    pub cgroups_per_qos: Option<bool>,
    #[serde(rename = "cgroupDriver")]
    pub cgroup_driver: String,
    #[serde(rename = "cpuManagerPolicy")]
    pub cpu_manager_policy: String,
    #[serde(
        rename = "cpuManagerPolicyOptions",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub cpu_manager_policy_options: BTreeMap<String, String>,
    #[serde(rename = "cpuManagerReconcilePeriod")]
    pub cpu_manager_reconcile_period: GoDuration,
    #[serde(rename = "memoryManagerPolicy")]
    pub memory_manager_policy: String,
    #[serde(rename = "topologyManagerPolicy")]
    pub topology_manager_policy: String,
    #[serde(rename = "topologyManagerScope")]
    pub topology_manager_scope: String,
    #[serde(
        rename = "topologyManagerPolicyOptions",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub topology_manager_policy_options: BTreeMap<String, String>,
    #[serde(rename = "qosReserved", skip_serializing_if = "BTreeMap::is_empty")]
    pub qos_reserved: BTreeMap<String, String>,
    #[serde(rename = "runtimeRequestTimeout")]
    pub runtime_request_timeout: GoDuration,
    #[serde(rename = "hairpinMode")]
    pub hairpin_mode: String,
    #[serde(rename = "maxPods")]
    pub max_pods: i32,
    #[serde(rename = "podCIDR", skip_serializing_if = "String::is_empty")]
    pub pod_cidr: String,
    #[serde(rename = "podPidsLimit")]
    pub pod_pids_limit: Option<i64>,
    #[serde(rename = "resolvConf")]
    pub resolv_conf: Option<String>,
    #[serde(rename = "cpuCFSQuota")]
    pub cpu_cfs_quota: Option<bool>,
    #[serde(rename = "cpuCFSQuotaPeriod")]
    pub cpu_cfs_quota_period: Option<GoDuration>,
    #[serde(rename = "nodeStatusMaxImages")]
    pub node_status_max_images: Option<i32>,
    #[serde(rename = "maxOpenFiles")]
    pub max_open_files: i64,
    #[serde(rename = "contentType")]
    pub content_type: String,
    #[serde(rename = "serializeImagePulls")]
    pub serialize_image_pulls: Option<bool>,
    #[serde(
        rename = "maxParallelImagePulls",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_parallel_image_pulls: Option<i32>,
    #[serde(rename = "evictionHard")]
    pub eviction_hard: BTreeMap<String, String>,
    #[serde(rename = "evictionSoft", skip_serializing_if = "BTreeMap::is_empty")]
    pub eviction_soft: BTreeMap<String, String>,
    #[serde(
        rename = "evictionSoftGracePeriod",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub eviction_soft_grace_period: BTreeMap<String, String>,
    #[serde(rename = "evictionPressureTransitionPeriod")]
    pub eviction_pressure_transition_period: GoDuration,
    #[serde(
        rename = "evictionMaxPodGracePeriod",
        skip_serializing_if = "skip::is_zero_i32"
    )]
    pub eviction_max_pod_grace_period: i32,
    #[serde(
        rename = "evictionMinimumReclaim",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub eviction_minimum_reclaim: BTreeMap<String, String>,
    #[serde(rename = "podsPerCore", skip_serializing_if = "skip::is_zero_i32")]
    pub pods_per_core: i32,
    #[serde(rename = "enableControllerAttachDetach")]
    pub enable_controller_attach_detach: Option<bool>,
    #[serde(
        rename = "protectKernelDefaults",
        skip_serializing_if = "skip::is_false"
    )]
    pub protect_kernel_defaults: bool,
    #[serde(rename = "makeIPTablesUtilChains")]
    pub make_iptables_util_chains: Option<bool>,
    #[serde(rename = "iptablesMasqueradeBit")]
    pub iptables_masquerade_bit: Option<i32>,
    #[serde(rename = "iptablesDropBit")]
    pub iptables_drop_bit: Option<i32>,
    #[serde(rename = "featureGates", skip_serializing_if = "BTreeMap::is_empty")]
    pub feature_gates: BTreeMap<String, bool>,
    #[serde(rename = "failSwapOn")]
    pub fail_swap_on: Option<bool>,
    #[serde(rename = "failCgroupV1")]
    pub fail_cgroup_v1: Option<bool>,
    #[serde(rename = "memorySwap")]
    pub memory_swap: MemorySwap,
    #[serde(rename = "containerLogMaxSize")]
    pub container_log_max_size: String,
    #[serde(rename = "containerLogMaxFiles")]
    pub container_log_max_files: Option<i32>,
    #[serde(rename = "containerLogMaxWorkers")]
    pub container_log_max_workers: Option<i32>,
    #[serde(rename = "containerLogMonitorInterval")]
    pub container_log_monitor_interval: Option<GoDuration>,
    #[serde(rename = "configMapAndSecretChangeDetectionStrategy")]
    pub config_map_and_secret_change_detection_strategy: String,
    #[serde(rename = "systemReserved", skip_serializing_if = "BTreeMap::is_empty")]
    pub system_reserved: BTreeMap<String, String>,
    #[serde(rename = "kubeReserved", skip_serializing_if = "BTreeMap::is_empty")]
    pub kube_reserved: BTreeMap<String, String>,
    #[serde(
        rename = "reservedSystemCPUs",
        skip_serializing_if = "String::is_empty"
    )]
    pub reserved_system_cpus: String,
    #[serde(
        rename = "showHiddenMetricsForVersion",
        skip_serializing_if = "String::is_empty"
    )]
    pub show_hidden_metrics_for_version: String,
    #[serde(
        rename = "systemReservedCgroup",
        skip_serializing_if = "String::is_empty"
    )]
    pub system_reserved_cgroup: String,
    #[serde(
        rename = "kubeReservedCgroup",
        skip_serializing_if = "String::is_empty"
    )]
    pub kube_reserved_cgroup: String,
    #[serde(rename = "enforceNodeAllocatable")]
    pub enforce_node_allocatable: Vec<String>,
    #[serde(rename = "allowedUnsafeSysctls", skip_serializing_if = "Vec::is_empty")]
    pub allowed_unsafe_sysctls: Vec<String>,
    #[serde(rename = "volumePluginDir")]
    pub volume_plugin_dir: String,
    #[serde(
        rename = "kernelMemcgNotification",
        skip_serializing_if = "skip::is_false"
    )]
    pub kernel_memcg_notification: bool,
    pub logging: Logging,
    #[serde(rename = "enableSystemLogHandler")]
    pub enable_system_log_handler: Option<bool>,
    #[serde(
        rename = "enableSystemLogQuery",
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_system_log_query: Option<bool>,
    #[serde(rename = "shutdownGracePeriod")]
    pub shutdown_grace_period: GoDuration,
    #[serde(rename = "shutdownGracePeriodCriticalPods")]
    pub shutdown_grace_period_critical_pods: GoDuration,
    #[serde(
        rename = "shutdownGracePeriodByPodPriority",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub shutdown_grace_period_by_pod_priority: Vec<ShutdownGracePeriodByPodPriority>,
    #[serde(rename = "reservedMemory", skip_serializing_if = "Vec::is_empty")]
    pub reserved_memory: Vec<MemoryReservation>,
    #[serde(rename = "enableProfilingHandler")]
    pub enable_profiling_handler: Option<bool>,
    #[serde(rename = "enableDebugFlagsHandler")]
    pub enable_debug_flags_handler: Option<bool>,
    #[serde(rename = "seccompDefault")]
    pub seccomp_default: Option<bool>,
    #[serde(rename = "memoryThrottlingFactor")]
    pub memory_throttling_factor: Option<f64>,
    #[serde(rename = "registerWithTaints", skip_serializing_if = "Vec::is_empty")]
    pub register_with_taints: Vec<Taint>,
    #[serde(rename = "registerNode")]
    pub register_node: Option<bool>,
    #[serde(rename = "localStorageCapacityIsolation")]
    pub local_storage_capacity_isolation: Option<bool>,
    #[serde(rename = "containerRuntimeEndpoint")]
    pub container_runtime_endpoint: String,
    #[serde(rename = "imageServiceEndpoint")]
    pub image_service_endpoint: String,
    #[serde(rename = "crashLoopBackOff")]
    pub crash_loop_back_off: CrashLoopBackOff,
}

impl Default for TailoredKubeletConfig {
    /// Upstream's `SetDefaultsKubeletConfiguration` (Linux values).
    fn default() -> Self {
        let endpoint = "unix:///run/containerd/containerd.sock".to_owned();
        TailoredKubeletConfig {
            static_pod_path: "/etc/kubeedge/manifests".into(),
            pod_logs_dir: "/var/log/pods".into(),
            sync_frequency: GoDuration::from_secs(60),
            file_check_frequency: GoDuration::from_secs(20),
            address: "127.0.0.1".into(),
            read_only_port: 10350,
            registry_pull_qps: Some(5),
            registry_burst: 10,
            event_record_qps: Some(50),
            event_burst: 100,
            enable_debugging_handlers: Some(true),
            enable_contention_profiling: false,
            oom_score_adj: Some(-999),
            cluster_domain: "cluster.local".into(),
            cluster_dns: Vec::new(),
            streaming_connection_idle_timeout: GoDuration::from_secs(4 * 3600),
            node_status_update_frequency: GoDuration::from_secs(10),
            node_status_report_frequency: GoDuration::from_secs(5 * 60),
            node_lease_duration_seconds: 40,
            image_minimum_gc_age: GoDuration::from_secs(2 * 60),
            image_maximum_gc_age: GoDuration::ZERO,
            image_gc_high_threshold_percent: Some(85),
            image_gc_low_threshold_percent: Some(80),
            volume_stats_agg_period: GoDuration::from_secs(60),
            kubelet_cgroups: String::new(),
            system_cgroups: String::new(),
            cgroup_root: String::new(),
            cgroups_per_qos: Some(true),
            cgroup_driver: "cgroupfs".into(),
            cpu_manager_policy: "none".into(),
            cpu_manager_policy_options: BTreeMap::new(),
            cpu_manager_reconcile_period: GoDuration::from_secs(10),
            memory_manager_policy: "None".into(),
            topology_manager_policy: "none".into(),
            topology_manager_scope: "container".into(),
            topology_manager_policy_options: BTreeMap::new(),
            qos_reserved: BTreeMap::new(),
            runtime_request_timeout: GoDuration::from_secs(2 * 60),
            hairpin_mode: "promiscuous-bridge".into(),
            max_pods: 110,
            pod_cidr: String::new(),
            pod_pids_limit: Some(-1),
            resolv_conf: Some("/etc/resolv.conf".into()),
            cpu_cfs_quota: Some(true),
            cpu_cfs_quota_period: Some(GoDuration::from_millis(100)),
            node_status_max_images: Some(0),
            max_open_files: 1_000_000,
            content_type: "application/json".into(),
            serialize_image_pulls: Some(true),
            max_parallel_image_pulls: None,
            eviction_hard: [
                ("imagefs.available", "15%"),
                ("imagefs.inodesFree", "5%"),
                ("memory.available", "100Mi"),
                ("nodefs.available", "10%"),
                ("nodefs.inodesFree", "5%"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            eviction_soft: BTreeMap::new(),
            eviction_soft_grace_period: BTreeMap::new(),
            eviction_pressure_transition_period: GoDuration::from_secs(5 * 60),
            eviction_max_pod_grace_period: 0,
            eviction_minimum_reclaim: BTreeMap::new(),
            pods_per_core: 0,
            enable_controller_attach_detach: Some(true),
            protect_kernel_defaults: false,
            make_iptables_util_chains: Some(true),
            iptables_masquerade_bit: Some(14),
            iptables_drop_bit: Some(15),
            feature_gates: BTreeMap::new(),
            fail_swap_on: Some(false),
            fail_cgroup_v1: Some(false),
            memory_swap: MemorySwap::default(),
            container_log_max_size: "10Mi".into(),
            container_log_max_files: Some(5),
            container_log_max_workers: Some(1),
            container_log_monitor_interval: Some(GoDuration::from_secs(10)),
            config_map_and_secret_change_detection_strategy: "Get".into(),
            system_reserved: BTreeMap::new(),
            kube_reserved: BTreeMap::new(),
            reserved_system_cpus: String::new(),
            show_hidden_metrics_for_version: String::new(),
            system_reserved_cgroup: String::new(),
            kube_reserved_cgroup: String::new(),
            enforce_node_allocatable: vec!["pods".into()],
            allowed_unsafe_sysctls: Vec::new(),
            volume_plugin_dir: "/usr/libexec/kubernetes/kubelet-plugins/volume/exec/".into(),
            kernel_memcg_notification: false,
            logging: Logging::default(),
            enable_system_log_handler: Some(true),
            enable_system_log_query: None,
            shutdown_grace_period: GoDuration::ZERO,
            shutdown_grace_period_critical_pods: GoDuration::ZERO,
            shutdown_grace_period_by_pod_priority: Vec::new(),
            reserved_memory: Vec::new(),
            enable_profiling_handler: Some(true),
            enable_debug_flags_handler: Some(true),
            seccomp_default: Some(false),
            memory_throttling_factor: Some(0.9),
            register_with_taints: Vec::new(),
            register_node: Some(true),
            local_storage_capacity_isolation: Some(true),
            container_runtime_endpoint: endpoint.clone(),
            image_service_endpoint: endpoint,
            crash_loop_back_off: CrashLoopBackOff::default(),
        }
    }
}

/// `memorySwap` (always printed, `{}` by default, like Go's value struct).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySwap {
    #[serde(rename = "swapBehavior", skip_serializing_if = "String::is_empty")]
    pub swap_behavior: String,
}

/// `crashLoopBackOff` (always printed, `{}` by default).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrashLoopBackOff {
    #[serde(
        rename = "maxContainerRestartPeriod",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_container_restart_period: Option<GoDuration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownGracePeriodByPodPriority {
    pub priority: i32,
    #[serde(rename = "shutdownGracePeriodSeconds")]
    pub shutdown_grace_period_seconds: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryReservation {
    #[serde(rename = "numaNode")]
    pub numa_node: i32,
    pub limits: BTreeMap<String, Quantity>,
}

/// A core/v1 `Taint` as used by `registerWithTaints`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Taint {
    pub key: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub value: String,
    pub effect: String,
    #[serde(rename = "timeAdded", skip_serializing_if = "Option::is_none")]
    pub time_added: Option<String>,
}

/// component-base `LoggingConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Logging {
    pub format: String,
    #[serde(rename = "flushFrequency")]
    pub flush_frequency: TimeOrMetaDuration,
    pub verbosity: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vmodule: Vec<VModuleItem>,
    pub options: LoggingOptions,
}

impl Default for Logging {
    /// component-base's recommended logging configuration.
    fn default() -> Self {
        Logging {
            format: "text".into(),
            flush_frequency: TimeOrMetaDuration {
                duration: GoDuration::from_secs(5),
                serialize_as_string: true,
            },
            verbosity: 0,
            vmodule: Vec::new(),
            options: LoggingOptions::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VModuleItem {
    #[serde(rename = "filePattern")]
    pub file_pattern: String,
    pub verbosity: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingOptions {
    pub text: OutputRoutingOptions,
    pub json: OutputRoutingOptions,
}

/// Shared shape of the `text` and `json` logging options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputRoutingOptions {
    #[serde(rename = "splitStream", skip_serializing_if = "skip::is_false")]
    pub split_stream: bool,
    #[serde(rename = "infoBufferSize")]
    pub info_buffer_size: Quantity,
}

impl Default for OutputRoutingOptions {
    fn default() -> Self {
        OutputRoutingOptions {
            split_stream: false,
            info_buffer_size: Quantity("0".into()),
        }
    }
}
