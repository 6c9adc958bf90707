//! Validation errors name the field and say why; all are reported at once.

use ke_config::{CloudCoreConfig, ConfigError, EdgeCoreConfig, FieldError, HostInfo};

fn host() -> HostInfo {
    HostInfo::new("vm", [192, 0, 2, 2])
}

fn fields(r: Result<impl std::fmt::Debug, ConfigError>) -> Vec<FieldError> {
    match r {
        Err(ConfigError::Invalid { errors, .. }) => errors,
        other => panic!("expected validation errors, got {other:?}"),
    }
}

fn has(errors: &[FieldError], field: &str, needle: &str) -> bool {
    errors
        .iter()
        .any(|e| e.field == field && e.message.contains(needle))
}

#[test]
fn defaults_are_valid() {
    for h in [host(), HostInfo::new("x", [127, 0, 0, 1])] {
        assert_eq!(CloudCoreConfig::default_for(&h).validate(), Ok(()));
        assert_eq!(EdgeCoreConfig::default_for(&h).validate(), Ok(()));
    }
}

#[test]
fn cloudcore_problems_are_all_reported_with_their_fields() {
    let errors = fields(CloudCoreConfig::from_yaml_str(
        "commonConfig:
  monitorServer:
    bindAddress: localhost
kubeAPIConfig:
  kubeConfig: relative/kubeconfig
modules:
  cloudHub:
    nodeLimit: 0
    keepaliveInterval: 0
    advertiseAddress: [not-an-ip]
    tlsCAFile: ''
    websocket:
      port: 70000
    quic:
      enable: true
      address: 0.0.0.0.0
    unixsocket:
      address: /var/lib/kubeedge/kubeedge.sock
    tokenRefreshDuration: 0
  edgeController:
    nodeUpdateFrequency: 0
    buffer:
      patchNode: -1
    load:
      queryNodeWorkers: 0
  router:
    enable: true
    port: 0
  iptablesManager:
    mode: sideways
",
        &host(),
    ));
    for (field, why) in [
        ("commonConfig.monitorServer.bindAddress", "host:port"),
        ("kubeAPIConfig.kubeConfig", "absolute"),
        ("modules.cloudHub.nodeLimit", "greater than 0"),
        ("modules.cloudHub.keepaliveInterval", "greater than 0"),
        ("modules.cloudHub.advertiseAddress[0]", "not a valid IP"),
        ("modules.cloudHub.tlsCAFile", "empty"),
        ("modules.cloudHub.websocket.port", "70000"),
        ("modules.cloudHub.quic.address", "not a valid IP"),
        ("modules.cloudHub.unixsocket.address", "unix://"),
        ("modules.cloudHub.tokenRefreshDuration", "greater than 0"),
        (
            "modules.edgeController.nodeUpdateFrequency",
            "greater than 0",
        ),
        ("modules.edgeController.buffer.patchNode", "negative"),
        (
            "modules.edgeController.load.queryNodeWorkers",
            "greater than 0",
        ),
        ("modules.router.port", "not a valid port"),
        ("modules.iptablesManager.mode", "internal, external"),
    ] {
        assert!(
            has(&errors, field, why),
            "missing {field} ({why}) in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), 15, "{errors:#?}");
}

#[test]
fn embedded_control_plane_problems_are_reported() {
    let errors = fields(CloudCoreConfig::from_yaml_str(
        "kubeAPIConfig:
  master: https://192.0.2.9:6443
  embedded:
    dataDir: ''
    bindAddress: localhost
    nodeMonitorGracePeriod: 0
",
        &host(),
    ));
    for (field, why) in [
        ("kubeAPIConfig.embedded", "cannot be combined"),
        ("kubeAPIConfig.embedded.dataDir", "empty"),
        ("kubeAPIConfig.embedded.bindAddress", "ip:port"),
        (
            "kubeAPIConfig.embedded.nodeMonitorGracePeriod",
            "greater than 0",
        ),
    ] {
        assert!(
            has(&errors, field, why),
            "missing {field} ({why}) in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), 4, "{errors:#?}");
}

#[test]
fn edgecore_problems_are_all_reported_with_their_fields() {
    let errors = fields(EdgeCoreConfig::from_yaml_str(
        "database:
  dataSource: ''
modules:
  edged:
    hostnameOverride: My_Host
    nodeIP: 10.0.0
    tailoredKubeletConfig:
      cgroupDriver: cgroupv3
      imageGCLowThresholdPercent: 90
      clusterDNS: [dns.local]
  edgeHub:
    heartbeat: 0
    httpServer: http://192.0.2.2:10002
    websocket:
      server: 192.0.2.2
  eventBus:
    mqttMode: 3
    mqttQOS: 3
  metaManager:
    metaServer:
      enable: true
      dummyServer: 169.254.30.10
",
        &host(),
    ));
    for (field, why) in [
        ("database.dataSource", "empty"),
        ("modules.edged.hostnameOverride", "node name"),
        ("modules.edged.nodeIP", "not a valid IP"),
        (
            "modules.edged.tailoredKubeletConfig.cgroupDriver",
            "cgroupfs, systemd",
        ),
        (
            "modules.edged.tailoredKubeletConfig.imageGCLowThresholdPercent",
            "less than",
        ),
        (
            "modules.edged.tailoredKubeletConfig.clusterDNS[0]",
            "not a valid IP",
        ),
        ("modules.edgeHub.heartbeat", "greater than 0"),
        ("modules.edgeHub.httpServer", "https://"),
        ("modules.edgeHub.websocket.server", "host:port"),
        ("modules.eventBus.mqttMode", "must be 0"),
        ("modules.eventBus.mqttQOS", "must be 0, 1 or 2"),
        ("modules.metaManager.metaServer.dummyServer", "host:port"),
    ] {
        assert!(
            has(&errors, field, why),
            "missing {field} ({why}) in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), 12, "{errors:#?}");
}

#[test]
fn exactly_one_edgehub_transport() {
    let both = "modules:\n  edgeHub:\n    quic:\n      enable: true\n";
    let errors = fields(EdgeCoreConfig::from_yaml_str(both, &host()));
    assert!(has(
        &errors,
        "modules.edgeHub.websocket.enable",
        "exactly one"
    ));

    let neither = "modules:\n  edgeHub:\n    websocket:\n      enable: false\n";
    let errors = fields(EdgeCoreConfig::from_yaml_str(neither, &host()));
    assert!(has(
        &errors,
        "modules.edgeHub.websocket.enable",
        "exactly one"
    ));

    let quic_only = "modules:\n  edgeHub:\n    websocket:\n      enable: false\n    quic:\n      enable: true\n";
    assert!(EdgeCoreConfig::from_yaml_str(quic_only, &host()).is_ok());
}

#[test]
fn disabled_modules_are_not_checked() {
    let text = "modules:
  edgeHub:
    enable: false
    heartbeat: 0
  eventBus:
    enable: false
    mqttMode: 9
  edgeStream:
    enable: false
    server: nonsense
";
    assert!(EdgeCoreConfig::from_yaml_str(text, &host()).is_ok());

    let mut c = CloudCoreConfig::default_for(&host());
    c.modules.cloud_stream.tunnel_port = 0;
    c.modules.router.port = 0;
    assert_eq!(c.validate(), Ok(()));
    c.modules.cloud_stream.enable = true;
    let errors = c.validate().err().unwrap_or_default();
    assert!(has(
        &errors,
        "modules.cloudStream.tunnelPort",
        "not a valid port"
    ));
}

#[test]
fn error_display_lists_every_field() {
    let err = EdgeCoreConfig::from_yaml_str(
        "modules:\n  edgeHub:\n    heartbeat: 0\n  eventBus:\n    mqttQOS: 7\n",
        &host(),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        err.contains("modules.edgeHub.heartbeat: must be greater than 0"),
        "{err}"
    );
    assert!(
        err.contains("modules.eventBus.mqttQOS: 7 must be 0, 1 or 2"),
        "{err}"
    );
}
