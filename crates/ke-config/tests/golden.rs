//! The upstream `--defaultconfig` / `--minconfig` outputs (tests/golden/,
//! captured from KubeEdge on a host named `vm` at 192.0.2.2) against ours.

use std::path::PathBuf;

use ke_config::{
    CloudCoreConfig, EdgeCoreConfig, HostInfo, render_default_cloudcore, render_default_edgecore,
    render_min_cloudcore, render_min_edgecore,
};

fn golden_host() -> HostInfo {
    HostInfo::new("vm", [192, 0, 2, 2])
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn golden_text(name: &str) -> String {
    std::fs::read_to_string(golden_path(name))
        .unwrap_or_else(|e| panic!("reading golden {name}: {e}"))
}

fn yaml_value(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("parsing YAML: {e}\n{text}"))
}

type Render = fn(&HostInfo) -> String;

const CASES: [(&str, Render); 4] = [
    ("cloudcore-defaultconfig.yaml", render_default_cloudcore),
    ("cloudcore-minconfig.yaml", render_min_cloudcore),
    ("edgecore-defaultconfig.yaml", render_default_edgecore),
    ("edgecore-minconfig.yaml", render_min_edgecore),
];

/// Where our defaults differ from upstream's, on purpose: the MQTT broker is embedded by
/// default (`mqttMode: 0`), on the port mappers dial (1883) — upstream expects mosquitto there.
const OUR_DEFAULTS: [(&str, &str); 2] = [
    ("    mqttMode: 0\n", "    mqttMode: 2\n"),
    (
        "    mqttServerInternal: tcp://127.0.0.1:1883\n",
        "    mqttServerInternal: tcp://127.0.0.1:1884\n",
    ),
];

/// Our rendering with upstream's values put back where [`OUR_DEFAULTS`] differ.
fn with_upstream_defaults(name: &str, ours: String) -> String {
    if !name.starts_with("edgecore") {
        return ours;
    }
    OUR_DEFAULTS.iter().fold(ours, |text, (ours, theirs)| {
        assert_eq!(text.matches(ours).count(), 1, "{name}: {ours:?}");
        text.replace(ours, theirs)
    })
}

#[test]
fn rendered_output_is_byte_identical_to_upstream_but_for_our_named_defaults() {
    for (name, render) in CASES {
        let ours = with_upstream_defaults(name, render(&golden_host()));
        let theirs = golden_text(name);
        if ours != theirs {
            let first_diff = ours
                .lines()
                .zip(theirs.lines())
                .enumerate()
                .find(|(_, (a, b))| a != b);
            panic!("{name} differs; first differing line: {first_diff:?}");
        }
    }
}

#[test]
fn rendered_output_parses_to_the_same_yaml_value_as_upstream() {
    for (name, render) in CASES {
        assert_eq!(
            yaml_value(&with_upstream_defaults(name, render(&golden_host()))),
            yaml_value(&golden_text(name)),
            "{name}"
        );
    }
}

#[test]
fn golden_files_load_unchanged() {
    let host = golden_host();
    for name in ["cloudcore-defaultconfig.yaml", "cloudcore-minconfig.yaml"] {
        if let Err(e) = CloudCoreConfig::load(golden_path(name), &host) {
            panic!("{name}: {e}");
        }
    }
    for name in ["edgecore-defaultconfig.yaml", "edgecore-minconfig.yaml"] {
        if let Err(e) = EdgeCoreConfig::load(golden_path(name), &host) {
            panic!("{name}: {e}");
        }
    }
}

#[test]
fn golden_default_files_load_to_our_defaults() {
    let host = golden_host();
    let cloud = CloudCoreConfig::load(golden_path("cloudcore-defaultconfig.yaml"), &host);
    assert_eq!(cloud.ok(), Some(CloudCoreConfig::default_for(&host)));
    let edge = EdgeCoreConfig::load(golden_path("edgecore-defaultconfig.yaml"), &host);
    assert_eq!(edge.ok(), Some(upstream_edge_defaults(&host)));
}

/// Our edgecore defaults with the MQTT settings an upstream file spells out (see
/// [`OUR_DEFAULTS`]): a file from upstream keeps meaning what it meant there.
fn upstream_edge_defaults(host: &HostInfo) -> EdgeCoreConfig {
    let mut config = EdgeCoreConfig::default_for(host);
    config.modules.event_bus.mqtt_mode = ke_config::MQTT_MODE_EXTERNAL;
    config.modules.event_bus.mqtt_server_internal = "tcp://127.0.0.1:1884".into();
    config
}

#[test]
fn golden_min_files_keep_every_default_they_do_not_mention() {
    let host = golden_host();

    let mut want = CloudCoreConfig::default_for(&host);
    want.modules.cloud_hub.enable = false;
    want.modules.cloud_hub.node_limit = 1000;
    let got = CloudCoreConfig::load(golden_path("cloudcore-minconfig.yaml"), &host);
    assert_eq!(got.ok(), Some(want));

    let mut want = upstream_edge_defaults(&host);
    want.modules.edge_hub.enable = false;
    want.modules.device_twin.enable = false;
    want.modules.event_bus.enable = false;
    let got = EdgeCoreConfig::load(golden_path("edgecore-minconfig.yaml"), &host);
    assert_eq!(got.ok(), Some(want));
}

#[test]
fn rendered_defaults_load_back_to_equal_structs_for_other_hosts_too() {
    for host in [
        golden_host(),
        HostInfo::new("edge-7.example", [10, 1, 2, 3]),
        HostInfo::new(
            "v6node",
            "2001:db8::1"
                .parse::<std::net::IpAddr>()
                .unwrap_or([0u8; 16].into()),
        ),
    ] {
        let cloud = CloudCoreConfig::from_yaml_str(&render_default_cloudcore(&host), &host);
        assert_eq!(
            cloud.ok(),
            Some(CloudCoreConfig::default_for(&host)),
            "{host:?}"
        );
        let edge = EdgeCoreConfig::from_yaml_str(&render_default_edgecore(&host), &host);
        assert_eq!(
            edge.ok(),
            Some(EdgeCoreConfig::default_for(&host)),
            "{host:?}"
        );
    }
}

#[test]
fn host_values_land_where_upstream_puts_them() {
    let host = HostInfo::new(
        "node-a",
        "2001:db8::1"
            .parse::<std::net::IpAddr>()
            .unwrap_or([0u8; 16].into()),
    );
    let edge = EdgeCoreConfig::default_for(&host);
    assert_eq!(edge.modules.edged.hostname_override, "node-a");
    assert_eq!(
        edge.modules.edge_hub.websocket.server,
        "[2001:db8::1]:10000"
    );
    assert_eq!(edge.modules.edge_hub.quic.server, "[2001:db8::1]:10001");
    assert_eq!(
        edge.modules.edge_hub.http_server,
        "https://[2001:db8::1]:10002"
    );
    let cloud = CloudCoreConfig::default_for(&host);
    assert_eq!(
        cloud.modules.cloud_hub.advertise_address,
        vec!["2001:db8::1"]
    );
}

#[test]
fn a_written_back_config_keeps_non_default_values() {
    let host = golden_host();
    let mut edge = EdgeCoreConfig::default_for(&host);
    edge.modules.edged.register_schedulable = false;
    edge.modules.edge_hub.rotate_certificates = false;
    edge.modules.edged.tailored_kubelet_config.read_only_port = 0;
    edge.modules.edged.tailored_kubelet_config.registry_pull_qps = None;
    edge.modules.edged.tailored_kubelet_config.cgroup_root = "/kubeedge".into();
    edge.modules
        .edged
        .node_labels
        .insert("zone".into(), "a".into());
    edge.modules.meta_manager.meta_server.api_audiences = Some(vec![]);
    let text = ke_config::to_yaml(&edge);
    assert_eq!(EdgeCoreConfig::from_yaml_str(&text, &host).ok(), Some(edge));
}
