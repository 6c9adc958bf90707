//! Faults on the cloud–edge link, each checked the way an operator would notice it: who gets a
//! session and who is refused (with what status and reason), which connections the cloud closes
//! and how fast, and whether every object still reaches the edge at its newest version when the
//! link breaks mid-stream or cloudcore restarts.
//!
//! Every listener is on port 0 (or reuses a port this test bound), every file is in a temp dir,
//! and every wait is bounded by [`WAIT`] or less, so a regression fails instead of hanging.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use ke_bus::Message;
use ke_cloudhub::CloudHubSettings;
use ke_edgehub::HttpError;
use ke_edgehub::bootstrap::{self, BootstrapError};
use ke_message::constants::{content, operation};
use ke_pki::token::{self, TokenError};
use ke_pki::{CertificateAuthority, EdgeKeyPair, ExtKeyUsage};
use ke_transport::{Connection, EdgeIdentity, TransportError};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use common::{
    Cloud, NODE, PROJECT, WAIT, cloud_settings, edge_settings, is_pod, local, next_matching, pod,
    pod_for, start_acking_edge, start_cloud, start_edge,
};

// ---------------------------------------------------------------------------------------------
// Clients that are not edgehub: they hold whatever certificate the test mints and say whatever
// the test wants, which a well-behaved edgehub never would.

/// A client certificate and key, as `/edge.crt` would issue them.
struct ClientCert {
    cert_der: Vec<u8>,
    key: EdgeKeyPair,
}

fn issue_client_cert(ca: &CertificateAuthority, node: &str) -> ClientCert {
    let key = EdgeKeyPair::generate().unwrap();
    let csr = key.build_csr(node).unwrap();
    let cert_der = ca
        .sign_edge_csr(
            &csr,
            node,
            &[ExtKeyUsage::ClientAuth],
            Duration::from_secs(3600),
            SystemTime::now(),
        )
        .unwrap();
    ClientCert { cert_der, key }
}

/// The CA cloudhub created in `settings`' files, with its key: lets the test mint certificates
/// and tokens the cloud will recognise as its own.
fn cloud_ca(settings: &CloudHubSettings) -> CertificateAuthority {
    CertificateAuthority::load(&settings.ca_cert_file, &settings.ca_key_file).unwrap()
}

fn loopback_name() -> ServerName<'static> {
    ServerName::try_from("127.0.0.1").unwrap()
}

async fn tls_dial(
    addr: SocketAddr,
    ca_der: &[u8],
    client: &ClientCert,
) -> std::io::Result<TlsStream<TcpStream>> {
    let config =
        ke_pki::tls::client_config_mtls(ca_der, &client.cert_der, client.key.key()).unwrap();
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(loopback_name(), tcp)
        .await
}

/// Dials cloudhub's WebSocket port and upgrades claiming `node_id`, as edgehub does.
async fn ws_dial(
    addr: SocketAddr,
    ca_der: &[u8],
    client: &ClientCert,
    node_id: &str,
) -> Result<Connection<TlsStream<TcpStream>>, TransportError> {
    let attempt = async {
        let tls = tls_dial(addr, ca_der, client)
            .await
            .expect("TLS with a certificate from the cloud's CA");
        let identity = EdgeIdentity {
            node_id: node_id.to_owned(),
            project_id: PROJECT.to_owned(),
        };
        let url = ke_transport::edge_url(&addr.to_string(), PROJECT, node_id);
        ke_transport::connect(tls, &url, &identity, 1 << 20).await
    };
    timeout(WAIT, attempt)
        .await
        .expect("the upgrade is answered")
}

type SyncWs =
    tungstenite::WebSocket<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>>;

/// A blocking WebSocket client (run it in `spawn_blocking`): unlike `ke_transport` it can send
/// frames that are not messages, and it reports the close frame's code and reason. Reads give up
/// after [`WAIT`].
fn raw_ws(addr: SocketAddr, ca_der: &[u8], client: &ClientCert, node_id: &str) -> SyncWs {
    let config =
        ke_pki::tls::client_config_mtls(ca_der, &client.cert_der, client.key.key()).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.set_write_timeout(Some(WAIT)).unwrap();
    let tls = rustls::ClientConnection::new(Arc::new(config), loopback_name()).unwrap();
    let mut request = ke_transport::edge_url(&addr.to_string(), PROJECT, node_id)
        .into_client_request()
        .unwrap();
    for (name, value) in [
        (ke_transport::HEADER_NODE_ID, node_id),
        (ke_transport::HEADER_PROJECT_ID, PROJECT),
        (ke_transport::HEADER_CONNECTION_USE, "msg"),
    ] {
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    let (ws, _) = tungstenite::client(request, rustls::StreamOwned::new(tls, tcp))
        .unwrap_or_else(|e| panic!("upgrade as {node_id}: {e}"));
    ws
}

/// How the server ended a raw client's connection.
#[derive(Debug)]
enum Ended {
    /// A close frame, with its code and reason.
    Close(Option<CloseFrame>),
    /// EOF or a reset without a close frame.
    Dropped(String),
}

/// Reads until the server ends the connection; panics if it is still open after [`WAIT`].
fn wait_until_closed(ws: &mut SyncWs) -> Ended {
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(frame)) => return Ended::Close(frame),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the server left the connection open for {WAIT:?}")
            }
            Err(e) => return Ended::Dropped(e.to_string()),
        }
    }
}

/// `GET path` on the certificate server, verifying it against `ca_der`; status and body.
async fn https_get(addr: SocketAddr, ca_der: &[u8], path: &str) -> (u16, String) {
    let request = async {
        let config = ke_pki::tls::client_config_ca_only(ca_der).unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(loopback_name(), tcp)
            .await
            .unwrap();
        tls.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut raw = Vec::new();
        // Only the response matters here, not whether the server ends TLS with close_notify.
        let _ = tls.read_to_end(&mut raw).await;
        raw
    };
    let raw = timeout(WAIT, request).await.expect("the server answers");
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A TCP relay between edge and cloud that records when each connection arrives (an edge's
/// dial, refused or not) and can break every relayed connection at once with a reset, like a
/// network failure or a killed process would.
struct Proxy {
    addr: SocketAddr,
    accepted: mpsc::UnboundedReceiver<Instant>,
    forward: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind(local()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted_tx, accepted) = mpsc::unbounded_channel();
        let forward = Arc::new(AtomicBool::new(true));
        let (cut, cut_rx) = watch::channel(0);
        let task = tokio::spawn({
            let forward = Arc::clone(&forward);
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let _ = accepted_tx.send(Instant::now());
                    if !forward.load(Ordering::SeqCst) {
                        let _ = client.set_zero_linger();
                        continue;
                    }
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        // Like a load balancer with no healthy backend.
                        let _ = client.set_zero_linger();
                        continue;
                    };
                    let mut cut = cut_rx.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.changed() => {
                                let _ = client.set_zero_linger();
                                let _ = server.set_zero_linger();
                            }
                        }
                    });
                }
            }
        });
        Proxy {
            addr,
            accepted,
            forward,
            cut,
            task,
        }
    }

    /// Resets every relayed connection; with `refuse_new`, later dials are reset on arrival.
    fn cut(&self, refuse_new: bool) {
        self.forward.store(!refuse_new, Ordering::SeqCst);
        self.cut.send_modify(|generation| *generation += 1);
    }

    fn forget_earlier_dials(&mut self) {
        while self.accepted.try_recv().is_ok() {}
    }

    async fn next_dial(&mut self) -> Instant {
        timeout(WAIT, self.accepted.recv())
            .await
            .expect("the edge redials")
            .expect("proxy running")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn is_connection_event(message: &Message, op: &str, node: &str) -> bool {
    message.router.operation == op && message.router.resource == format!("node/{node}")
}

async fn wait_connected(cloud: &mut Cloud, node: &str) {
    next_matching(&mut cloud.controller, &format!("{node} connected"), |m| {
        is_connection_event(m, operation::CONNECTED, node)
    })
    .await;
}

async fn wait_disconnected(cloud: &mut Cloud, node: &str) {
    next_matching(
        &mut cloud.controller,
        &format!("{node} disconnected"),
        |m| is_connection_event(m, operation::DISCONNECTED, node),
    )
    .await;
}

fn is_cloud_connected(message: &Message) -> bool {
    message.content == content::CLOUD_CONNECTED
}

/// Polls the cloud's metrics until `line` (a whole exposition line) appears.
async fn wait_for_metric(cloud: &Cloud, line: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = cloud.metrics.render();
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(Instant::now() < deadline, "no {line:?} in\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn metric_value(cloud: &Cloud, name: &str) -> String {
    let text = cloud.metrics.render();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_owned))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// The pod's UID and version as the edge module received it.
fn uid_and_version(message: &Message) -> (String, u64) {
    let uid = message.content["metadata"]["uid"]
        .as_str()
        .expect("pod uid")
        .to_owned();
    let rv = message.header.resource_version.parse().expect("numeric rv");
    (uid, rv)
}

/// Edge-side proof that messages still flow on an established link: a pod down (and ACKed by
/// the acking probe if there is one), a node patch up.
async fn assert_link_works(cloud: &mut Cloud, edge: &mut common::Edge, rv: u64) {
    cloud
        .bus
        .send("cloudhub", pod(rv, "uid-flow"))
        .await
        .unwrap();
    let got = next_matching(&mut edge.meta, "a pod over the link", |m| {
        is_pod(m) && m.header.resource_version == rv.to_string()
    })
    .await;
    assert_eq!(got.router.resource, "default/pod/web");
    let patch = Message::new()
        .with_route("edged", "meta", format!("null/nodepatch/{NODE}"), "patch")
        .with_content("{\"status\":{}}");
    edge.bus.send("websocket", patch.clone()).await.unwrap();
    next_matching(&mut cloud.controller, "a node patch from the edge", |m| {
        m.header.id == patch.header.id
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 1. Certificates from another CA

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_gets_no_session_and_others_still_connect() {
    let dir = tempfile::tempdir().unwrap();
    let settings = cloud_settings(dir.path(), local(), local());
    let mut cloud = start_cloud(settings).await;

    // Right name, right server CA pinned, client certificate from a CA the cloud never saw.
    let foreign = CertificateAuthority::generate(SystemTime::now()).unwrap();
    let intruder = issue_client_cert(&foreign, NODE);
    let addr = cloud.addresses.websocket;
    let attempt = async {
        // With TLS 1.3 the client finishes its side of the handshake before the server has
        // judged its certificate; the rejection arrives as an alert on the first read, which
        // the upgrade does.
        let tls = tls_dial(addr, &cloud.ca_der, &intruder)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let identity = EdgeIdentity {
            node_id: NODE.into(),
            project_id: PROJECT.into(),
        };
        let url = ke_transport::edge_url(&addr.to_string(), PROJECT, NODE);
        ke_transport::connect(tls, &url, &identity, 1 << 20)
            .await
            .map(drop)
            .map_err(|e| format!("upgrade: {e}"))
    };
    let refused = timeout(WAIT, attempt)
        .await
        .expect("the server answers a foreign certificate promptly")
        .expect_err("a certificate from another CA must not get a session");
    println!("foreign-CA client refused: {refused}");
    // Every KubeEdge CA is named `CN=KubeEdge`, so the foreign chain is matched to our CA by name
    // and fails on the signature: the alert is DecryptError rather than UnknownCA.
    assert!(
        refused.contains("fatal alert"),
        "the client should learn the server rejected the handshake: {refused}"
    );
    assert_eq!(cloud.metrics.connected_nodes(), 0);

    // The listener is unharmed: a real edge joins and talks.
    let mut edge = start_edge(edge_settings(
        dir.path(),
        &cloud.addresses,
        cloud.token.clone(),
    ));
    next_matching(&mut edge.meta, "cloud_connected", is_cloud_connected).await;
    assert_link_works(&mut cloud, &mut edge, 1).await;

    assert!(edge.runtime.shutdown(WAIT).await.is_clean());
    assert!(cloud.runtime.shutdown(WAIT).await.is_clean());
}

// ---------------------------------------------------------------------------------------------
// 2. Join tokens and the certificate server

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_join_tokens_are_refused_with_reasons_and_node_lookup_follows_connection() {
    let dir = tempfile::tempdir().unwrap();
    let settings = cloud_settings(dir.path(), local(), local());
    let mut cloud = start_cloud(settings.clone()).await;
    let ca = cloud_ca(&settings);
    let foreign = CertificateAuthority::generate(SystemTime::now()).unwrap();
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let joiner =
        |case: &str, token: String| edge_settings(&dir.path().join(case), &cloud.addresses, token);
    let nothing_written = |edge: &ke_edgehub::EdgeHubSettings| {
        !edge.ca_file.exists() && !edge.cert_file.exists() && !edge.key_file.exists()
    };

    // Malformed: refused locally, before any network traffic, saying what is wrong.
    let edge = joiner("malformed", "not-a-join-token".into());
    let err = bootstrap::ensure_certificate(&edge).await.unwrap_err();
    println!("malformed token: {err}");
    assert!(
        matches!(err, BootstrapError::Token(TokenError::BadFormat(_))),
        "{err:?}"
    );
    assert!(err.to_string().contains("malformed"), "{err}");
    assert!(nothing_written(&edge));

    // CA hash mismatch, with an otherwise valid JWT that the cloud would accept: only the pin
    // stands between it and a certificate. Through a relay that counts connections, proving the
    // edge stopped after `/ca.crt` and never sent its CSR.
    let mut https_relay = Proxy::start(cloud.addresses.https).await;
    let (_, jwt) = token::split_token(&cloud.token).unwrap();
    let mut edge = joiner("wrong-hash", format!("{}.{jwt}", "0".repeat(64)));
    edge.http_server = format!("https://{}", https_relay.addr);
    let err = bootstrap::ensure_certificate(&edge).await.unwrap_err();
    println!("token for another CA: {err}");
    assert!(
        matches!(
            err,
            BootstrapError::CaPin(TokenError::CaHashMismatch { .. })
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("downloaded CA does not match the join token"),
        "{err}"
    );
    assert!(nothing_written(&edge));
    https_relay.next_dial().await;
    assert!(
        https_relay.accepted.try_recv().is_err(),
        "only /ca.crt may be fetched with a token that pins another CA"
    );

    // Expired, though signed by the cloud's own CA: the cloud says 401 and why.
    let expired = token::issue_token(&ca, now - 2 * hour, hour);
    let edge = joiner("expired", expired);
    let err = bootstrap::ensure_certificate(&edge).await.unwrap_err();
    println!("expired token: {err}");
    match &err {
        BootstrapError::Http(HttpError::Status { status, body, .. }) => {
            assert_eq!(status.as_u16(), 401);
            assert!(body.contains("expired"), "{body}");
        }
        other => panic!("expected HTTP 401, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("401") && text.contains("expired"), "{text}");
    assert!(!edge.cert_file.exists() && !edge.key_file.exists());

    // The right CA hash, but an HMAC from another CA's key.
    let forged = token::issue_token_raw(ca.ca_der(), foreign.ca_key_der(), now, hour);
    let edge = joiner("forged", forged);
    let err = bootstrap::ensure_certificate(&edge).await.unwrap_err();
    println!("token signed by another CA's key: {err}");
    match &err {
        BootstrapError::Http(HttpError::Status { status, body, .. }) => {
            assert_eq!(status.as_u16(), 401);
            assert!(body.contains("signature"), "{body}");
        }
        other => panic!("expected HTTP 401, got {other:?}"),
    }
    assert!(!edge.cert_file.exists() && !edge.key_file.exists());

    // keadm's "already joined?" check: unknown until the node has connected.
    let https = cloud.addresses.https;
    let (status, body) = https_get(https, &cloud.ca_der, &format!("/node/{NODE}")).await;
    assert_eq!(status, 404, "{body}");
    let mut edge = start_edge(joiner("good", cloud.token.clone()));
    next_matching(&mut edge.meta, "cloud_connected", is_cloud_connected).await;
    wait_connected(&mut cloud, NODE).await;
    let (status, body) = https_get(https, &cloud.ca_der, &format!("/node/{NODE}")).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = https_get(https, &cloud.ca_der, "/node/nobody").await;
    assert_eq!(status, 404);

    assert!(edge.runtime.shutdown(WAIT).await.is_clean());
    assert!(cloud.runtime.shutdown(WAIT).await.is_clean());
}

// ---------------------------------------------------------------------------------------------
// 3. A certificate for one node used to claim another

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_node_is_refused_with_403() {
    let dir = tempfile::tempdir().unwrap();
    let settings = cloud_settings(dir.path(), local(), local());
    assert!(settings.session.authorize_node_identity);
    let mut cloud = start_cloud(settings.clone()).await;
    let other = issue_client_cert(&cloud_ca(&settings), "other");
    let addr = cloud.addresses.websocket;

    match ws_dial(addr, &cloud.ca_der, &other, NODE).await {
        Err(TransportError::Refused { status, reason }) => {
            println!("CN mismatch refused: {status} {reason}");
            assert_eq!(status, 403);
            assert!(
                reason.contains("system:node:other") && reason.contains(NODE),
                "the reason should name both identities: {reason}"
            );
        }
        Err(other) => panic!("expected a 403 refusal, got {other}"),
        Ok(_) => panic!("a certificate for `other` was admitted as {NODE}"),
    }
    assert_eq!(cloud.metrics.connected_nodes(), 0);

    // The same certificate under its own name is fine: the refusal was about the mismatch only.
    let _own = ws_dial(addr, &cloud.ca_der, &other, "other")
        .await
        .expect("admitted under its own name");
    wait_connected(&mut cloud, "other").await;

    assert!(cloud.runtime.shutdown(WAIT).await.is_clean());
}

// ---------------------------------------------------------------------------------------------
// 4. nodeLimit

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_limit_refuses_new_nodes_with_503_but_not_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = cloud_settings(dir.path(), local(), local());
    settings.session.node_limit = 1;
    let mut cloud = start_cloud(settings.clone()).await;
    let ca = cloud_ca(&settings);
    let first = issue_client_cert(&ca, NODE);
    let second = issue_client_cert(&ca, "edge-2");
    let addr = cloud.addresses.websocket;

    let (_first_tx, mut first_rx) = ws_dial(addr, &cloud.ca_der, &first, NODE)
        .await
        .expect("the first node fits")
        .split();
    // The upgrade is answered before the session is registered; count it only once it is.
    wait_connected(&mut cloud, NODE).await;

    match ws_dial(addr, &cloud.ca_der, &second, "edge-2").await {
        Err(TransportError::Refused { status, reason }) => {
            println!("over the node limit: {status} {reason}");
            assert_eq!(status, 503);
            assert!(
                reason.contains("node limit of 1") && reason.contains("edge-2"),
                "{reason}"
            );
        }
        Err(other) => panic!("expected a 503 refusal, got {other}"),
        Ok(_) => panic!("a second node was admitted with nodeLimit 1"),
    }

    // The first node was not disturbed.
    cloud.bus.send("cloudhub", pod(1, "uid-1")).await.unwrap();
    let got = timeout(WAIT, first_rx.recv())
        .await
        .expect("the first node is still served")
        .unwrap()
        .expect("open");
    assert_eq!(got.header.resource_version, "1");
    assert_eq!(cloud.metrics.connected_nodes(), 1);

    // A reconnect of the node holding the slot is not a new node: admitted, and it replaces the
    // old connection, which is closed.
    let (_again_tx, mut again_rx) = ws_dial(addr, &cloud.ca_der, &first, NODE)
        .await
        .expect("a reconnect of a connected node is admitted at the limit")
        .split();
    let old_closed = async {
        loop {
            match first_rx.recv().await {
                Ok(Some(_retransmission)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    };
    timeout(WAIT, old_closed)
        .await
        .expect("the replaced connection is closed");
    // The pod was never ACKed, so the new connection gets it again.
    let again = timeout(WAIT, again_rx.recv())
        .await
        .expect("redelivery on the new connection")
        .unwrap()
        .expect("open");
    assert_eq!(again.header.resource_version, "1");
    assert_eq!(cloud.metrics.connected_nodes(), 1);

    // Still full for anyone else.
    assert!(matches!(
        ws_dial(addr, &cloud.ca_der, &second, "edge-2").await,
        Err(TransportError::Refused { status: 503, .. })
    ));

    assert!(cloud.runtime.shutdown(WAIT).await.is_clean());
}

// ---------------------------------------------------------------------------------------------
// 5. Clients that break the protocol after admission

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_garbage_frames_close_only_the_offending_connection() {
    const LIMIT: usize = 64 << 10;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = cloud_settings(dir.path(), local(), local());
    settings.session.max_frame_bytes = LIMIT;
    let mut cloud = start_cloud(settings.clone()).await;
    let ca = cloud_ca(&settings);
    let mut edge = start_edge(edge_settings(
        dir.path(),
        &cloud.addresses,
        cloud.token.clone(),
    ));
    next_matching(&mut edge.meta, "cloud_connected", is_cloud_connected).await;
    wait_connected(&mut cloud, NODE).await;

    let addr = cloud.addresses.websocket;
    let big = issue_client_cert(&ca, "edge-big");
    let ca_der = cloud.ca_der.clone();
    let oversized = tokio::task::spawn_blocking(move || {
        let mut ws = raw_ws(addr, &ca_der, &big, "edge-big");
        // The server may stop reading mid-frame; a failed write is part of being cut off.
        let _ = ws.send(tungstenite::Message::text("x".repeat(4 * LIMIT)));
        wait_until_closed(&mut ws)
    });
    match timeout(WAIT, oversized).await.unwrap().unwrap() {
        Ended::Close(Some(frame)) => {
            println!("oversized frame: closed with {frame:?}");
            assert_eq!(frame.code, CloseCode::Size);
            assert!(frame.reason.contains("exceeds the limit"), "{frame:?}");
        }
        // The server stops reading at the frame header, so the client may still be writing the
        // payload when the connection closes and see a broken pipe or reset instead of the
        // close frame; the connection is gone either way, which the cloud confirms below.
        Ended::Close(None) => println!("oversized frame: closed without a reason"),
        Ended::Dropped(error) => println!("oversized frame: connection dropped ({error})"),
    }
    wait_disconnected(&mut cloud, "edge-big").await;

    let junk = issue_client_cert(&ca, "edge-junk");
    let ca_der = cloud.ca_der.clone();
    let garbage = tokio::task::spawn_blocking(move || {
        let mut ws = raw_ws(addr, &ca_der, &junk, "edge-junk");
        ws.send(tungstenite::Message::text("{\"header\": this is not json"))
            .unwrap();
        wait_until_closed(&mut ws)
    });
    let ended = timeout(WAIT, garbage).await.unwrap().unwrap();
    println!("garbage frame: {ended:?}");
    match ended {
        Ended::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Invalid);
            assert!(frame.reason.contains("not a valid message"), "{frame:?}");
        }
        other => panic!("expected a close frame with a reason, got {other:?}"),
    }
    wait_disconnected(&mut cloud, "edge-junk").await;

    // The well-behaved edge never noticed.
    assert_link_works(&mut cloud, &mut edge, 1).await;
    assert_eq!(cloud.metrics.connected_nodes(), 1);

    assert!(edge.runtime.shutdown(WAIT).await.is_clean());
    assert!(cloud.runtime.shutdown(WAIT).await.is_clean());
}

// ---------------------------------------------------------------------------------------------
// 6. Clients that say nothing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_closed_within_the_handshake_and_keepalive_timeouts() {
    const HANDSHAKE: Duration = Duration::from_millis(500);
    const KEEPALIVE: Duration = Duration::from_secs(1);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = cloud_settings(dir.path(), local(), local());
    settings.session.handshake_timeout = HANDSHAKE;
    settings.session.keepalive_timeout = KEEPALIVE;
    let mut cloud = start_cloud(settings.clone()).await;
    let addr = cloud.addresses.websocket;

    // A real edge whose heartbeat beats the keepalive timeout must outlive the silent ones.
    let mut edge_config = edge_settings(dir.path(), &cloud.addresses, cloud.token.clone());
    edge_config.heartbeat = Duration::from_millis(300);
    let mut edge = start_edge(edge_config);
    next_matching(&mut edge.meta, "cloud_connected", is_cloud_connected).await;
    wait_connected(&mut cloud, NODE).await;

    // TCP only: not even a TLS ClientHello.
    let started = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = timeout(WAIT, tcp.read(&mut byte))
        .await
        .expect("the server closes a silent TCP connection");
    let tcp_closed = started.elapsed();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // TLS done, but no upgrade request.
    let started = Instant::now();
    let client = issue_client_cert(&cloud_ca(&settings), "edge-idle");
    let mut tls = tls_dial(addr, &cloud.ca_der, &client).await.unwrap();
    let read = timeout(WAIT, tls.read(&mut byte))
        .await
        .expect("the server closes a TLS connection that never upgrades");
    let tls_closed = started.elapsed();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    println!("silent TCP closed after {tcp_closed:?}, silent TLS after {tls_closed:?}");
    for closed in [tcp_closed, tls_closed] {
        assert!(
            closed >= HANDSHAKE - Duration::from_millis(50) && closed < HANDSHAKE * 4,
            "closed after {closed:?}, handshake timeout {HANDSHAKE:?}"
        );
    }

    // The certificate server's port: TLS done (as a joining edge does it, no client
    // certificate), then not a byte of HTTP.
    let started = Instant::now();
    let config = ke_pki::tls::client_config_ca_only(&cloud.ca_der).unwrap();
    let tcp = TcpStream::connect(cloud.addresses.https).await.unwrap();
    let mut https = TlsConnector::from(Arc::new(config))
        .connect(loopback_name(), tcp)
        .await
        .unwrap();
    let read = timeout(WAIT, https.read(&mut byte))
        .await
        .expect("the certificate server closes a connection that sends no request");
    let https_closed = started.elapsed();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    println!("silent HTTPS client closed after {https_closed:?}");
    assert!(
        https_closed < HANDSHAKE * 4,
        "closed after {https_closed:?}, handshake timeout {HANDSHAKE:?}"
    );

    // Admitted, then silent: closed for want of a keepalive, with a reason.
    let ca_der = cloud.ca_der.clone();
    let silent = tokio::task::spawn_blocking(move || {
        let mut ws = raw_ws(addr, &ca_der, &client, "edge-idle");
        let started = Instant::now();
        (wait_until_closed(&mut ws), started.elapsed())
    });
    let (ended, after) = timeout(WAIT, silent).await.unwrap().unwrap();
    println!("silent session closed after {after:?}: {ended:?}");
    match ended {
        Ended::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Policy);
            assert!(frame.reason.contains("no keepalive"), "{frame:?}");
        }
        other => panic!("expected a close frame with a reason, got {other:?}"),
    }
    assert!(
        after >= KEEPALIVE - Duration::from_millis(50) && after < KEEPALIVE * 3,
        "closed after {after:?}, keepalive timeout {KEEPALIVE:?}"
    );
    wait_disconnected(&mut cloud, "edge-idle").await;
    wait_for_metric(&cloud, "cloudhub_keepalive_timeouts_total 1").await;

    // The heartbeating edge was never timed out and is still served.
    assert_link_works(&mut cloud, &mut edge, 1).await;
    assert!(
        cloud
            .metrics
            .render()
            .lines()
            .any(|l| l == "cloudhub_keepalive_timeouts_total 1")
    );

    assert!(edge.runtime.shutdown(WAIT).await.is_clean());
    assert!(cloud.runtime.shutdown(WAIT).await.is_clean());
}

// ---------------------------------------------------------------------------------------------
// 7. The connection dies mid-stream

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_killed_mid_stream_loses_nothing_and_never_goes_back_in_time() {
    const OBJECTS: u64 = 20;
    const MESSAGES: u64 = 200;
    // Mid-round (rounds are 20 messages), so that messages and ACKs are on the wire at the cut.
    const SEEN_BEFORE_CUT: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let cloud = start_cloud(cloud_settings(dir.path(), local(), local())).await;
    let mut proxy = Proxy::start(cloud.addresses.websocket).await;
    let mut first_config = edge_settings(dir.path(), &cloud.addresses, cloud.token.clone());
    first_config.websocket_server = proxy.addr.to_string();
    let mut first = start_acking_edge(first_config.clone());
    next_matching(&mut first.meta, "cloud_connected", is_cloud_connected).await;

    // 20 objects, each updated 10 times with rising versions: rounds of one update per object,
    // sent back to back so that many are in flight at once, and paced so that the stream is
    // still running when the link dies.
    let sent = Arc::new(AtomicU64::new(0));
    let sender = tokio::spawn({
        let bus = cloud.bus.clone();
        let sent = Arc::clone(&sent);
        async move {
            for rv in 1..=MESSAGES {
                let object = rv % OBJECTS;
                let message = pod_for(NODE, &format!("web-{object}"), &format!("uid-{object}"), rv);
                bus.send("cloudhub", message).await.unwrap();
                sent.store(rv, Ordering::SeqCst);
                if rv % OBJECTS == 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });

    // Per object, every version the edge module saw, in order, across both connections.
    let mut history: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut record = |message: &Message| {
        let (uid, rv) = uid_and_version(message);
        history.entry(uid).or_default().push(rv);
    };
    let mut before_cut = 0;
    while before_cut < SEEN_BEFORE_CUT {
        record(&next_matching(&mut first.meta, "pods before the cut", is_pod).await);
        before_cut += 1;
    }

    // Reset the TCP connection under both ends, then keep the first edge from getting back in.
    proxy.forget_earlier_dials();
    proxy.cut(true);
    let cut_at = Instant::now();
    let sent_at_cut = sent.load(Ordering::SeqCst);
    let depth_at_cut = metric_value(&cloud, "cloudhub_queue_depth");
    let redial = proxy.next_dial().await - cut_at;
    println!("network cut → first redial: {redial:?}");
    assert!(
        redial < Duration::from_secs(1),
        "first redial {redial:?} after the break"
    );
    assert!(
        sent_at_cut < MESSAGES,
        "the cut came after the last message was queued ({sent_at_cut} sent); not mid-stream"
    );
    assert!(first.runtime.shutdown(WAIT).await.is_clean());
    let mut first_total = before_cut;
    while let Ok(message) = first.meta.try_recv() {
        if is_pod(&message) {
            record(&message);
            first_total += 1;
        }
    }

    // A new edgecore process with the same certificate files and no token: it cannot re-join,
    // so it must connect with what the first one stored.
    let mut second_config = first_config.clone();
    second_config.websocket_server = cloud.addresses.websocket.to_string();
    second_config.token = String::new();
    let mut second = start_acking_edge(second_config);
    next_matching(&mut second.meta, "cloud_connected", is_cloud_connected).await;
    let sent_at_reconnect = sent.load(Ordering::SeqCst);
    timeout(WAIT, sender)
        .await
        .expect("the controller finishes")
        .unwrap();

    let newest: BTreeMap<String, u64> = (1..=MESSAGES)
        .map(|rv| (format!("uid-{}", rv % OBJECTS), rv))
        .collect();
    let caught_up = |history: &BTreeMap<String, Vec<u64>>| {
        newest
            .iter()
            .all(|(uid, rv)| history.get(uid).and_then(|h| h.iter().max()) == Some(rv))
    };
    let mut second_total = 0;
    while !caught_up(&history) {
        let message =
            next_matching(&mut second.meta, "every object's newest version", is_pod).await;
        let (uid, rv) = uid_and_version(&message);
        history.entry(uid).or_default().push(rv);
        second_total += 1;
    }

    for (uid, versions) in &history {
        assert!(
            versions.windows(2).all(|pair| pair[0] <= pair[1]),
            "{uid} went back in time: {versions:?}"
        );
    }
    // Everything was ACKed by the edges: nothing is left pending or in flight.
    wait_for_metric(&cloud, "cloudhub_queue_depth 0").await;
    let duplicates: usize = history
        .values()
        .map(|v| v.len() - v.iter().collect::<std::collections::BTreeSet<_>>().len())
        .sum();
    println!(
        "mid-stream kill: {MESSAGES} versions of {OBJECTS} objects; cut after {sent_at_cut} queued \
         with {depth_at_cut} unacknowledged, second edge connected after {sent_at_reconnect}; first edge saw {first_total}, second {second_total}, {duplicates} duplicates"
    );

    assert!(second.runtime.shutdown(WAIT).await.is_clean());
    assert!(cloud.runtime.shutdown(WAIT).await.is_clean());
}

// ---------------------------------------------------------------------------------------------
// 8. cloudcore restarts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_reconnects_by_itself_to_a_restarted_cloudhub() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = start_cloud(cloud_settings(dir.path(), local(), local())).await;
    let addresses = cloud.addresses;
    // Through a relay, so that every dial is seen, even those the restarting cloud refuses.
    let mut proxy = Proxy::start(addresses.websocket).await;
    let mut config = edge_settings(dir.path(), &addresses, cloud.token.clone());
    config.websocket_server = proxy.addr.to_string();
    let mut edge = start_acking_edge(config.clone());
    next_matching(&mut edge.meta, "cloud_connected", is_cloud_connected).await;
    assert_link_works(&mut cloud, &mut edge, 1).await;

    let cert = std::fs::read(&config.cert_file).unwrap();
    let key = std::fs::read(&config.key_file).unwrap();
    let ca = std::fs::read(dir.path().join("ca/rootCA.crt")).unwrap();

    proxy.forget_earlier_dials();
    let broke = Instant::now();
    assert!(cloud.runtime.shutdown(WAIT).await.is_clean());
    let stopped = broke.elapsed();
    // Same ports: tokio sets SO_REUSEADDR on Linux listeners, so the old connections'
    // TIME_WAIT does not block the bind.
    let mut cloud = start_cloud(cloud_settings(
        dir.path(),
        addresses.websocket,
        addresses.https,
    ))
    .await;
    let bound = broke.elapsed();
    let redial = proxy.next_dial().await - broke;
    wait_connected(&mut cloud, NODE).await;
    let reconnected = broke.elapsed();
    println!(
        "cloudhub restart: old runtime stopped in {stopped:?}, new one bound at {bound:?}; \
         first redial {redial:?} and session restored {reconnected:?} after the break"
    );
    assert!(
        redial < Duration::from_secs(1),
        "first redial {redial:?} after the cloud cut the link"
    );

    next_matching(&mut edge.meta, "cloud_disconnected", |m| {
        m.content == content::CLOUD_DISCONNECTED
    })
    .await;
    next_matching(&mut edge.meta, "cloud_connected again", is_cloud_connected).await;
    assert_link_works(&mut cloud, &mut edge, 2).await;

    // No re-join: same key and certificate, same CA.
    assert_eq!(std::fs::read(&config.cert_file).unwrap(), cert);
    assert_eq!(std::fs::read(&config.key_file).unwrap(), key);
    assert_eq!(std::fs::read(dir.path().join("ca/rootCA.crt")).unwrap(), ca);

    assert!(edge.runtime.shutdown(WAIT).await.is_clean());
    assert!(cloud.runtime.shutdown(WAIT).await.is_clean());
}
