//! Loading behaviour a user notices: partial files, typos, wrong files and
//! garbage.

use std::io::Write;

use ke_config::{CloudCoreConfig, ConfigError, EdgeCoreConfig, GoDuration, HostInfo};

fn host() -> HostInfo {
    HostInfo::new("vm", [192, 0, 2, 2])
}

fn edge(text: &str) -> Result<EdgeCoreConfig, ConfigError> {
    EdgeCoreConfig::from_yaml_str(text, &host())
}

fn cloud(text: &str) -> Result<CloudCoreConfig, ConfigError> {
    CloudCoreConfig::from_yaml_str(text, &host())
}

fn err_text<T: std::fmt::Debug>(r: Result<T, ConfigError>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_few_fields_override_and_everything_else_keeps_its_default() {
    let got = edge(
        "modules:
  edgeHub:
    heartbeat: 30
    websocket:
      server: cloud.example:10000
  edged:
    tailoredKubeletConfig:
      maxPods: 50
      clusterDNS: [169.254.96.16]
      cgroupRoot: /kubeedge
      systemReserved: {cpu: 200m}
      syncFrequency: 90s
",
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let mut want = EdgeCoreConfig::default_for(&host());
    want.modules.edge_hub.heartbeat = 30;
    want.modules.edge_hub.websocket.server = "cloud.example:10000".into();
    let k = &mut want.modules.edged.tailored_kubelet_config;
    k.max_pods = 50;
    k.cluster_dns = vec!["169.254.96.16".into()];
    k.cgroup_root = "/kubeedge".into();
    k.system_reserved.insert("cpu".into(), "200m".into());
    k.sync_frequency = GoDuration::from_secs(90);
    assert_eq!(got, want);
}

#[test]
fn map_fields_merge_with_their_defaults_like_go() {
    let got = edge(
        "modules:
  edged:
    tailoredKubeletConfig:
      evictionHard:
        memory.available: 300Mi
",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let hard = &got.modules.edged.tailored_kubelet_config.eviction_hard;
    assert_eq!(
        hard.get("memory.available").map(String::as_str),
        Some("300Mi")
    );
    assert_eq!(
        hard.get("nodefs.available").map(String::as_str),
        Some("10%")
    );
    assert_eq!(hard.len(), 5);
}

#[test]
fn cloudcore_partial_config() {
    let got = cloud(
        "apiVersion: cloudcore.config.kubeedge.io/v1alpha1
kind: CloudCore
modules:
  cloudHub:
    advertiseAddress: [10.0.0.1, 10.0.0.2]
    nodeLimit: 1000
  router:
    enable: true
featureGates:
  requireAuthorization: true
",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut want = CloudCoreConfig::default_for(&host());
    want.modules.cloud_hub.advertise_address = vec!["10.0.0.1".into(), "10.0.0.2".into()];
    want.modules.cloud_hub.node_limit = 1000;
    want.modules.router.enable = true;
    want.feature_gates
        .insert("requireAuthorization".into(), true);
    assert_eq!(got, want);

    // The loaded file is not silently rewritten; adjusting is explicit.
    let mut adjusted = got.clone();
    assert!(adjusted.adjust_for_node_limit());
    assert_eq!(adjusted.kube_api_config.qps, 5000);
    assert_eq!(
        adjusted.modules.edge_controller.load.query_node_workers,
        1000
    );
    assert_eq!(adjusted.modules.edge_controller.buffer.query_node, 2024);
    assert!(!adjusted.adjust_for_node_limit());
}

#[test]
fn typo_names_the_full_dotted_path() {
    let msg = err_text(edge("modules:\n  edgeHub:\n    heartbeet: 5\n"));
    assert!(msg.contains("modules.edgeHub.heartbeet"), "{msg}");
    assert!(msg.contains("unknown field"), "{msg}");
    assert!(
        msg.contains("heartbeat"),
        "should list the valid names: {msg}"
    );

    let msg = err_text(cloud(
        "modules:\n  cloudHub:\n    websocket:\n      prot: 1\n",
    ));
    assert!(msg.contains("modules.cloudHub.websocket.prot"), "{msg}");

    let msg = err_text(edge(
        "modules:\n  edged:\n    tailoredKubeletConfig:\n      registerWithTaints:\n      - key: a\n        efect: NoSchedule\n",
    ));
    assert!(
        msg.contains("modules.edged.tailoredKubeletConfig.registerWithTaints[0].efect"),
        "{msg}"
    );

    // A key at the wrong level is just as unknown.
    let msg = err_text(edge("modules:\n  heartbeat: 5\n"));
    assert!(msg.contains("modules.heartbeat"), "{msg}");
}

#[test]
fn field_names_match_case_insensitively_like_upstream() {
    let got = edge("modules:\n  edgeHub:\n    Heartbeat: 20\n").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.modules.edge_hub.heartbeat, 20);
    let got = cloud("modules:\n  cloudHub:\n    tlsCaFile: /x/ca.crt\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.modules.cloud_hub.tls_ca_file, "/x/ca.crt");
}

#[test]
fn wrong_types_name_the_field() {
    let msg = err_text(edge("modules:\n  edgeHub:\n    heartbeat: abc\n"));
    assert!(msg.contains("modules.edgeHub.heartbeat"), "{msg}");
    let msg = err_text(edge("modules:\n  edgeHub:\n    heartbeat: 99999999999\n"));
    assert!(msg.contains("modules.edgeHub.heartbeat"), "{msg}");
    let msg = err_text(edge("modules:\n  edged: null\n"));
    assert!(msg.contains("modules.edged"), "{msg}");
    let msg = err_text(cloud(
        "modules:\n  cloudHub:\n    websocket:\n      port: -1\n",
    ));
    assert!(msg.contains("modules.cloudHub.websocket.port"), "{msg}");
    let msg = err_text(edge("modules:\n  eventBus:\n    mqttQOS: 300\n"));
    assert!(msg.contains("modules.eventBus.mqttQOS"), "{msg}");
}

#[test]
fn durations_use_go_syntax() {
    let msg = err_text(edge(
        "modules:\n  edged:\n    tailoredKubeletConfig:\n      syncFrequency: 10x\n",
    ));
    assert!(msg.contains("tailoredKubeletConfig.syncFrequency"), "{msg}");
    assert!(msg.contains("unknown unit"), "{msg}");
    // A bare number is not a metav1.Duration (Go rejects it too).
    assert!(
        edge("modules:\n  edged:\n    tailoredKubeletConfig:\n      syncFrequency: 10\n").is_err()
    );
    // logging.flushFrequency is the exception: it also takes nanoseconds.
    let got = edge(
        "modules:\n  edged:\n    tailoredKubeletConfig:\n      logging:\n        flushFrequency: 2000000000\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let ff = got
        .modules
        .edged
        .tailored_kubelet_config
        .logging
        .flush_frequency;
    assert_eq!(ff.duration, GoDuration::from_secs(2));
    assert!(ke_config::to_yaml(&got).contains("flushFrequency: 2000000000\n"));
}

#[test]
fn wrong_api_version_or_kind_names_the_expected_value() {
    let msg = err_text(edge("apiVersion: edgecore.config.kubeedge.io/v1alpha1\n"));
    assert!(msg.contains("apiVersion"), "{msg}");
    assert!(
        msg.contains("edgecore.config.kubeedge.io/v1alpha2"),
        "{msg}"
    );

    // Handing cloudcore's file to edgecore.
    let cloud_file = ke_config::render_default_cloudcore(&host());
    let msg = err_text(edge(&cloud_file));
    assert!(
        msg.contains("edgecore.config.kubeedge.io/v1alpha2"),
        "{msg}"
    );

    let msg = err_text(cloud("kind: EdgeCore\n"));
    assert!(msg.contains("kind") && msg.contains("CloudCore"), "{msg}");
    // A case-variant key is the same field to upstream, so it is checked too.
    let msg = err_text(edge("apiversion: v1\n"));
    assert!(
        msg.contains("edgecore.config.kubeedge.io/v1alpha2"),
        "{msg}"
    );
    assert!(matches!(
        cloud("apiVersion: 3\n"),
        Err(ConfigError::WrongTypeMeta {
            field: "apiVersion",
            ..
        })
    ));
}

#[test]
fn garbage_is_a_clear_error() {
    for (input, what) in [
        ("a: [\n", "not valid YAML"),
        ("modules: {edgeHub: }}\n", "not valid YAML"),
        ("\tmodules:\n", "not valid YAML"),
        ("a: 1\na: 2\n", "not valid YAML"),
        ("- 1\n- 2\n", "found a sequence"),
        ("just a string\n", "found a string"),
        ("42\n", "found a number"),
        ("", "config is empty"),
        ("# only a comment\n", "config is empty"),
        (
            "modules:\n  edgeHub:\n    heartbeat: .nan\n",
            "not a finite number",
        ),
        ("? [a, b]\n: c\n", "mapping keys"),
    ] {
        let msg = err_text(edge(input));
        assert!(msg.contains(what), "{input:?}: {msg}");
    }
}

#[test]
fn huge_or_deep_input_is_refused() {
    let big = format!("edgecoreVersion: \"{}\"\n", "x".repeat(2 << 20));
    assert!(matches!(edge(&big), Err(ConfigError::TooLarge { .. })));

    let deep = format!("modules: {}1{}\n", "[".repeat(500), "]".repeat(500));
    assert!(edge(&deep).is_err());
    let deep_map = format!("{}1{}\n", "{a: ".repeat(200), "}".repeat(200));
    assert!(edge(&deep_map).is_err());

    let mut laughs = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
    {
        laughs.push_str(&format!(
            "{name}: &{name} [{}]\n",
            vec![format!("*{prev}"); 9].join(",")
        ));
    }
    assert!(edge(&laughs).is_err());
}

#[test]
fn load_reads_files_and_names_them_in_errors() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("edgecore.yaml");
    std::fs::write(&path, "modules:\n  edgeHub:\n    heartbeet: 5\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let msg = err_text(EdgeCoreConfig::load(&path, &host()));
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("modules.edgeHub.heartbeet"), "{msg}");

    let missing = dir.path().join("nope.yaml");
    match EdgeCoreConfig::load(&missing, &host()) {
        Err(ConfigError::Read { file, .. }) => assert_eq!(file, missing),
        other => panic!("expected a read error, got {other:?}"),
    }

    let binary = dir.path().join("binary.yaml");
    let mut f = std::fs::File::create(&binary).unwrap_or_else(|e| panic!("{e}"));
    f.write_all(&[0xff, 0xfe, 0x00, 0x80])
        .unwrap_or_else(|e| panic!("{e}"));
    drop(f);
    assert!(matches!(
        EdgeCoreConfig::load(&binary, &host()),
        Err(ConfigError::Syntax { .. })
    ));

    let big = dir.path().join("big.yaml");
    std::fs::write(&big, vec![b'#'; 3 << 20]).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        CloudCoreConfig::load(&big, &host()),
        Err(ConfigError::TooLarge { .. })
    ));
}

#[test]
fn yaml_anchors_and_merge_keys_work_like_go_yaml() {
    let got = edge(
        "modules:
  edgeHub:
    quic: &t {handshakeTimeout: 40, readDeadline: 20}
    websocket:
      <<: *t
      writeDeadline: 25
",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let ws = &got.modules.edge_hub.websocket;
    assert_eq!(
        (ws.handshake_timeout, ws.read_deadline, ws.write_deadline),
        (40, 20, 25)
    );
    assert!(ws.enable, "keys outside the merge keep their defaults");
    assert_eq!(got.modules.edge_hub.quic.handshake_timeout, 40);
}

#[test]
fn enabled_modules_follow_the_config() {
    let host = ke_config::HostInfo::new("vm", std::net::Ipv4Addr::new(192, 0, 2, 2));
    let cloud = ke_config::CloudCoreConfig::default_for(&host);
    assert_eq!(
        cloud.enabled_modules(),
        [
            "cloudhub",
            "edgecontroller",
            "devicecontroller",
            "synccontroller",
            "iptablesmanager"
        ]
    );
    let mut edge = ke_config::EdgeCoreConfig::default_for(&host);
    assert_eq!(
        edge.enabled_modules(),
        ["edged", "websocket", "eventbus", "metamanager", "twin"]
    );
    edge.modules.edged.enable = false;
    assert!(!edge.enabled_modules().contains(&"edged"));
}

#[test]
fn reconnect_ceiling_is_an_optional_extension_field() {
    let host = ke_config::HostInfo::new("vm", std::net::Ipv4Addr::new(192, 0, 2, 2));
    let text = "apiVersion: edgecore.config.kubeedge.io/v1alpha2\nkind: EdgeCore\nmodules:\n  edgeHub:\n    reconnectMaxInterval: 5\n";
    let config = ke_config::EdgeCoreConfig::from_yaml_str(text, &host).unwrap();
    assert_eq!(config.modules.edge_hub.reconnect_max_interval, Some(5));
    // Unset, it is not rendered, so --defaultconfig stays identical to upstream's.
    assert!(!ke_config::render_default_edgecore(&host).contains("reconnectMaxInterval"));
    let bad = text.replace(": 5", ": 0");
    let err = ke_config::EdgeCoreConfig::from_yaml_str(&bad, &host).unwrap_err();
    assert!(
        err.to_string()
            .contains("modules.edgeHub.reconnectMaxInterval"),
        "{err}"
    );
}
