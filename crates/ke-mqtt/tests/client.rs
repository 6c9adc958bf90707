//! The client against a real mosquitto broker (and its clients), including the broker's
//! restart: the client dials again, subscribes again, and loses no QoS 1 message.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use ke_mqtt::QoS;
use ke_mqtt::broker::Message;
use ke_mqtt::client::{self, ClientConfig};
use tokio_util::sync::CancellationToken;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A mosquitto broker process, stopped when dropped.
struct Mosquitto(Child);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mosquitto(port: u16) -> Mosquitto {
    let broker = Mosquitto(
        Command::new("mosquitto")
            .args(["-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (scripts/testenv installs it)"),
    );
    // Listening takes a moment.
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return broker;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("mosquitto did not listen on {port}");
}

fn mosquitto_pub(port: u16, topic: &str, payload: &str) {
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            payload,
        ])
        .output()
        .expect("mosquitto_pub (install mosquitto-clients)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real subscriber waiting (at most `seconds`) for one message on `filter`.
fn mosquitto_sub(port: u16, filter: &str, seconds: &str) -> Child {
    Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-C",
            "1",
            "-W",
            seconds,
            "-t",
            filter,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub (install mosquitto-clients)")
}

/// Publishes with mosquitto_pub until the client receives it (it may not have subscribed yet,
/// or be dialling again); at most 40 s.
async fn received(
    incoming: &mut tokio::sync::mpsc::Receiver<Message>,
    port: u16,
    topic: &str,
    payload: &str,
) -> Message {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{topic} never arrived"
        );
        mosquitto_pub(port, topic, payload);
        if let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(500), incoming.recv()).await
        {
            return message;
        }
    }
}

#[test]
fn the_client_survives_a_broker_restart_and_loses_no_qos1_message() {
    let port = free_port();
    let broker = mosquitto(port);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cancel = CancellationToken::new();
    let (client, mut incoming) = runtime.block_on(async {
        client::connect(
            ClientConfig {
                address: format!("127.0.0.1:{port}"),
                client_id: "edgecore-eventbus".into(),
                keep_alive: Duration::from_secs(5),
                credentials: None,
                subscriptions: vec![("$hw/events/device/+/+/twin/+".into(), QoS::AtLeastOnce)],
                queue: 100,
                max_packet: 1 << 20,
                tls: None,
            },
            cancel.clone(),
        )
    });
    // Subscribed once a message comes through; mosquitto_pub until one does.
    let got = runtime.block_on(received(
        &mut incoming,
        port,
        "$hw/events/device/default/thermo/twin/update",
        "first",
    ));
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        (
            "$hw/events/device/default/thermo/twin/update",
            &b"first"[..]
        )
    );

    // Published by the client, received by a real subscriber.
    let sub = mosquitto_sub(port, "$hw/events/device/+/+/twin/update/result", "10");
    std::thread::sleep(Duration::from_millis(500));
    let result = Message {
        topic: "$hw/events/device/default/thermo/twin/update/result".into(),
        payload: Bytes::from_static(b"{\"event_id\":\"1\"}"),
        qos: QoS::AtLeastOnce,
        retain: false,
    };
    runtime.block_on(client.publish(result.clone())).unwrap();
    let out = sub.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "{\"event_id\":\"1\"}"
    );

    // The broker goes away; what the client publishes meanwhile is sent once it is back, and
    // the subscription is made again.
    drop(broker);
    runtime
        .block_on(client.publish(Message {
            topic: "queued/while/down".into(),
            payload: Bytes::from_static(b"kept"),
            // Retained, so the subscriber below gets it however the reconnection races it.
            retain: true,
            ..result
        }))
        .unwrap();
    let broker = mosquitto(port);
    let sub = mosquitto_sub(port, "queued/#", "40");
    let got = runtime.block_on(received(
        &mut incoming,
        port,
        "$hw/events/device/default/thermo/twin/get",
        "again",
    ));
    assert_eq!(&got.payload[..], b"again");
    let out = sub.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "kept");
    cancel.cancel();
    drop(broker);
}
