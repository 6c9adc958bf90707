//! The lane over an in-memory stream: the same bytes a TLS stream would carry.

use futures_util::{SinkExt, StreamExt};
use ke_message::Message;
use ke_transport::{
    DEFAULT_MAX_FRAME_BYTES, EdgeIdentity, Refusal, TransportError, accept, connect, edge_url,
};
use tokio::io::DuplexStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message as Frame};

fn edge() -> EdgeIdentity {
    EdgeIdentity {
        node_id: "edge-1".into(),
        project_id: "e632aba927ea4ac2b575ec1603d56f10".into(),
    }
}

fn url() -> String {
    edge_url("cloud.example:10000", &edge().project_id, &edge().node_id)
}

/// A raw tungstenite client, standing in for a Go edgehub that writes arbitrary frames.
async fn raw_client(
    stream: DuplexStream,
    headers: &[(&'static str, &str)],
) -> Result<tokio_tungstenite::WebSocketStream<DuplexStream>, tungstenite::Error> {
    let mut request = url().into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    tokio_tungstenite::client_async(request, stream)
        .await
        .map(|(ws, _)| ws)
}

#[tokio::test]
async fn messages_flow_both_ways_with_the_identity_from_headers() {
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    let server = tokio::spawn(async move {
        let (identity, conn) = accept(server_io, DEFAULT_MAX_FRAME_BYTES, |_| Ok(()))
            .await
            .unwrap();
        let (mut tx, mut rx) = conn.split();
        let got = rx.recv().await.unwrap().unwrap();
        tx.send(&Message::ack_for(&got)).await.unwrap();
        (identity, got, rx.recv().await.unwrap())
    });

    let conn = connect(client_io, &url(), &edge(), DEFAULT_MAX_FRAME_BYTES)
        .await
        .unwrap();
    let (mut tx, mut rx) = conn.split();
    let keepalive = Message::new()
        .with_route("websocket", "resource", "node", "keepalive")
        .with_content("ping");
    tx.send(&keepalive).await.unwrap();
    let ack = rx.recv().await.unwrap().unwrap();
    assert_eq!(ack.header.parent_id, keepalive.header.id);
    tx.close(
        tungstenite::protocol::frame::coding::CloseCode::Normal,
        "bye",
    )
    .await;

    let (identity, got, after_close) = server.await.unwrap();
    assert_eq!(identity, edge());
    assert_eq!(got, keepalive);
    assert!(
        after_close.is_none(),
        "a clean close reads as end of stream"
    );
}

#[tokio::test]
async fn frames_are_go_json_text_with_a_newline_and_go_frames_decode() {
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    let server = tokio::spawn(async move {
        let (_, conn) = accept(server_io, DEFAULT_MAX_FRAME_BYTES, |_| Ok(()))
            .await
            .unwrap();
        let (mut tx, mut rx) = conn.split();
        let from_go = rx.recv().await.unwrap().unwrap();
        tx.send(&from_go).await.unwrap();
        from_go
    });
    // Go canonicalises header names as `Node_id`; they must still be recognised.
    let mut ws = raw_client(
        client_io,
        &[
            ("Node_id", "edge-1"),
            ("Project_id", "p"),
            ("ConnectionUse", "msg"),
        ],
    )
    .await
    .unwrap();
    let golden = include_str!("../../ke-message/tests/golden/messages/01-pod-insert.json");
    ws.send(Frame::text(golden)).await.unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    let Frame::Text(text) = echoed else {
        panic!("expected a text frame, got {echoed:?}");
    };
    assert_eq!(
        text.as_str(),
        golden,
        "re-sent frame is byte-identical to Go's"
    );
    let from_go = server.await.unwrap();
    assert_eq!(
        from_go.router.resource,
        "default/pod/nginx-6799fc88d8-4xk2p"
    );
}

#[tokio::test]
async fn a_missing_node_id_is_refused_with_400() {
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    let server = tokio::spawn(accept(server_io, DEFAULT_MAX_FRAME_BYTES, |_| Ok(())));
    let err = raw_client(client_io, &[("project_id", "p")])
        .await
        .unwrap_err();
    let tungstenite::Error::Http(response) = err else {
        panic!("expected an HTTP refusal, got {err}");
    };
    assert_eq!(response.status(), 400);
    match server.await.unwrap() {
        Err(TransportError::Refused {
            status: 400,
            reason,
        }) => {
            assert!(reason.contains("node_id"), "{reason}");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|(id, _)| id)),
    }
}

#[tokio::test]
async fn the_admission_verdict_reaches_the_edge_with_its_reason() {
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    let server = tokio::spawn(accept(server_io, DEFAULT_MAX_FRAME_BYTES, |identity| {
        Err(Refusal::new(
            503,
            format!("node limit 1 reached; {} refused", identity.node_id),
        ))
    }));
    let err = connect(client_io, &url(), &edge(), DEFAULT_MAX_FRAME_BYTES)
        .await
        .err()
        .expect("refused");
    match err {
        TransportError::Refused { status, reason } => {
            assert_eq!(status, 503);
            assert_eq!(reason, "node limit 1 reached; edge-1 refused");
        }
        other => panic!("expected Refused, got {other}"),
    }
    assert!(matches!(
        server.await.unwrap(),
        Err(TransportError::Refused { status: 503, .. })
    ));
}

#[tokio::test]
async fn oversized_and_garbage_frames_are_clear_errors() {
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let server = tokio::spawn(async move {
        let (_, conn) = accept(server_io, 1024, |_| Ok(())).await.unwrap();
        let (_tx, mut rx) = conn.split();
        let garbage = rx.recv().await.expect_err("garbage is an error");
        let oversized = rx.recv().await.expect_err("oversized is an error");
        (garbage, oversized)
    });
    let mut ws = raw_client(client_io, &[("node_id", "edge-1")])
        .await
        .unwrap();
    ws.send(Frame::text("{\"header\": not json")).await.unwrap();
    // The server stops reading after the oversized frame, so this send may or may not finish.
    let _ = ws.send(Frame::text("x".repeat(4096))).await;
    let (garbage, oversized) = server.await.unwrap();
    assert!(
        matches!(garbage, TransportError::Decode(_)),
        "garbage gave {garbage}"
    );
    match oversized {
        TransportError::FrameTooLarge { size, max } => {
            assert!(size > 1024, "{size}");
            assert_eq!(max, 1024);
        }
        other => panic!("expected FrameTooLarge, got {other}"),
    }
}
