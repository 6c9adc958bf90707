//! A busybox container runs through CRI against the containerd that
//! `scripts/testenv up` starts.
//!
//! These tests need the test environment and fail (never skip) without it:
//!
//! ```text
//! eval "$(scripts/testenv up)"
//! cargo test -p ke-cri
//! ```

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ke_cri::{CriClient, CriError, api, image_spec};

/// Upper bound for a whole test, so a wedged runtime fails CI instead of
/// hanging it.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);

struct TestEnv {
    endpoint: String,
    busybox: String,
}

fn testenv() -> TestEnv {
    let var = |name: &str| match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: these tests need the containerd test environment.\n\
             Run from the workspace root:\n\n    eval \"$(scripts/testenv up)\"\n\n\
             and then re-run cargo test."
        ),
    };
    TestEnv {
        endpoint: var("KE_CRI_ENDPOINT"),
        busybox: var("KE_BUSYBOX_IMAGE"),
    }
}

/// Short, unique per run, so reruns and parallel tests never collide on CRI
/// names (which must be unique per sandbox/container name+attempt).
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

async fn connect(env: &TestEnv) -> CriClient {
    let cri = CriClient::connect(&env.endpoint)
        .await
        .unwrap_or_else(|e| panic!("{e}\n(is the test env up? eval \"$(scripts/testenv up)\")"));
    assert!(
        cri.image_present(&env.busybox).await.unwrap(),
        "image {} is missing from {}; re-run scripts/testenv up",
        env.busybox,
        env.endpoint
    );
    cri
}

/// Removes everything a test created, even when it panics half-way: Drop
/// cannot be async, and the test's own (current-thread) runtime is blocked
/// while Drop runs, so cleanup uses a fresh connection on a private runtime in
/// a helper thread.
struct Cleanup {
    endpoint: String,
    sandboxes: Vec<String>,
    containers: Vec<String>,
}

impl Cleanup {
    fn new(endpoint: &str) -> Self {
        Cleanup {
            endpoint: endpoint.to_owned(),
            sandboxes: Vec::new(),
            containers: Vec::new(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let endpoint = self.endpoint.clone();
        let containers = std::mem::take(&mut self.containers);
        let sandboxes = std::mem::take(&mut self.sandboxes);
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async move {
                let Ok(cri) = CriClient::connect(&endpoint).await else {
                    eprintln!("cleanup: cannot connect to {endpoint}; leaving resources behind");
                    return;
                };
                let mut rt = cri.runtime();
                for id in containers.iter().rev() {
                    let _ = rt
                        .stop_container(api::StopContainerRequest {
                            container_id: id.clone(),
                            timeout: 0,
                        })
                        .await;
                    if let Err(e) = rt
                        .remove_container(api::RemoveContainerRequest {
                            container_id: id.clone(),
                        })
                        .await
                    {
                        eprintln!("cleanup: RemoveContainer {id}: {e}");
                    }
                }
                for id in sandboxes.iter().rev() {
                    let _ = rt
                        .stop_pod_sandbox(api::StopPodSandboxRequest {
                            pod_sandbox_id: id.clone(),
                        })
                        .await;
                    if let Err(e) = rt
                        .remove_pod_sandbox(api::RemovePodSandboxRequest {
                            pod_sandbox_id: id.clone(),
                        })
                        .await
                    {
                        eprintln!("cleanup: RemovePodSandbox {id}: {e}");
                    }
                }
            });
        });
        let _ = done.join();
    }
}

fn sandbox_config(name: &str, log_dir: &Path, host_network: bool) -> api::PodSandboxConfig {
    let network = if host_network {
        api::NamespaceMode::Node
    } else {
        api::NamespaceMode::Pod
    };
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.to_owned(),
            uid: uuid::Uuid::new_v4().to_string(),
            namespace: "ke-cri-test".to_owned(),
            attempt: 0,
        }),
        // runc refuses to set a hostname without a private UTS namespace, and
        // host-network pods share the node's; the kubelet also leaves it empty.
        hostname: if host_network {
            String::new()
        } else {
            name.to_owned()
        },
        log_directory: log_dir.display().to_string(),
        linux: Some(api::LinuxPodSandboxConfig {
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(api::NamespaceOption {
                    network: network as i32,
                    pid: api::NamespaceMode::Pod as i32,
                    ipc: api::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn run_sandbox(
    cri: &CriClient,
    guard: &mut Cleanup,
    config: &api::PodSandboxConfig,
) -> Result<String, CriError> {
    let id = cri
        .runtime()
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .map_err(|s| cri.call_error("RunPodSandbox", s))?
        .into_inner()
        .pod_sandbox_id;
    guard.sandboxes.push(id.clone());
    Ok(id)
}

/// Creates and starts a busybox container running `command`; its CRI log goes
/// to `<sandbox log_directory>/<name>.log`.
async fn start_container(
    cri: &CriClient,
    guard: &mut Cleanup,
    sandbox_id: &str,
    sandbox: &api::PodSandboxConfig,
    image: &str,
    name: &str,
    command: &[&str],
) -> Result<String, CriError> {
    let mut rt = cri.runtime();
    let id = rt
        .create_container(api::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
            config: Some(api::ContainerConfig {
                metadata: Some(api::ContainerMetadata {
                    name: name.to_owned(),
                    attempt: 0,
                }),
                image: Some(image_spec(image)),
                command: command.iter().map(|s| (*s).to_owned()).collect(),
                log_path: format!("{name}.log"),
                linux: Some(api::LinuxContainerConfig::default()),
                ..Default::default()
            }),
            sandbox_config: Some(sandbox.clone()),
        })
        .await
        .map_err(|s| cri.call_error("CreateContainer", s))?
        .into_inner()
        .container_id;
    guard.containers.push(id.clone());
    rt.start_container(api::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .map_err(|s| cri.call_error("StartContainer", s))?;
    Ok(id)
}

async fn container_status(cri: &CriClient, id: &str) -> api::ContainerStatus {
    cri.runtime()
        .container_status(api::ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        })
        .await
        .map_err(|s| cri.call_error("ContainerStatus", s))
        .unwrap()
        .into_inner()
        .status
        .expect("ContainerStatus without status")
}

async fn wait_exited(cri: &CriClient, id: &str, within: Duration) -> api::ContainerStatus {
    let deadline = Instant::now() + within;
    loop {
        let st = container_status(cri, id).await;
        if st.state == api::ContainerState::ContainerExited as i32 {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} did not exit within {within:?}; last status: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One parsed CRI log line: `<RFC3339Nano ts> <stdout|stderr> <P|F> <msg>`.
#[derive(Debug, PartialEq)]
struct LogLine {
    stream: String,
    tag: String,
    msg: String,
}

fn parse_cri_log(text: &str) -> Vec<LogLine> {
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let (ts, stream, tag, msg) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            assert!(
                ts.len() >= 20 && ts.as_bytes()[0].is_ascii_digit() && ts.contains('T'),
                "bad CRI log timestamp in {line:?}"
            );
            assert!(
                matches!(stream, "stdout" | "stderr") && matches!(tag, "P" | "F"),
                "bad CRI log line {line:?}"
            );
            LogLine {
                stream: stream.to_owned(),
                tag: tag.to_owned(),
                msg: msg.to_owned(),
            }
        })
        .collect()
}

/// The runtime copies container output to the log asynchronously, so the
/// file may lag the exit status by a moment.
async fn read_log_until(path: &Path, want: usize, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= want || Instant::now() >= deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn exec_sync(cri: &CriClient, id: &str, cmd: &[&str]) -> api::ExecSyncResponse {
    cri.runtime()
        .exec_sync(api::ExecSyncRequest {
            container_id: id.to_owned(),
            cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
            timeout: 10,
        })
        .await
        .map_err(|s| cri.call_error("ExecSync", s))
        .unwrap()
        .into_inner()
}

async fn with_timeout<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {TEST_TIMEOUT:?}"));
}

#[tokio::test]
async fn busybox_container_runs_through_cri() {
    let env = testenv();
    with_timeout(async {
        let cri = connect(&env).await;
        let v = cri.version().await.unwrap();
        assert_eq!(v.runtime_api_version, "v1", "{v:?}");

        // Declared before the guard so it is dropped after it: containerd
        // must stop writing logs before the directory goes away.
        let logs = tempfile::tempdir().unwrap();
        let mut guard = Cleanup::new(&env.endpoint);

        let sandbox = sandbox_config(&unique("ke-cri-host"), logs.path(), true);
        let sandbox_id = run_sandbox(&cri, &mut guard, &sandbox).await.unwrap();

        let hello = start_container(
            &cri,
            &mut guard,
            &sandbox_id,
            &sandbox,
            &env.busybox,
            "hello",
            &["sh", "-c", "echo hello-from-cri; echo to-stderr >&2"],
        )
        .await
        .unwrap();

        let st = wait_exited(&cri, &hello, Duration::from_secs(20)).await;
        assert_eq!(st.exit_code, 0, "{st:?}");
        assert_eq!(
            PathBuf::from(&st.log_path),
            logs.path().join("hello.log"),
            "{st:?}"
        );

        let text = read_log_until(&logs.path().join("hello.log"), 2, Duration::from_secs(5)).await;
        let lines = parse_cri_log(&text);
        let expect = |stream: &str, msg: &str| LogLine {
            stream: stream.to_owned(),
            tag: "F".to_owned(),
            msg: msg.to_owned(),
        };
        assert!(
            lines.contains(&expect("stdout", "hello-from-cri")),
            "no '<ts> stdout F hello-from-cri' in log:\n{text}"
        );
        assert!(
            lines.contains(&expect("stderr", "to-stderr")),
            "no '<ts> stderr F to-stderr' in log:\n{text}"
        );

        // ExecSync needs a running container: a second one that just sleeps.
        let sleeper = start_container(
            &cri,
            &mut guard,
            &sandbox_id,
            &sandbox,
            &env.busybox,
            "sleeper",
            &["sleep", "3600"],
        )
        .await
        .unwrap();
        let out = exec_sync(&cri, &sleeper, &["sh", "-c", "echo exec-ok; exit 3"]).await;
        assert_eq!(String::from_utf8_lossy(&out.stdout), "exec-ok\n", "{out:?}");
        assert_eq!(out.exit_code, 3, "{out:?}");

        drop(guard);
        drop(logs);
    })
    .await;
}

#[tokio::test]
async fn pod_network_sandbox_gets_ip_from_cni_subnet() {
    let env = testenv();
    with_timeout(async {
        let cri = connect(&env).await;
        let logs = tempfile::tempdir().unwrap();
        let mut guard = Cleanup::new(&env.endpoint);

        let sandbox = sandbox_config(&unique("ke-cri-pod"), logs.path(), false);
        let sandbox_id = run_sandbox(&cri, &mut guard, &sandbox).await.unwrap();

        let status = cri
            .runtime()
            .pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: sandbox_id.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .expect("PodSandboxStatus without status");
        let ip = status
            .network
            .as_ref()
            .map(|n| n.ip.clone())
            .unwrap_or_default();
        let addr: Ipv4Addr = ip
            .parse()
            .unwrap_or_else(|_| panic!("sandbox has no IPv4 address: {status:?}"));
        // scripts/testenv's CNI conflist allocates from 10.244.77.0/24.
        assert_eq!(
            addr.octets()[..3],
            [10, 244, 77],
            "ip {addr} not in 10.244.77.0/24"
        );

        // The address must really be on the pod's eth0, not just reported.
        let c = start_container(
            &cri,
            &mut guard,
            &sandbox_id,
            &sandbox,
            &env.busybox,
            "net",
            &["sleep", "3600"],
        )
        .await
        .unwrap();
        let out = exec_sync(&cri, &c, &["ip", "-4", "addr", "show", "eth0"]).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.exit_code, 0, "{out:?}");
        assert!(stdout.contains(&format!("inet {addr}/24")), "{stdout}");

        drop(guard);
        drop(logs);
    })
    .await;
}
