//! Whatever bytes arrive, loading returns (never panics).

use ke_config::{CloudCoreConfig, EdgeCoreConfig, HostInfo};
use proptest::prelude::*;

fn host() -> HostInfo {
    HostInfo::new("vm", [192, 0, 2, 2])
}

fn yaml_scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("''".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        "[a-zA-Z0-9:./%-]{0,12}",
    ]
}

/// Real key paths with random values: reaches the typed deserializer and
/// validation rather than stopping at the YAML parser.
fn config_like() -> impl Strategy<Value = String> {
    let paths = prop::sample::select(vec![
        "modules.edgeHub.heartbeat",
        "modules.edgeHub.websocket.server",
        "modules.edgeHub.quic.enable",
        "modules.edged.hostnameOverride",
        "modules.edged.tailoredKubeletConfig.syncFrequency",
        "modules.edged.tailoredKubeletConfig.evictionHard",
        "modules.edged.tailoredKubeletConfig.logging.flushFrequency",
        "modules.eventBus.mqttMode",
        "modules.cloudHub.advertiseAddress",
        "modules.cloudHub.websocket.port",
        "database.dataSource",
        "apiVersion",
    ]);
    (paths, yaml_scalar()).prop_map(|(path, value)| {
        let mut doc = String::new();
        for (depth, seg) in path.split('.').enumerate() {
            if depth > 0 {
                doc.push('\n');
            }
            doc.push_str(&"  ".repeat(depth));
            doc.push_str(seg);
            doc.push(':');
        }
        format!("{doc} {value}\n")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_text_never_panics(s in ".{0,200}") {
        let _ = EdgeCoreConfig::from_yaml_str(&s, &host());
        let _ = CloudCoreConfig::from_yaml_str(&s, &host());
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let s = String::from_utf8_lossy(&bytes);
        let _ = EdgeCoreConfig::from_yaml_str(&s, &host());
        let _ = CloudCoreConfig::from_yaml_str(&s, &host());
    }

    #[test]
    fn config_shaped_input_never_panics(doc in config_like()) {
        let _ = EdgeCoreConfig::from_yaml_str(&doc, &host());
        let _ = CloudCoreConfig::from_yaml_str(&doc, &host());
    }

    #[test]
    fn durations_round_trip(nanos in any::<i64>()) {
        let d = ke_config::GoDuration::from_nanos(nanos);
        prop_assert_eq!(d.to_string().parse::<ke_config::GoDuration>(), Ok(d));
    }
}
