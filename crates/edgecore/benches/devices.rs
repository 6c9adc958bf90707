//! Devices as a mapper drives them over MQTT: release cloudcore (embedded control plane) and
//! edgecore on loopback, reports published on edgecore's embedded broker.
//!
//! `cargo build --release -p cloudcore && cargo bench -p edgecore --bench devices` prints:
//! 1. twin report → DeviceStatus latency, p50/p99 over 100 reports to one device, one after
//!    another: from the MQTT publish to the new value being visible in the API server (polled
//!    every 5 ms);
//! 2. 1,000 devices each reporting once a second for 30 s: edgecore's CPU (share of one core)
//!    and resident memory, the twin answers published per second, and — since edgehub sends at
//!    most `messageQPS` (30/s) messages to the cloud and reports wait merged in the outbox — how
//!    long after the last report every DeviceStatus shows its device's last value.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ke_mqtt::QoS;
use ke_mqtt::broker::Message;
use ke_mqtt::client::{self, ClientConfig};
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use support::{Cloud, eventually, percentiles, rss_mib};
use tokio_util::sync::CancellationToken;

const NODE: &str = "edge-devices-bench";
const DEVICES: usize = 1_000;
const LOAD_SECONDS: u64 = 30;

/// User plus system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn manifest() -> String {
    let mut text = String::from(
        "apiVersion: devices.kubeedge.io/v1beta1\nkind: DeviceModel\nmetadata: {name: meter, namespace: default}\n\
         spec:\n  protocol: bench\n  properties:\n  - {name: reading, type: INT, accessMode: ReadOnly}\n",
    );
    for i in 0..DEVICES {
        text.push_str(&format!(
            "---\napiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {{name: meter-{i}, namespace: default}}\n\
             spec:\n  deviceModelRef: {{name: meter}}\n  nodeName: {NODE}\n  protocol: {{protocolName: bench}}\n  \
             properties:\n  - {{name: reading, reportToCloud: true}}\n"
        ));
    }
    text
}

fn report(value: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"event_id":"","timestamp":0,"twin":{{"reading":{{"actual":{{"value":"{value}"}},"metadata":{{"type":"integer"}}}}}}}}"#
    ))
}

fn publish(device: usize, value: u64) -> Message {
    Message {
        topic: format!("$hw/events/device/default/meter-{device}/twin/update"),
        payload: report(value),
        qos: QoS::AtLeastOnce,
        retain: false,
    }
}

fn reported(status: &DynamicObject) -> Option<String> {
    status.data["status"]["twins"][0]["reported"]["value"]
        .as_str()
        .map(str::to_owned)
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path());
    let config = cloud.edge_config(&dir.path().join("edge"), NODE, &[]);
    let text = std::fs::read_to_string(&config).unwrap();
    let port = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("mqttServerInternal: tcp://"))
        .unwrap()
        .to_owned();
    let mut edge = cloud.start_registered_edge(&config, NODE);
    let pid = edge.pid();

    let manifest_path = dir.path().join("devices.yaml");
    std::fs::write(&manifest_path, manifest()).unwrap();
    let out = cloud.kubectl(&["apply", "-f", manifest_path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(
            cloud
                .dir
                .join("var/lib/kubeedge/controlplane/admin.kubeconfig"),
        )
        .unwrap();
        let kube_config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        let resource = ApiResource {
            group: "devices.kubeedge.io".into(),
            version: "v1beta1".into(),
            api_version: "devices.kubeedge.io/v1beta1".into(),
            kind: "DeviceStatus".into(),
            plural: "devicestatuses".into(),
        };
        let statuses: Api<DynamicObject> = Api::namespaced_with(
            kube::Client::try_from(kube_config).unwrap(),
            "default",
            &resource,
        );
        let cancel = CancellationToken::new();
        let (mqtt, mut answers) = client::connect(
            ClientConfig {
                address: port.clone(),
                client_id: "bench-mapper".into(),
                keep_alive: Duration::from_secs(30),
                credentials: None,
                subscriptions: vec![(
                    "$hw/events/device/+/+/twin/update/result".into(),
                    QoS::AtMostOnce,
                )],
                queue: 65_536,
                max_packet: 1 << 20,
                tls: None,
            },
            cancel.clone(),
        );
        let answered = Arc::new(AtomicU64::new(0));
        tokio::spawn({
            let answered = Arc::clone(&answered);
            async move {
                while answers.recv().await.is_some() {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        // Every device known to the edge and with a DeviceStatus in the cloud.
        let started = Instant::now();
        loop {
            let list = statuses.list(&ListParams::default()).await.unwrap();
            if list.items.len() >= DEVICES {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "DeviceStatuses not created");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let before = answered.load(Ordering::Relaxed);
        mqtt.publish(publish(0, 0)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while answered.load(Ordering::Relaxed) == before {
            assert!(Instant::now() < deadline, "the edge does not know the devices");
            mqtt.publish(publish(0, 0)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // 1. Latency, one report at a time.
        let mut latencies = Vec::new();
        for value in 1..=100u64 {
            let sent = Instant::now();
            mqtt.publish(publish(0, value)).await.unwrap();
            loop {
                let status = statuses.get("meter-0").await.unwrap();
                if reported(&status) == Some(value.to_string()) {
                    break;
                }
                assert!(sent.elapsed() < Duration::from_secs(30), "report {value} never arrived");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            latencies.push(sent.elapsed().as_secs_f64() * 1e3);
        }
        let (p50, p99) = percentiles(latencies);
        println!("twin report -> DeviceStatus: p50 {p50:.0} ms, p99 {p99:.0} ms (100 reports)");

        // 2. Load: every device once a second.
        let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .unwrap()
            .unwrap() as f64;
        let cpu_before = cpu_ticks(pid);
        let answered_before = answered.load(Ordering::Relaxed);
        let load_started = Instant::now();
        let mut interval = tokio::time::interval(Duration::from_secs(1) / DEVICES as u32);
        let mut last_value = 0;
        for second in 0..LOAD_SECONDS {
            last_value = 1_000 + second;
            for device in 0..DEVICES {
                interval.tick().await;
                mqtt.publish(publish(device, last_value)).await.unwrap();
            }
        }
        let load_time = load_started.elapsed().as_secs_f64();
        let cpu = (cpu_ticks(pid) - cpu_before) as f64 / ticks_per_second / load_time;
        let rate = (answered.load(Ordering::Relaxed) - answered_before) as f64 / load_time;
        println!(
            "{DEVICES} devices at 1 Hz for {LOAD_SECONDS} s: edgecore CPU {:.0}% of a core, RSS {:.1} MiB, {rate:.0} twin answers/s",
            cpu * 100.0,
            rss_mib(pid)
        );
        let drain_started = Instant::now();
        let expected = last_value.to_string();
        loop {
            let list = statuses.list(&ListParams::default()).await.unwrap();
            let fresh = list
                .items
                .iter()
                .filter(|s| reported(s).as_deref() == Some(expected.as_str()))
                .count();
            if fresh >= DEVICES {
                break;
            }
            assert!(
                drain_started.elapsed() < Duration::from_secs(600),
                "only {fresh} DeviceStatuses caught up"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        println!(
            "every DeviceStatus shows its last report {:.1} s after it was sent (edgehub messageQPS 30)",
            drain_started.elapsed().as_secs_f64()
        );
        cancel.cancel();
    });
    eventually("edgecore stopped", Duration::from_secs(30), || {
        edge.stop_with(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(20))
            .success()
            .then_some(())
    });
}
