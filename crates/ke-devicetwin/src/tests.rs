//! Upstream's own timeline (golden `mqtt/` and messages 24–30, captured from upstream's
//! devicetwin workers with the clock fixed): the same inputs at the same times give the same
//! bytes, except event ids that upstream generates (compared after copying ours in).

use super::*;

const T: i64 = 1_767_225_600_000;
const DEVICE: &str = "default/thermometer-01";

fn golden(name: &str) -> String {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A golden payload; `<file>.content` is the content of the message in `<file>`.
fn golden_json(name: &str) -> Value {
    match name.strip_suffix(".content") {
        Some(file) => serde_json::from_str::<Value>(&golden(file)).unwrap()["content"].take(),
        None => serde_json::from_str(&golden(name)).unwrap(),
    }
}

/// A message as eventbus delivers it from MQTT.
fn mqtt(topic: &str, payload: &str) -> Message {
    Message::new()
        .with_route(
            "bus",
            "user",
            ke_message::resource::mqtt_topic_resource(topic),
            "response",
        )
        .with_content(payload)
}

fn empty() -> Twins {
    let loaded = Loaded {
        devices: BTreeMap::new(),
        reports: Vec::new(),
        objects: Vec::new(),
    };
    Twins::new(
        "edge-node-1",
        loaded,
        SharedRegistry::default(),
        &mut Effects::default(),
    )
}

/// `ours` equals the golden payload `name` once upstream's generated event id is replaced by
/// the one we generated.
fn assert_same_but_event_id(ours: &str, name: &str) {
    let ours_value: Value = serde_json::from_str(ours).unwrap();
    let mut theirs = golden_json(name);
    theirs["event_id"] = ours_value["event_id"].clone();
    assert_eq!(ours, json::encode(&theirs), "{name}");
}

fn published<'a>(effects: &'a Effects, suffix: &str) -> &'a str {
    effects
        .publishes
        .iter()
        .find(|(topic, _)| topic.ends_with(suffix))
        .map(|(_, payload)| payload.as_str())
        .unwrap_or_else(|| panic!("nothing published on …{suffix}: {:?}", effects.publishes))
}

fn last_report(twins: &mut Twins) -> Message {
    twins.connected = true;
    let mut due = twins.outbox.due(Instant::now()).0;
    due.pop().expect("a report for the cloud")
}

#[test]
fn upstreams_timeline_gives_upstreams_payloads() {
    let mut twins = empty();

    // t=31 the cloud adds the device (golden 24).
    let membership: Message =
        ke_message::decode(golden("24-membership-update.json").as_bytes()).unwrap();
    let mut fx = Effects::default();
    twins.handle(membership, T + 31_000, &mut fx);
    assert_eq!(
        fx.publishes[0].0,
        "$hw/events/node/edge-node-1/membership/updated"
    );
    assert_same_but_event_id(&fx.publishes[0].1, "edge-membership-updated.json");
    assert!(matches!(&fx.writes[0], Write::PutDevice(d) if d.id == DEVICE));

    // t=32 the mapper's first report: the twin is added.
    let topic = "$hw/events/device/default/thermometer-01/twin/update";
    let mut fx = Effects::default();
    twins.handle(
        mqtt(topic, &golden("mapper-twin-update.json")),
        T + 32_000,
        &mut fx,
    );
    assert_eq!(
        published(&fx, "/twin/update/result"),
        golden("edge-twin-update-result.json")
    );
    assert_eq!(
        published(&fx, "/twin/update/document"),
        golden("edge-twin-update-document.json")
    );
    assert_same_but_event_id(
        published(&fx, "/twin/update/delta"),
        "edge-twin-update-delta.json",
    );
    let order: Vec<&str> = fx
        .publishes
        .iter()
        .map(|(t, _)| t.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(order, ["result", "document", "delta"]);
    let report = last_report(&mut twins);
    let golden_27: Message =
        ke_message::decode(golden("27-twin-edge-updated.json").as_bytes()).unwrap();
    assert_eq!(report.router, golden_27.router);
    assert_same_but_event_id(
        &json::encode(&report.content),
        "27-twin-edge-updated.json.content",
    );

    // t=33 the second report goes through the compare path: versions 2, `last` filled in.
    let mut fx = Effects::default();
    twins.handle(
        mqtt(topic, &golden("mapper-twin-update-second.json")),
        T + 33_000,
        &mut fx,
    );
    assert_eq!(
        published(&fx, "/twin/update/result"),
        golden("edge-twin-update-result-second.json")
    );
    assert_eq!(
        published(&fx, "/twin/update/document"),
        golden("edge-twin-update-document-second.json")
    );
    assert_same_but_event_id(
        published(&fx, "/twin/update/delta"),
        "edge-twin-update-delta-second.json",
    );

    // The cloud confirms the first report (golden 28 answers golden 27's id).
    let mut confirm: Message =
        ke_message::decode(golden("28-twin-edge-updated-response.json").as_bytes()).unwrap();
    confirm.header.parent_id = report.header.id.clone();
    let mut fx = Effects::default();
    twins.handle(confirm, T + 33_500, &mut fx);
    assert!(matches!(fx.writes[..], [Write::DeleteReport(_)]));
    let second = last_report(&mut twins);
    assert_same_but_event_id(
        &json::encode(&second.content),
        "29-twin-edge-updated-second.json.content",
    );

    // t=34 twin get.
    let mut fx = Effects::default();
    twins.handle(
        mqtt(
            "$hw/events/device/default/thermometer-01/twin/get",
            &golden("app-twin-get.json"),
        ),
        T + 34_000,
        &mut fx,
    );
    assert_eq!(
        published(&fx, "/twin/get/result"),
        golden("edge-twin-get-result.json")
    );

    // t=35 the device is online.
    let mut fx = Effects::default();
    twins.handle(
        mqtt(
            "$hw/events/device/default/thermometer-01/state/update",
            &golden("mapper-state-update.json"),
        ),
        T + 35_000,
        &mut fx,
    );
    let result = published(&fx, "/state/update/result").to_owned();
    assert_same_but_event_id(&result, "edge-state-update-result.json");
    let state = twins
        .outbox
        .due(Instant::now())
        .0
        .into_iter()
        .find(|m| m.router.resource.ends_with("state/update"))
        .expect("a state report");
    let golden_30: Message =
        ke_message::decode(golden("30-device-state-update.json").as_bytes()).unwrap();
    assert_eq!(state.router, golden_30.router);
    assert_eq!(
        state.content,
        json!(result),
        "the cloud gets the result as a string"
    );

    // t=36 a mapper asks for the node's devices.
    let mut fx = Effects::default();
    twins.handle(
        mqtt(
            "$hw/events/node/edge-node-1/membership/get",
            &golden("app-membership-get.json"),
        ),
        T + 36_000,
        &mut fx,
    );
    assert_eq!(
        published(&fx, "/membership/get/result"),
        golden("edge-membership-get-result.json")
    );
}

#[test]
fn the_dmi_shapes_of_reports_are_understood() {
    let mut twins = empty();
    let mut fx = Effects::default();
    let object: Message = ke_message::decode(golden("26-device-insert.json").as_bytes()).unwrap();
    let mut forwarded = object.clone();
    forwarded.router.source = "meta".into();
    forwarded.router.group = "twin".into();
    twins.handle(forwarded, T, &mut fx);
    assert!(
        twins.devices.contains_key(DEVICE),
        "a Device object makes a member"
    );
    let mut fx = Effects::default();
    twins.handle(
        mqtt(
            "$hw/events/device/default/thermometer-01/twin/update",
            &golden("dmi-internal-twin-update.json"),
        ),
        T + 37_000,
        &mut fx,
    );
    let twin = &twins.devices[DEVICE].twins["temperature"];
    assert_eq!(twin.attr_type, "string", "DMI reports carry no type");
    assert_eq!(twin.actual.as_ref().unwrap().value, "25");
    twins.handle(
        mqtt(
            "$hw/events/device/default/thermometer-01/state/update",
            &golden("dmi-internal-state-update.json"),
        ),
        T + 37_000,
        &mut fx,
    );
    assert_eq!(twins.devices[DEVICE].state, "online");
    assert_eq!(twins.devices[DEVICE].last_online, "2026-01-01T00:00:37Z");

    // The Device is deleted: the device, its twins and its reports go.
    let mut deleted = object;
    deleted.router.source = "meta".into();
    deleted.router.operation = "delete".into();
    let mut fx = Effects::default();
    twins.handle(deleted, T + 38_000, &mut fx);
    assert!(twins.devices.is_empty());
    assert!(twins.outbox.is_empty());
    assert!(
        fx.writes
            .iter()
            .any(|w| matches!(w, Write::DeleteDevice(id) if id == DEVICE))
    );
}

#[test]
fn bad_requests_get_error_results_and_change_nothing() {
    let mut twins = empty();
    let mut fx = Effects::default();
    let topic = "$hw/events/device/default/ghost/twin/update";
    twins.handle(mqtt(topic, r#"{"event_id":"e1","twin":{}}"#), T, &mut fx);
    assert_eq!(
        published(&fx, "/ghost/twin/update/result"),
        format!(
            r#"{{"event_id":"e1","timestamp":{T},"code":404,"reason":"Update rejected due to the device is not existed"}}"#
        )
    );
    let mut fx = Effects::default();
    for garbage in ["", "{", "null", r#"{"twin":5}"#, "\u{0}\u{1}"] {
        twins.handle(mqtt(topic, garbage), T, &mut fx);
    }
    assert_eq!(fx.publishes.len(), 5);
    assert!(
        fx.publishes
            .iter()
            .all(|(_, p)| p.contains(r#""code":400"#))
    );
    twins.handle(
        mqtt("$hw/events/device/default/ghost/twin/get", "x"),
        T,
        &mut fx,
    );
    twins.handle(
        mqtt("$hw/events/device/default/ghost/state/update", "{}"),
        T,
        &mut fx,
    );
    twins.handle(mqtt("$hw/events/device/x", "{}"), T, &mut fx);
    let not_base64 = Message::new().with_route("bus", "user", "%%%", "response");
    twins.handle(not_base64, T, &mut fx);
    assert!(fx.writes.is_empty());
    assert!(twins.outbox.is_empty());
}
