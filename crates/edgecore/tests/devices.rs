//! Devices end to end with the real binaries: a DeviceModel and a Device applied with kubectl
//! reach edgecore, a mapper's MQTT reports (`mosquitto_pub` on edgecore's embedded broker) are
//! answered on the twin topics and land in the DeviceStatus kubectl shows — also when they were
//! made while the cloud was down and edgecore restarted in between; and our Modbus mapper,
//! registered over DMI, reads a Modbus TCP server run by the test into the DeviceStatus and
//! writes the Device's desired value into its register.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ke_testkit::{Daemon, sibling_binary};
use nix::sys::signal::Signal;
use support::{Cloud, eventually, start_edge};

const NODE: &str = "edge-dev";
const DEVICE_TOPIC: &str = "$hw/events/device/default/thermometer-01";
const WAIT: Duration = Duration::from_secs(30);

const MANIFEST: &str = r#"apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: thermometer-model
  namespace: default
spec:
  protocol: modbus
  properties:
  - name: temperature
    type: INT
    accessMode: ReadWrite
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: thermometer-01
  namespace: default
  labels:
    description: thermometer
spec:
  deviceModelRef:
    name: thermometer-model
  nodeName: edge-dev
  protocol:
    protocolName: modbus
  properties:
  - name: temperature
    desired:
      value: "20"
    reportToCloud: true
"#;

/// The port of the embedded broker (`mqttServerInternal`) in an edgecore config.
fn mqtt_port(config: &Path) -> u16 {
    let text = std::fs::read_to_string(config).unwrap();
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("mqttServerInternal: tcp://127.0.0.1:")
        })
        .expect("mqttServerInternal")
        .parse()
        .unwrap()
}

fn mosquitto_pub(port: u16, topic: &str, payload: &str) {
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", topic, "-m", payload])
        .output()
        .expect("mosquitto_pub (scripts/testenv installs mosquitto-clients)");
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A subscriber printing `count` messages (`topic payload` lines), for at most 10 s.
fn mosquitto_sub(port: u16, filter: &str, count: usize) -> Child {
    let child = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-v"])
        .args(["-t", filter, "-C", &count.to_string(), "-W", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub");
    // No "subscribed" signal from mosquitto_sub; a moment is enough on loopback.
    std::thread::sleep(Duration::from_millis(300));
    child
}

fn lines_of(child: Child) -> Vec<String> {
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Publishes `payload` on `…/<suffix>` and returns the `count` answers on `…/<suffix>/+`.
fn ask(port: u16, suffix: &str, payload: &str, count: usize) -> Vec<String> {
    let answers = mosquitto_sub(port, &format!("{DEVICE_TOPIC}/{suffix}/+"), count);
    mosquitto_pub(port, &format!("{DEVICE_TOPIC}/{suffix}"), payload);
    lines_of(answers)
}

fn report(actual: &str) -> String {
    format!(
        r#"{{"event_id":"","timestamp":0,"twin":{{"temperature":{{"expected":{{"value":"20","metadata":{{}}}},"actual":{{"value":"{actual}","metadata":{{}}}},"metadata":{{"type":"integer"}}}}}}}}"#
    )
}

/// The temperature twin's reported value in the DeviceStatus.
fn reported(cloud: &Cloud) -> Option<String> {
    let status = cloud.get(&["devicestatus", "thermometer-01"])?;
    status["status"]["twins"]
        .as_array()?
        .iter()
        .find(|t| t["propertyName"] == "temperature")?["reported"]["value"]
        .as_str()
        .map(str::to_owned)
}

#[test]
fn mqtt_twin_reports_reach_device_status_online_offline_and_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Cloud::start(dir.path());
    let config = cloud.edge_config(&dir.path().join("edge"), NODE, &[]);
    let port = mqtt_port(&config);
    let mut edge = cloud.start_registered_edge(&config, NODE);

    let manifest = dir.path().join("devices.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let out = cloud.kubectl(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");

    // The node learns of the device (mappers ask for the list).
    eventually("the device in the node's membership", WAIT, || {
        let answers = mosquitto_sub(
            port,
            &format!("$hw/events/node/{NODE}/membership/get/result"),
            1,
        );
        mosquitto_pub(
            port,
            &format!("$hw/events/node/{NODE}/membership/get"),
            r#"{"event_id":"m1"}"#,
        );
        let answer = lines_of(answers).join("\n");
        answer
            .contains(r#""id":"default/thermometer-01""#)
            .then_some(())
    });

    // A mapper reports: result, document and delta come back on MQTT…
    let started = Instant::now();
    let answers = ask(port, "twin/update", &report("25"), 3);
    let topics: Vec<&str> = answers
        .iter()
        .map(|l| l.split_once(' ').unwrap().0)
        .collect();
    assert_eq!(
        topics,
        [
            format!("{DEVICE_TOPIC}/twin/update/result"),
            format!("{DEVICE_TOPIC}/twin/update/document"),
            format!("{DEVICE_TOPIC}/twin/update/delta"),
        ]
    );
    assert!(
        answers[0].contains(r#""actual":{"value":"25""#),
        "{answers:?}"
    );
    assert!(answers[2].contains(r#""delta":{"temperature":"20"}"#));
    // …and the value reaches the DeviceStatus.
    eventually("the reported value in the DeviceStatus", WAIT, || {
        (reported(&cloud).as_deref() == Some("25")).then_some(())
    });
    eprintln!("twin report → DeviceStatus: {:?}", started.elapsed());

    mosquitto_pub(
        port,
        &format!("{DEVICE_TOPIC}/state/update"),
        r#"{"event_id":"","timestamp":0,"state":"online"}"#,
    );
    eventually("the device state in the DeviceStatus", WAIT, || {
        let status = cloud.get(&["devicestatus", "thermometer-01"])?;
        (status["status"]["state"] == "online").then_some(())
    });

    // Malformed reports get error results; edgecore goes on.
    let garbage = ask(port, "twin/update", "{not json", 1);
    assert!(garbage[0].contains(r#""code":400"#), "{garbage:?}");
    let bad_type = ask(port, "twin/update", &report("warm"), 1);
    assert!(
        bad_type[0].contains("the value is not int or integer"),
        "{bad_type:?}"
    );

    // The cloud goes away; a report made meanwhile is answered locally and kept…
    cloud.stop();
    let answers = ask(port, "twin/update", &report("30"), 1);
    assert!(answers[0].contains(r#""value":"30""#), "{answers:?}");
    // …across an edgecore restart, which keeps the twin too.
    let status = edge.stop_with(Signal::SIGTERM, WAIT);
    assert!(status.success(), "edgecore exit {status}:\n{}", edge.log());
    let mut edge = start_edge(&config);
    let twin = ask(port, "twin/get", r#"{"event_id":"g1"}"#, 1);
    assert!(
        twin[0].contains(r#""actual":{"value":"30""#),
        "the twin after a restart: {twin:?}"
    );
    cloud.restart();
    eventually("the offline report in the DeviceStatus", WAIT, || {
        (reported(&cloud).as_deref() == Some("30")).then_some(())
    });
    let status = edge.stop_with(Signal::SIGTERM, WAIT);
    assert!(status.success(), "edgecore exit {status}:\n{}", edge.log());
}

/// A Modbus TCP server with 16 holding registers: function 3 reads, 6 and 16 write; anything
/// else gets exception 1 (illegal function).
struct ModbusServer {
    port: u16,
    registers: Arc<Mutex<[u16; 16]>>,
}

impl ModbusServer {
    fn start() -> ModbusServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let registers = Arc::new(Mutex::new([0u16; 16]));
        let shared = Arc::clone(&registers);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let registers = Arc::clone(&shared);
                std::thread::spawn(move || serve_modbus(stream, &registers));
            }
        });
        ModbusServer { port, registers }
    }

    fn register(&self, address: usize) -> u16 {
        self.registers.lock().unwrap()[address]
    }

    fn set(&self, address: usize, value: u16) {
        self.registers.lock().unwrap()[address] = value;
    }
}

fn serve_modbus(mut stream: TcpStream, registers: &Mutex<[u16; 16]>) {
    let mut header = [0u8; 7];
    while stream.read_exact(&mut header).is_ok() {
        let length = usize::from(u16::from_be_bytes([header[4], header[5]]));
        let mut pdu = vec![0u8; length.saturating_sub(1)];
        if stream.read_exact(&mut pdu).is_err() || pdu.len() < 5 {
            return;
        }
        let word = |i: usize| usize::from(u16::from_be_bytes([pdu[i], pdu[i + 1]]));
        let (address, count) = (word(1), word(3));
        let mut registers = registers.lock().unwrap();
        let answer: Vec<u8> = match pdu[0] {
            3 if address + count <= 16 => {
                let mut answer = vec![3, (count * 2) as u8];
                for r in &registers[address..address + count] {
                    answer.extend_from_slice(&r.to_be_bytes());
                }
                answer
            }
            6 if address < 16 => {
                registers[address] = count as u16;
                pdu.clone()
            }
            16 if address + count <= 16 => {
                for i in 0..count {
                    registers[address + i] = word(6 + 2 * i) as u16;
                }
                pdu[..5].to_vec()
            }
            function => vec![function | 0x80, if function == 3 { 2 } else { 1 }],
        };
        drop(registers);
        let mut frame = header[..4].to_vec();
        frame.extend_from_slice(&((answer.len() + 1) as u16).to_be_bytes());
        frame.push(header[6]);
        frame.extend_from_slice(&answer);
        if stream.write_all(&frame).is_err() {
            return;
        }
    }
}

/// An HTTP server that answers 200 to everything and keeps the bodies it was sent.
fn http_sink() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&bodies);
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        kept.lock().unwrap().push(body.to_owned());
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                        request.clear();
                    }
                }
            }
        }
    });
    (port, bodies)
}

fn modbus_manifest(port: u16, http_port: u16, desired: Option<&str>) -> String {
    let desired = desired
        .map(|v| format!("    desired:\n      value: \"{v}\"\n"))
        .unwrap_or_default();
    format!(
        r#"apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: boiler-model
  namespace: default
spec:
  protocol: modbus
  properties:
  - name: temperature
    type: INT
    accessMode: ReadWrite
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: boiler-01
  namespace: default
spec:
  deviceModelRef:
    name: boiler-model
  nodeName: edge-mb
  protocol:
    protocolName: modbus
    configData:
      ip: 127.0.0.1
      port: {port}
      slaveID: 1
  properties:
  - name: temperature
{desired}    visitors:
      protocolName: modbus
      configData:
        register: HoldingRegister
        offset: 2
        limit: 1
        scale: 1
    collectCycle: 200
    reportCycle: 1000
    reportToCloud: true
    pushMethod:
      http:
        hostName: 127.0.0.1
        port: {http_port}
        requestPath: /values
        timeout: 2000
"#
    )
}

fn boiler_reported(cloud: &Cloud) -> Option<String> {
    let status = cloud.get(&["devicestatus", "boiler-01"])?;
    status["status"]["twins"]
        .as_array()?
        .iter()
        .find(|t| t["propertyName"] == "temperature")?["reported"]["value"]
        .as_str()
        .map(str::to_owned)
}

#[test]
fn the_modbus_mapper_reads_registers_into_device_status_and_writes_desired_values() {
    let modbus = ModbusServer::start();
    modbus.set(2, 25);
    let (http_port, pushed) = http_sink();
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path());
    let config = cloud.edge_config(&dir.path().join("edge"), "edge-mb", &[]);
    let mut edge = cloud.start_registered_edge(&config, "edge-mb");
    let etc = dir.path().join("edge/etc/kubeedge");
    let mut mapper = Daemon::start(
        &sibling_binary("modbus-mapper"),
        &[
            "--socket",
            etc.join("modbus.sock").to_str().unwrap(),
            "--edgecore-socket",
            etc.join("dmi.sock").to_str().unwrap(),
        ],
    );
    mapper.wait_for_log("registered with edgecore", WAIT);

    let manifest = dir.path().join("boiler.yaml");
    std::fs::write(&manifest, modbus_manifest(modbus.port, http_port, None)).unwrap();
    let applied = Instant::now();
    let out = cloud.kubectl(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    eventually("the register's value in the DeviceStatus", WAIT, || {
        (boiler_reported(&cloud).as_deref() == Some("25")).then_some(())
    });
    eprintln!(
        "kubectl apply → Modbus value in DeviceStatus: {:?}",
        applied.elapsed()
    );

    // The register changes on the device: the DeviceStatus follows.
    modbus.set(2, 27);
    let changed = Instant::now();
    eventually("the new register value in the DeviceStatus", WAIT, || {
        (boiler_reported(&cloud).as_deref() == Some("27")).then_some(())
    });
    eprintln!("register change → DeviceStatus: {:?}", changed.elapsed());
    let state = cloud.get(&["devicestatus", "boiler-01"]).unwrap();
    assert_eq!(state["status"]["state"], "online");
    // pushMethod.http: the values were POSTed as they were read.
    let bodies = pushed.lock().unwrap().clone();
    assert!(
        bodies.iter().any(|b| b.contains(r#""propertyName":"temperature""#) && b.contains(r#""value":"27""#)),
        "pushed: {bodies:?}"
    );

    // Bad DMI requests get errors; garbage on the socket is dropped; edgecore goes on.
    refuse_bad_dmi_requests(&etc.join("dmi.sock"));

    // A desired value in the Device is written to the register.
    std::fs::write(
        &manifest,
        modbus_manifest(modbus.port, http_port, Some("30")),
    )
    .unwrap();
    let out = cloud.kubectl(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    eventually("the desired value in the register", WAIT, || {
        (modbus.register(2) == 30).then_some(())
    });
    eventually("the written value reported", WAIT, || {
        (boiler_reported(&cloud).as_deref() == Some("30")).then_some(())
    });

    let status = mapper.stop_with(Signal::SIGTERM, WAIT);
    assert!(status.success(), "mapper exit {status}:\n{}", mapper.log());
    let status = edge.stop_with(Signal::SIGTERM, WAIT);
    assert!(status.success(), "edgecore exit {status}:\n{}", edge.log());
}

fn refuse_bad_dmi_requests(socket: &Path) {
    use ke_dmi::v1beta1 as pb;
    use ke_dmi::v1beta1::device_manager_service_client::DeviceManagerServiceClient;
    use tonic::Code;

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = DeviceManagerServiceClient::new(ke_dmi::socket::channel(socket));
        let no_protocol = pb::MapperRegisterRequest {
            with_data: true,
            mapper: Some(pb::MapperInfo {
                name: "nameless".into(),
                ..Default::default()
            }),
        };
        let err = client.mapper_register(no_protocol).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("protocol is nil"), "{err:?}");
        let no_twins = pb::ReportDeviceStatusRequest {
            device_name: "boiler-01".into(),
            device_namespace: "default".into(),
            reported_device: None,
        };
        let err = client.report_device_status(no_twins).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        let bad_name = pb::ReportDeviceStatesRequest {
            device_name: "a/b/#".into(),
            device_namespace: "default".into(),
            state: "online".into(),
        };
        let err = client.report_device_states(bad_name).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        let no_state = pb::ReportDeviceStatesRequest {
            device_name: "boiler-01".into(),
            ..Default::default()
        };
        let err = client.report_device_states(no_state).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    });
    let mut garbage = std::os::unix::net::UnixStream::connect(socket).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\n\r\n\x00\xff garbage")
        .unwrap();
    let mut rest = Vec::new();
    let _ = garbage.read_to_end(&mut rest);
}
