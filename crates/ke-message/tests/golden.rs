//! Every frame upstream KubeEdge wrote (tests/golden/messages) must decode and re-encode to the
//! very same bytes: that is what a stock edgecore or cloudcore will see from us.

use std::path::{Path, PathBuf};

use ke_message::constants::{group, operation};
use ke_message::resource::{WireResource, node_id_of};
use ke_message::{Message, decode, encode_frame};
use serde_json::Value;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/messages")
}

fn golden_frames() -> Vec<(String, Vec<u8>)> {
    let mut frames: Vec<_> = std::fs::read_dir(golden_dir())
        .expect("golden directory exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("readable golden frame"))
        })
        .collect();
    frames.sort();
    frames
}

fn golden(name: &str) -> Message {
    let bytes = std::fs::read(golden_dir().join(name)).expect("golden frame exists");
    decode(&bytes).expect("golden frame decodes")
}

#[test]
fn all_31_upstream_frames_are_present() {
    assert_eq!(golden_frames().len(), 31);
}

#[test]
fn every_upstream_frame_re_encodes_byte_for_byte() {
    for (name, bytes) in golden_frames() {
        let message = decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let encoded = encode_frame(&message);
        assert!(
            encoded == bytes,
            "{name}: re-encoding differs\n ours: {}\ntheirs: {}",
            String::from_utf8_lossy(&encoded),
            String::from_utf8_lossy(&bytes)
        );
        // And as JSON values, independent of our encoder.
        let ours: Value = serde_json::from_slice(&encoded).unwrap();
        let theirs: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(ours, theirs, "{name}");
        assert_eq!(decode(&encoded).unwrap(), message, "{name}");
    }
}

#[test]
fn pod_insert_and_its_ack_correlate() {
    let insert = golden("01-pod-insert.json");
    assert_eq!(insert.header.resource_version, "1200345");
    assert_eq!(insert.router.source, "edgecontroller");
    assert_eq!(insert.router.group, group::RESOURCE);
    assert_eq!(insert.router.operation, operation::INSERT);
    let resource = WireResource::parse(&insert.router.resource).unwrap();
    assert_eq!(resource.namespace.as_deref(), Some("default"));
    assert_eq!(resource.resource_type, "pod");
    assert_eq!(insert.content["spec"]["nodeName"], "edge-node-1");

    let upstream_ack = golden("02-pod-insert-ack.json");
    assert_eq!(upstream_ack.header.parent_id, insert.header.id);

    // Our ack for the same insert has the same shape as upstream's, bar id and time.
    let mut ours = Message::ack_for(&insert);
    ours.header.id = upstream_ack.header.id.clone();
    ours.header.timestamp = upstream_ack.header.timestamp;
    assert_eq!(encode_frame(&ours), encode_frame(&upstream_ack));
}

#[test]
fn keepalive_has_no_optional_header_fields() {
    let keepalive = golden("03-keepalive.json");
    assert_eq!(keepalive.router.operation, operation::KEEPALIVE);
    assert_eq!(keepalive.content, "ping");
    assert!(keepalive.header.parent_id.is_empty() && !keepalive.header.sync);
}

#[test]
fn patches_travel_as_json_inside_a_string() {
    let patch = golden("07-nodepatch.json");
    let resource = WireResource::parse(&patch.router.resource).unwrap();
    assert_eq!(
        (resource.namespace, resource.resource_type),
        (None, "nodepatch".to_owned())
    );
    // The edge names the node, but routing uses the session's node: only a `node` token counts.
    assert_eq!(node_id_of(&patch.router.resource), None);
    assert_eq!(node_id_of("null/node/edge-node-1"), Some("edge-node-1"));
    let body: Value = patch.decode_content().unwrap();
    assert!(body["status"]["conditions"].is_array());
    assert_eq!(
        patch.content_bytes(),
        patch.content.as_str().unwrap().as_bytes()
    );
}

#[test]
fn go_errors_arrive_as_err_status_objects() {
    let missing = golden("19-configmap-query-notfound-response.json");
    assert_eq!(missing.content["ErrStatus"]["code"], 404);
    assert_eq!(missing.content["ErrStatus"]["reason"], "NotFound");
    let conflict = golden("06-node-register-response-error.json");
    assert_eq!(conflict.content["Err"]["ErrStatus"]["code"], 409);
    assert!(golden("05-node-register-response.json").content["Err"].is_null());
}

#[test]
fn go_byte_slices_arrive_as_base64() {
    let upload = golden("20-servicebus-upload-bytes.json");
    let body: Value = serde_json::from_slice(&upload.content_base64().unwrap()).unwrap();
    assert_eq!(body["payload"]["temperature"], 25);

    // Our encoder produces the same frame from the raw bytes.
    let rebuilt = Message {
        header: upload.header.clone(),
        router: upload.router.clone(),
        ..Message::default()
    }
    .with_bytes_content(&upload.content_base64().unwrap());
    assert_eq!(encode_frame(&rebuilt), encode_frame(&upload));
}

#[test]
fn html_sensitive_characters_use_go_escapes() {
    let bytes = std::fs::read(golden_dir().join("16-configmap-query-response.json")).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains(r"\u0026 \u003cfine\u003e"));
    let message = golden("16-configmap-query-response.json");
    assert!(
        message.content["data"]["default.conf"]
            .as_str()
            .unwrap()
            .contains("ok & <fine>")
    );
}

#[test]
fn null_content_and_empty_route_fields_are_kept_as_go_writes_them() {
    let query = golden("15-configmap-query.json");
    assert!(query.content.is_null());
    let response = golden("22-servicebus-http-response.json");
    assert!(response.router.resource.is_empty());
    let text = String::from_utf8(encode_frame(&response)).unwrap();
    assert!(!text.contains("\"resource\""));
}
