//! The embedded broker under load, with mosquitto on the same machine as the yardstick.
//!
//! `cargo bench -p ke-mqtt --bench broker` prints, for each broker: QoS 1 throughput (one
//! publisher, 64 messages in flight, one subscriber ACKing each message: 200,000 twin-update-
//! sized messages), and publish → deliver latency p50/p99 at a steady 5,000 messages/s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use ke_mqtt::broker::{Broker, BrokerConfig};
use ke_mqtt::codec::{self, Connect, Publish, Subscribe};
use ke_mqtt::{Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const TOPIC: &str = "$hw/events/device/default/thermo/twin/update";
const MESSAGES: usize = 200_000;
const WINDOW: usize = 64;

struct Client {
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    buffer: BytesMut,
}

impl Client {
    async fn connect(port: u16, id: &str) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (read, write) = stream.into_split();
        let mut client = Client {
            read,
            write,
            buffer: BytesMut::new(),
        };
        client
            .send(&Packet::Connect(Connect {
                protocol_level: 4,
                client_id: id.into(),
                clean_session: true,
                keep_alive: 0,
                will: None,
                username: None,
                password: None,
            }))
            .await;
        assert!(matches!(client.next().await, Packet::ConnAck(_)));
        client
    }

    async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        codec::encode(packet, &mut out);
        self.write.write_all(&out).await.unwrap();
    }

    async fn next(&mut self) -> Packet {
        loop {
            if let Some(packet) = codec::decode(&mut self.buffer, 1 << 20).unwrap() {
                return packet;
            }
            let n = self.read.read_buf(&mut self.buffer).await.unwrap();
            assert!(n > 0, "broker closed the connection");
        }
    }
}

/// A payload the size of a twin update, stamped with the time since `epoch`.
fn payload(epoch: Instant) -> Bytes {
    let mut payload = BytesMut::with_capacity(256);
    payload.put_u64(epoch.elapsed().as_nanos() as u64);
    payload.put_slice(&[b'x'; 248]);
    payload.freeze()
}

/// Subscribes, then receives `count` messages, ACKing each; their latencies.
async fn subscriber(
    port: u16,
    count: usize,
    epoch: Instant,
    ready: Arc<tokio::sync::Notify>,
) -> Vec<Duration> {
    let mut client = Client::connect(port, "subscriber").await;
    client
        .send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![("$hw/events/device/+/+/twin/update".into(), QoS::AtLeastOnce)],
        }))
        .await;
    assert!(matches!(client.next().await, Packet::SubAck(_)));
    ready.notify_one();
    let mut latencies = Vec::with_capacity(count);
    while latencies.len() < count {
        let Ok(packet) = tokio::time::timeout(Duration::from_secs(5), client.next()).await else {
            println!("  (lost {} of {count} messages)", count - latencies.len());
            break;
        };
        if let Packet::Publish(publish) = packet {
            let sent = u64::from_be_bytes(publish.payload[..8].try_into().unwrap());
            let now = epoch.elapsed().as_nanos() as u64;
            latencies.push(Duration::from_nanos(now.saturating_sub(sent)));
            if let Some(id) = publish.packet_id {
                client.send(&Packet::PubAck(id)).await;
            }
        }
    }
    latencies
}

/// Publishes `count` QoS 1 messages, `WINDOW` in flight, or one every `interval`.
async fn publisher(port: u16, count: usize, interval: Option<Duration>, epoch: Instant) {
    let mut client = Client::connect(port, "publisher").await;
    let mut in_flight = 0usize;
    let mut ticks = interval.map(tokio::time::interval);
    for i in 0..count {
        if let Some(ticks) = &mut ticks {
            ticks.tick().await;
        }
        while in_flight >= WINDOW {
            if let Packet::PubAck(_) = client.next().await {
                in_flight -= 1;
            }
        }
        client
            .send(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: TOPIC.into(),
                packet_id: Some((i % 65_535 + 1) as u16),
                payload: payload(epoch),
            }))
            .await;
        in_flight += 1;
    }
    while in_flight > 0 {
        if let Packet::PubAck(_) = client.next().await {
            in_flight -= 1;
        }
    }
}

async fn run(port: u16, count: usize, interval: Option<Duration>) -> (Duration, Vec<Duration>) {
    let epoch = Instant::now();
    let ready = Arc::new(tokio::sync::Notify::new());
    let sub = tokio::spawn(subscriber(port, count, epoch, Arc::clone(&ready)));
    ready.notified().await;
    let started = Instant::now();
    publisher(port, count, interval, epoch).await;
    let latencies = sub.await.unwrap();
    (started.elapsed(), latencies)
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3
}

async fn measure(name: &str, port: u16) {
    let (took, _) = run(port, MESSAGES, None).await;
    println!(
        "{name}: QoS 1, {MESSAGES} messages of 256 B, one publisher (64 in flight) → one subscriber: {:.0} msg/s",
        MESSAGES as f64 / took.as_secs_f64()
    );
    let steady = 50_000;
    let (_, mut latencies) = run(port, steady, Some(Duration::from_micros(200))).await;
    latencies.sort();
    println!(
        "{name}: QoS 1 at 5,000 msg/s, publish → deliver: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let broker = Broker::new(BrokerConfig {
            session_queue: MESSAGES,
            ..BrokerConfig::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cancel = tokio_util::sync::CancellationToken::new();
        let (serving, token) = (broker.clone(), cancel.clone());
        tokio::spawn(async move { serving.serve(listener, token).await });
        measure("ke-mqtt", port).await;
        cancel.cancel();

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Unbounded queues, as the embedded broker's is made for this run.
        let conf = std::env::temp_dir().join("ke-mqtt-bench-mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"),
        )
        .unwrap();
        match std::process::Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            Ok(mut mosquitto) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                measure("mosquitto", port).await;
                let _ = mosquitto.kill();
            }
            Err(err) => println!("mosquitto not run: {err}"),
        }
    });
}
