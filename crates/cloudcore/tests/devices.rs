//! Devices end to end: a DeviceModel and a Device applied with kubectl reach the Device's node
//! as upstream sends them (membership, then model, then device), and the node's twin and
//! state reports land in the DeviceStatus kubectl shows.

mod support;

use std::sync::{Arc, Mutex};

use ke_bus::Message;
use serde_json::{Value, json};
use support::{Cloud, Edge, EdgeStore, eventually};

const MODEL: &str = r#"apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: thermometer-model
  namespace: default
spec:
  protocol: modbus
  properties:
  - name: temperature
    description: temperature in degree celsius
    type: INT
    accessMode: ReadWrite
    minimum: "-40"
    maximum: "100"
    unit: degree celsius
"#;

fn device(desired: &str) -> String {
    format!(
        r#"apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: thermometer-01
  namespace: default
  labels:
    description: thermometer
spec:
  deviceModelRef:
    name: thermometer-model
  nodeName: edge-1
  protocol:
    protocolName: modbus
    configData:
      ip: 192.168.1.50
      port: 502
  properties:
  - name: temperature
    desired:
      value: "{desired}"
      metadata:
        type: integer
    reportCycle: 10000
    collectCycle: 10000
    reportToCloud: true
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_reach_their_node_and_twin_reports_reach_device_status() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path());
    let store = Arc::new(Mutex::new(EdgeStore::default()));
    let edge = Edge::connect(&cloud, "edge-1", Arc::clone(&store));
    edge.register().await;

    cloud.apply(MODEL).await;
    cloud.apply(&device("20")).await;

    let membership = eventually("the membership update", async || {
        store
            .lock()
            .unwrap()
            .twin
            .iter()
            .find(|m| m.router.resource == "membership")
            .cloned()
    })
    .await;
    assert_eq!(membership.router.source, "devicecontroller");
    assert_eq!(membership.router.operation, "update");
    assert_eq!(
        membership.content["added_devices"],
        json!([{"id": "default/thermometer-01", "name": "thermometer-01", "description": "thermometer"}])
    );
    assert_eq!(membership.content["removed_devices"], Value::Null);

    let device_on_edge = eventually("the device on the edge", async || {
        store
            .lock()
            .unwrap()
            .objects
            .get("default/device/thermometer-01")
            .cloned()
    })
    .await;
    assert_eq!(device_on_edge["kind"], "Device");
    assert_eq!(device_on_edge["apiVersion"], "devices.kubeedge.io/v1beta1");
    {
        let store = store.lock().unwrap();
        let model = &store.objects["default/devicemodel/thermometer-model"];
        assert_eq!(model["kind"], "DeviceModel");
        // Upstream's order: the model before the device.
        let position = |resource: &str| {
            store
                .received
                .iter()
                .position(|m| m.router.resource == resource)
                .unwrap()
        };
        assert!(
            position("default/devicemodel/thermometer-model")
                < position("default/device/thermometer-01")
        );
    }

    // The DeviceStatus exists, owned by the Device.
    let status = eventually("the DeviceStatus", async || {
        let out = cloud
            .kubectl(&["get", "devicestatus", "thermometer-01", "-o", "json"])
            .await;
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
    })
    .await;
    assert_eq!(status["metadata"]["ownerReferences"][0]["kind"], "Device");

    // The mapper reported 25 °C; devicetwin syncs it to the cloud (golden frame 27's shape).
    let report = Message::new()
        .with_route(
            "twin",
            "resource",
            "device/default/thermometer-01/twin/edge_updated",
            "update",
        )
        .with_content(json!({
            "event_id": "e-1",
            "timestamp": 1767225632000i64,
            "twin": {"temperature": {
                "expected": {"value": "20", "metadata": {"timestamp": 1767225632000i64}},
                "actual": {"value": "25", "metadata": {"timestamp": 1767225632000i64}},
                "optional": true,
                "metadata": {"type": "integer"},
                "expected_version": {"cloud": 0, "edge": 1},
                "actual_version": {"cloud": 0, "edge": 1}
            }}
        }));
    let report_id = report.header.id.clone();
    edge.send(report).await;
    let confirmed = eventually("the twin confirmation", async || {
        store
            .lock()
            .unwrap()
            .twin
            .iter()
            .find(|m| m.header.parent_id == report_id)
            .cloned()
    })
    .await;
    assert_eq!(confirmed.router.resource, "twin");
    assert_eq!(confirmed.router.group, "twin");
    assert_eq!(confirmed.content, json!("OK"));
    let reported = cloud
        .ok(&[
            "get",
            "devicestatus",
            "thermometer-01",
            "-o",
            "jsonpath={.status.twins[0].reported.value}",
        ])
        .await;
    assert_eq!(reported, "25");

    // A state report: the device is online.
    let state = Message::new()
        .with_route("twin", "resource", "device/default/thermometer-01/state/update", "update")
        .with_content(Value::String(
            json!({"event_id": "e-2", "timestamp": 1767225635000i64,
                   "device": {"name": "thermometer-01", "state": "online", "lastOnlineTime": "2026-01-01T00:00:35Z"}})
            .to_string(),
        ));
    edge.send(state).await;
    eventually("the device state in DeviceStatus", async || {
        let state = cloud
            .ok(&[
                "get",
                "devicestatus",
                "thermometer-01",
                "-o",
                "jsonpath={.status.state}",
            ])
            .await;
        (state == "online").then_some(())
    })
    .await;
    let twins = cloud
        .ok(&[
            "get",
            "devicestatus",
            "thermometer-01",
            "-o",
            "jsonpath={.status.twins[0].reported.value}",
        ])
        .await;
    assert_eq!(twins, "25", "a state report keeps the twins");

    // A new desired value in the Device spec reaches the node.
    cloud.apply(&device("30")).await;
    eventually("the new desired value on the edge", async || {
        let store = store.lock().unwrap();
        let device = store.objects.get("default/device/thermometer-01")?;
        (device["spec"]["properties"][0]["desired"]["value"] == "30").then_some(())
    })
    .await;

    // Deleting the Device removes it (and its model, now unused) from the node.
    cloud.ok(&["delete", "device", "thermometer-01"]).await;
    eventually("the device and its model gone from the edge", async || {
        let store = store.lock().unwrap();
        let removed = store
            .twin
            .iter()
            .any(|m| m.router.resource == "membership" && !m.content["removed_devices"].is_null());
        (removed
            && !store.objects.contains_key("default/device/thermometer-01")
            && !store
                .objects
                .contains_key("default/devicemodel/thermometer-model"))
        .then_some(())
    })
    .await;
}
