//! The embedded broker against the real mosquitto clients (`mosquitto_pub`, `mosquitto_sub`),
//! as mappers and users talk to it. Needs the mosquitto-clients package (`scripts/testenv`
//! installs it).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ke_mqtt::QoS;
use ke_mqtt::broker::{Broker, BrokerConfig, Message};
use tokio_util::sync::CancellationToken;

struct Running {
    runtime: tokio::runtime::Runtime,
    broker: Broker,
    port: u16,
    cancel: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn start(config: BrokerConfig) -> Running {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let broker = Broker::new(config);
    let cancel = CancellationToken::new();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let (serving, token) = (broker.clone(), cancel.clone());
    runtime.spawn(async move { serving.serve(listener, token).await });
    Running {
        runtime,
        broker,
        port,
        cancel,
    }
}

fn client(program: &str, port: u16, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn publish(port: u16, args: &[&str]) -> Output {
    client("mosquitto_pub", port, args)
        .output()
        .expect("mosquitto_pub (install mosquitto-clients)")
}

fn subscribe(port: u16, args: &[&str]) -> Child {
    let child = client("mosquitto_sub", port, args)
        .spawn()
        .expect("mosquitto_sub (install mosquitto-clients)");
    // mosquitto_sub says nothing once subscribed; give it the moment it takes on loopback.
    std::thread::sleep(Duration::from_millis(500));
    child
}

fn succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn output_of(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kubeedge_topics_reach_their_subscribers_and_wildcards_skip_dollar_topics() {
    let broker = start(BrokerConfig::default());
    let twin = subscribe(
        broker.port,
        &[
            "-q",
            "1",
            "-v",
            "-C",
            "1",
            "-W",
            "10",
            "-t",
            "$hw/events/device/+/+/twin/+",
        ],
    );
    let everything = subscribe(broker.port, &["-q", "1", "-v", "-W", "3", "-t", "#"]);
    let update = r#"{"event_id":"1","twin":{"temperature":{"actual":{"value":"21"}}}}"#;
    let out = publish(
        broker.port,
        &[
            "-q",
            "1",
            "-t",
            "$hw/events/device/default/thermo/twin/update",
            "-m",
            update,
        ],
    );
    succeeded(&out);
    let out = publish(
        broker.port,
        &["-q", "1", "-t", "node/user/greeting", "-m", "hello"],
    );
    succeeded(&out);

    assert_eq!(
        output_of(twin).trim(),
        format!("$hw/events/device/default/thermo/twin/update {update}")
    );
    let seen = output_of(everything);
    assert!(seen.contains("node/user/greeting hello"), "{seen}");
    assert!(!seen.contains("$hw"), "`#` must not match $ topics: {seen}");
}

#[test]
fn in_process_subscribers_and_publishers_meet_real_clients() {
    let broker = start(BrokerConfig::default());
    let mut inbox = broker
        .broker
        .subscribe("eventbus", &["$hw/events/upload/#"], 100);
    let out = publish(
        broker.port,
        &["-q", "1", "-t", "$hw/events/upload/x", "-m", "up"],
    );
    assert!(out.status.success());
    let got = broker
        .runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), inbox.recv()).await })
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("$hw/events/upload/x", &b"up"[..])
    );
    // A network client cannot take the in-process subscriber's session over.
    let impostor = publish(
        broker.port,
        &["-i", "eventbus", "-t", "$hw/events/upload/y", "-m", "x"],
    );
    assert!(!impostor.status.success(), "a client took eventbus's id");
    let out = publish(
        broker.port,
        &["-q", "1", "-t", "$hw/events/upload/z", "-m", "still"],
    );
    assert!(out.status.success());
    let got = broker
        .runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), inbox.recv()).await })
        .unwrap()
        .unwrap();
    assert_eq!(&got.payload[..], b"still");

    let sub = subscribe(
        broker.port,
        &[
            "-q",
            "1",
            "-C",
            "1",
            "-W",
            "10",
            "-t",
            "$hw/events/node/+/membership/updated",
        ],
    );
    broker.broker.publish(Message {
        topic: "$hw/events/node/edge-1/membership/updated".into(),
        payload: Bytes::from_static(b"{}"),
        qos: QoS::AtLeastOnce,
        retain: false,
    });
    assert_eq!(output_of(sub).trim(), "{}");
}

#[test]
fn retained_messages_and_persistent_sessions_wait_for_their_clients() {
    let broker = start(BrokerConfig::default());
    let out = publish(
        broker.port,
        &["-r", "-q", "1", "-t", "state/thermo", "-m", "online"],
    );
    assert!(out.status.success());
    let late = subscribe(broker.port, &["-C", "1", "-W", "10", "-t", "state/+"]);
    assert_eq!(output_of(late).trim(), "online");

    // Subscribe with a persistent session, leave, miss a message, come back.
    let out = client(
        "mosquitto_sub",
        broker.port,
        &["-c", "-i", "keeper", "-q", "1", "-E", "-t", "jobs/#"],
    )
    .output()
    .unwrap();
    succeeded(&out);
    let out = publish(
        broker.port,
        &["-q", "1", "-t", "jobs/1", "-m", "while away"],
    );
    assert!(out.status.success());
    let back = subscribe(
        broker.port,
        &[
            "-c", "-i", "keeper", "-q", "1", "-C", "1", "-W", "10", "-t", "jobs/#",
        ],
    );
    assert_eq!(output_of(back).trim(), "while away");
}

#[test]
fn credentials_are_checked() {
    let broker = start(BrokerConfig {
        credentials: Some(("mapper".into(), "s3cret".into())),
        ..BrokerConfig::default()
    });
    let wrong = publish(
        broker.port,
        &["-u", "mapper", "-P", "guess", "-t", "a", "-m", "x"],
    );
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr).to_lowercase();
    assert!(
        stderr.contains("refused") || stderr.contains("username"),
        "{stderr}"
    );
    let none = publish(broker.port, &["-t", "a", "-m", "x"]);
    assert!(!none.status.success());
    let right = publish(
        broker.port,
        &["-u", "mapper", "-P", "s3cret", "-t", "a", "-m", "x"],
    );
    succeeded(&right);
}

/// Reads until the broker closes the connection; how long that took.
fn closed_within(stream: &mut TcpStream, deadline: Duration) -> Duration {
    stream.set_read_timeout(Some(deadline)).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(_) => {}
            Err(e) => panic!("not closed within {deadline:?}: {e}"),
        }
    }
}

#[test]
fn garbage_and_silent_clients_are_disconnected_and_others_are_served() {
    let broker = start(BrokerConfig::default());
    let mut garbage = TcpStream::connect(("127.0.0.1", broker.port)).unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    closed_within(&mut garbage, Duration::from_secs(5));

    // CONNECT with a keepalive of 1 s, then silence: closed after 1.5 s.
    let mut silent = TcpStream::connect(("127.0.0.1", broker.port)).unwrap();
    let mut connect = bytes::BytesMut::new();
    ke_mqtt::codec::encode(
        &ke_mqtt::Packet::Connect(ke_mqtt::codec::Connect {
            protocol_level: 4,
            client_id: "quiet".into(),
            clean_session: true,
            keep_alive: 1,
            will: None,
            username: None,
            password: None,
        }),
        &mut connect,
    );
    silent.write_all(&connect).unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(5));
    assert!(took >= Duration::from_millis(1200), "closed after {took:?}");

    let out = publish(broker.port, &["-t", "still/here", "-m", "x"]);
    succeeded(&out);
}

#[test]
fn tls_clients_connect_with_the_ca_and_plain_ones_are_refused() {
    use std::time::SystemTime;

    let ca = ke_pki::CertificateAuthority::generate(SystemTime::now()).unwrap();
    let spec = ke_pki::ServerCertSpec {
        ips: vec!["127.0.0.1".parse().unwrap()],
        dns_names: vec!["localhost".into()],
    };
    let cert = ke_pki::ServerCert::issue(&ca, &spec, SystemTime::now()).unwrap();
    let server =
        ke_pki::tls::server_config_optional_client_cert(ca.ca_der(), cert.cert_der(), cert.key())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.ca_pem()).unwrap();

    let running = start(BrokerConfig::default());
    let listener = running
        .runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let (serving, token) = (running.broker.clone(), running.cancel.clone());
    running.runtime.spawn(async move {
        serving
            .serve_tls(listener, std::sync::Arc::new(server), token)
            .await
    });

    let mut inbox = running
        .broker
        .subscribe("eventbus", &["$hw/events/upload/#"], 100);
    let ca_path = ca_file.to_str().unwrap();
    let tls = publish(
        port,
        &[
            "--cafile",
            ca_path,
            "-q",
            "1",
            "-t",
            "$hw/events/upload/a",
            "-m",
            "sealed",
        ],
    );
    succeeded(&tls);
    let got = running
        .runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), inbox.recv()).await })
        .unwrap()
        .unwrap();
    assert_eq!(&got.payload[..], b"sealed");
    let plain = publish(port, &["-t", "$hw/events/upload/a", "-m", "open"]);
    assert!(
        !plain.status.success(),
        "plain MQTT on the TLS port was accepted"
    );

    // Our client over TLS, trusting only the CA.
    let client_tls = ke_pki::tls::client_config_ca_only(ca.ca_der()).unwrap();
    let cancel = CancellationToken::new();
    let (_client, mut incoming) = running.runtime.block_on(async {
        ke_mqtt::client::connect(
            ke_mqtt::client::ClientConfig {
                address: format!("127.0.0.1:{port}"),
                client_id: "tls-client".into(),
                keep_alive: Duration::from_secs(5),
                credentials: None,
                subscriptions: vec![("tls/#".into(), QoS::AtLeastOnce)],
                queue: 10,
                max_packet: 1 << 20,
                tls: Some((std::sync::Arc::new(client_tls), "localhost".into())),
            },
            cancel.clone(),
        )
    });
    let got = running.runtime.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            assert!(tokio::time::Instant::now() < deadline, "nothing over TLS");
            running.broker.publish(Message {
                topic: "tls/x".into(),
                payload: Bytes::from_static(b"both ends"),
                qos: QoS::AtLeastOnce,
                retain: false,
            });
            if let Ok(Some(m)) =
                tokio::time::timeout(Duration::from_millis(300), incoming.recv()).await
            {
                return m;
            }
        }
    });
    assert_eq!(&got.payload[..], b"both ends");
    cancel.cancel();
}

#[test]
fn qos2_publishes_complete_and_wills_announce_a_lost_client() {
    let broker = start(BrokerConfig::default());
    let watcher = subscribe(
        broker.port,
        &["-v", "-C", "2", "-W", "10", "-t", "status/#"],
    );
    // mosquitto_pub -q 2 only exits 0 after PUBREC, PUBREL and PUBCOMP.
    succeeded(&publish(
        broker.port,
        &["-q", "2", "-t", "status/pub", "-m", "exactly once"],
    ));
    // A client that dies without DISCONNECT: its will is published.
    let mut doomed = client(
        "mosquitto_sub",
        broker.port,
        &[
            "--will-topic",
            "status/doomed",
            "--will-payload",
            "gone",
            "-t",
            "unused",
        ],
    )
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let seen = output_of(watcher);
    assert!(seen.contains("status/pub exactly once"), "{seen}");
    assert!(seen.contains("status/doomed gone"), "{seen}");
}
