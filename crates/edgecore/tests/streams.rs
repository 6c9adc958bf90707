//! `kubectl logs`, `exec`, `attach` and `port-forward` to a pod on an edge node, with the real
//! kubectl against cloudcore's embedded control plane, through cloudstream's tunnel and the real
//! containerd — and what the user sees while the edge is away and once it is back.
//!
//! Needs the test environment (`eval "$(scripts/testenv up)"`) and fails without it.

mod support;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{Cloud, WAIT, eventually, start_edge, testenv};

const NODE: &str = "edge-s";

fn manifest(image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: talker, namespace: default}}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {image}
    imagePullPolicy: IfNotPresent
    stdin: true
    command: [sh, -c, 'i=0; while [ ! -f /tmp/stop ]; do echo "line $i"; i=$((i+1)); sleep 0.2; done; echo stopping; exit 1']
  - name: web
    image: {image}
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'mkdir -p /www && echo hello-from-the-edge > /www/index.html && exec httpd -f -p 8080 -h /www']
"#
    )
}

fn kubeconfig(cloud: &Cloud) -> String {
    cloud
        .dir
        .join("var/lib/kubeedge/controlplane/admin.kubeconfig")
        .display()
        .to_string()
}

fn kubectl_command(cloud: &Cloud, args: &[&str]) -> Command {
    let mut command = Command::new("/usr/bin/kubectl");
    command
        .args(["--kubeconfig", &kubeconfig(cloud)])
        .args(args);
    command
}

/// kubectl with `input` on its stdin, to completion.
fn kubectl_with_input(cloud: &Cloud, args: &[&str], input: &str) -> Output {
    let mut child = kubectl_command(cloud, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    wait_output(child, WAIT)
}

fn wait_output(mut child: Child, deadline: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {deadline:?}; stdout {:?} stderr {:?}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A long-running kubectl whose stdout lines arrive on a channel.
struct Streaming {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Streaming {
    fn start(cloud: &Cloud, args: &[&str]) -> Streaming {
        let mut child = kubectl_command(cloud, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Streaming { child, lines }
    }

    fn next_line(&self, what: &str) -> String {
        self.lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kubectl exec talker -c app -- sh -c <script>`.
fn sh_in_app(cloud: &Cloud, script: &str) -> Output {
    cloud.kubectl(&["exec", "talker", "-c", "app", "--", "sh", "-c", script])
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn line_number(line: &str) -> u64 {
    line.trim()
        .strip_prefix("line ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a counter line: {line:?}"))
}

fn ready(cloud: &Cloud) -> Option<()> {
    let pod = cloud.get(&["pod", "talker"])?;
    let statuses = pod["status"]["containerStatuses"].as_array()?;
    (statuses.len() == 2 && statuses.iter().all(|s| s["ready"] == true)).then_some(())
}

fn http_get(port: &str) -> String {
    let mut stream = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// A stand-in for a cluster CA and the kubelet client certificate kube-apiserver presents
/// (`--kubelet-client-certificate`), made with openssl: the CA goes where cloudstream looks for
/// the stream CA; the client certificate and key paths are returned.
fn apiserver_client_cert(dir: &Path) -> (String, String) {
    let ca_dir = dir.join("etc/kubeedge/ca");
    std::fs::create_dir_all(&ca_dir).unwrap();
    let work = dir.join("apiserver-pki");
    std::fs::create_dir_all(&work).unwrap();
    let path = |name: &str| work.join(name).display().to_string();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            text(&out.stderr)
        );
    };
    let (ca_key, ca_crt) = (path("ca.key"), path("ca.crt"));
    let (client_key, client_csr) = (path("client.key"), path("client.csr"));
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut args = vec!["req", "-x509"];
    args.extend_from_slice(&ec);
    args.extend_from_slice(&["-keyout", &ca_key, "-out", &ca_crt]);
    args.extend_from_slice(&["-subj", "/CN=cluster-ca", "-days", "1"]);
    openssl(&args);
    let mut args = vec!["req"];
    args.extend_from_slice(&ec);
    args.extend_from_slice(&["-keyout", &client_key, "-out", &client_csr]);
    args.extend_from_slice(&["-subj", "/CN=kube-apiserver-kubelet-client"]);
    openssl(&args);
    std::fs::write(work.join("ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &path("client.csr"),
        "-CA",
        &path("ca.crt"),
        "-CAkey",
        &path("ca.key"),
        "-CAcreateserial",
        "-extfile",
        &path("ext"),
        "-days",
        "1",
        "-out",
        &path("client.crt"),
    ]);
    std::fs::copy(work.join("ca.crt"), ca_dir.join("streamCA.crt")).unwrap();
    (path("client.crt"), path("client.key"))
}

/// curl as kube-apiserver reaching a kubelet through the stream server: directly (`via` =
/// None, `Host` naming the node) or through `CONNECT` (`via` = the stream server as proxy).
fn curl_kubelet(
    cloud: &Cloud,
    client: &(String, String),
    via_proxy: bool,
    url_path: &str,
) -> Output {
    let ca = cloud
        .dir
        .join("etc/kubeedge/ca/rootCA.crt")
        .display()
        .to_string();
    let stream = format!("127.0.0.1:{}", cloud.stream_port());
    let mut args: Vec<String> = [
        "-sS",
        "--max-time",
        "10",
        "--cert",
        &client.0,
        "--key",
        &client.1,
    ]
    .map(str::to_owned)
    .to_vec();
    if via_proxy {
        args.extend(
            [
                "--proxy",
                &format!("https://{stream}"),
                "--proxy-cacert",
                &ca,
                "--proxy-cert",
                &client.0,
                "--proxy-key",
                &client.1,
                // The kubelet's certificate is not checked, as kube-apiserver without
                // --kubelet-certificate-authority.
                "-k",
                &format!("https://{NODE}:10250{url_path}"),
            ]
            .map(str::to_owned),
        );
    } else {
        args.extend(
            [
                "--cacert",
                &ca,
                "-H",
                &format!("Host: {NODE}:10250"),
                &format!("https://{stream}{url_path}"),
            ]
            .map(str::to_owned),
        );
    }
    Command::new("curl").args(&args).output().unwrap()
}

#[test]
fn kubectl_logs_exec_attach_and_port_forward_reach_an_edge_pod() {
    let image = testenv("KE_BUSYBOX_IMAGE");
    let dir = tempfile::tempdir().unwrap();
    let apiserver = apiserver_client_cert(dir.path());
    let cloud = Cloud::start(dir.path());
    let edge_dir = dir.path().join("edge");
    let config = cloud.runtime_edge_config(&edge_dir, NODE, &[]);
    let mut edge = cloud.start_registered_edge(&config, NODE);
    let manifest_path = dir.path().join("talker.yaml");
    std::fs::write(&manifest_path, manifest(&image)).unwrap();
    let out = cloud.kubectl(&["apply", "-f", manifest_path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    eventually("the pod Running and Ready", Duration::from_secs(60), || {
        ready(&cloud)
    });

    // logs: plain, --tail, -f.

    let logs = eventually("log lines", WAIT, || {
        let out = cloud.kubectl(&["logs", "talker", "-c", "app"]);
        let logs = text(&out.stdout);
        (out.status.success() && logs.lines().count() >= 3).then_some(logs)
    });
    assert!(logs.starts_with("line 0\nline 1\n"), "{logs}");
    let out = cloud.kubectl(&["logs", "talker", "-c", "app", "--tail=2"]);
    let tail = text(&out.stdout);
    assert_eq!(tail.lines().count(), 2, "{tail}");
    assert!(tail.lines().all(|l| l.starts_with("line ")), "{tail}");
    // 15 lines are 3 s of log: the last line's second is not the first one (for --since-time).
    eventually("15 log lines", WAIT, || {
        let out = cloud.kubectl(&["logs", "talker", "-c", "app"]);
        (text(&out.stdout).lines().count() >= 15).then_some(())
    });
    let out = cloud.kubectl(&["logs", "talker", "-c", "app", "--timestamps", "--tail=1"]);
    let stamped = text(&out.stdout);
    assert!(
        stamped.starts_with("20") && stamped.contains("Z line "),
        "{stamped}"
    );
    // --since-time: from the stamped line's second on (kubectl sends whole seconds), nothing
    // earlier.
    let (stamp, stamped_line) = stamped.trim_end().split_once(' ').unwrap();
    let since_time = format!("--since-time={stamp}");
    let out = cloud.kubectl(&["logs", "talker", "-c", "app", &since_time]);
    let since = text(&out.stdout);
    let first = line_number(since.lines().next().unwrap_or_default());
    let stamped_number = line_number(stamped_line);
    assert!(
        first <= stamped_number && first + 5 >= stamped_number && first > 0,
        "{stamped}: {since}"
    );
    let out = cloud.kubectl(&["logs", "talker", "-c", "app", "--since=1h"]);
    assert!(
        text(&out.stdout).starts_with("line 0\n"),
        "{}",
        text(&out.stdout)
    );
    let out = cloud.kubectl(&[
        "logs",
        "talker",
        "-c",
        "app",
        "--since-time=2999-01-01T00:00:00Z",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "", "nothing was written after that time");
    let follow = Streaming::start(&cloud, &["logs", "-f", "--tail=1", "talker", "-c", "app"]);
    let first = line_number(&follow.next_line("followed log line"));
    let later = line_number(&follow.next_line("a new log line"));
    let latest = line_number(&follow.next_line("another new log line"));
    assert!(first < later && later < latest, "{first} {later} {latest}");
    drop(follow);
    let out = cloud.kubectl(&["logs", "talker", "-c", "nope"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("container nope is not valid for pod talker"),
        "{}",
        text(&out.stderr)
    );

    // --previous before there is one: the node says so.
    let out = cloud.kubectl(&["logs", "talker", "-c", "app", "--previous"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("previous terminated container \"app\""),
        "{}",
        text(&out.stderr)
    );

    // exec: output, stderr and the exit code.
    let out = sh_in_app(&cloud, "echo to-stdout; echo to-stderr >&2; exit 3");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "to-stdout\n");
    assert!(
        text(&out.stderr).contains("to-stderr"),
        "{}",
        text(&out.stderr)
    );
    let out = kubectl_with_input(
        &cloud,
        &["exec", "-i", "talker", "-c", "app", "--", "cat"],
        "through stdin\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "through stdin\n");
    // Much more than the tunnel buffers, intact, and the command ends.
    let out = cloud.kubectl(&[
        "exec",
        "talker",
        "-c",
        "app",
        "--",
        "head",
        "-c",
        "20000000",
        "/dev/zero",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), 20_000_000);
    assert!(out.stdout.iter().all(|&b| b == 0));

    // exec -it, through a pty (script(1) gives kubectl a terminal). kubectl sends the window
    // size when it starts and again on SIGWINCH: the background `stty` resizes the terminal
    // once the test creates `resize` (or gives up after 30 s).
    let resize = dir.path().join("resize");
    let kubectl_it = format!(
        "stty cols 123 rows 45; \
         (for _ in $(seq 300); do [ -e '{resize}' ] && break; sleep 0.1; done; \
          stty cols 90 rows 30 < /dev/tty) & \
         exec /usr/bin/kubectl --kubeconfig {kubeconfig} exec -it talker -c app -- sh",
        resize = resize.display(),
        kubeconfig = kubeconfig(&cloud)
    );
    let mut script = Command::new("script")
        .args(["-q", "-e", "-c", &kubectl_it, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = script.stdin.take().unwrap();
    let mut stdout = script.stdout.take().unwrap();
    let (screen_tx, screen_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || screen_tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let mut screen = String::new();
    let read_until = |needle: &str, screen: &mut String| {
        let deadline = Instant::now() + WAIT;
        while !screen.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match screen_rx.recv_timeout(left) {
                Ok(bytes) => screen.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => panic!("no {needle:?} on the terminal: {screen:?}"),
            }
        }
    };
    read_until("# ", &mut screen); // the shell's prompt
    stdin.write_all(b"tty; echo size=$(stty size)\n").unwrap();
    read_until("size=45 123", &mut screen);
    std::fs::write(&resize, "").unwrap();
    // The resize travels on its own stream: ask until the shell sees it.
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        stdin.write_all(b"echo resized=$(stty size)\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        while let Ok(bytes) = screen_rx.try_recv() {
            screen.push_str(&String::from_utf8_lossy(&bytes));
        }
        if screen.contains("resized=30 90") {
            break;
        }
    }
    assert!(screen.contains("resized=30 90"), "{screen}");
    stdin.write_all(b"echo answer=$((6*7))\n").unwrap();
    read_until("answer=42", &mut screen);
    stdin.write_all(b"exit 5\n").unwrap();
    let status = wait_output(script, WAIT).status;
    drop(stdin);
    assert!(screen.contains("/dev/pts/"), "a terminal inside: {screen}");
    assert_eq!(status.code(), Some(5), "{screen}");

    // attach: the container's own output.
    let attach = Streaming::start(&cloud, &["attach", "talker", "-c", "app"]);
    let attached = line_number(&attach.next_line("attached output"));
    assert!(line_number(&attach.next_line("more attached output")) > attached);
    drop(attach);

    // port-forward to the web server in the pod.
    let forward = Streaming::start(&cloud, &["port-forward", "pod/talker", ":8080"]);
    let announced = forward.next_line("the forwarded port");
    let port = announced
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{announced:?}"))
        .to_owned();
    let page = http_get(&port);
    assert!(page.contains("hello-from-the-edge"), "{page}");
    drop(forward);

    // A kube-apiserver elsewhere reaches the same kubelet API through the stream server.
    let logs_path = "/containerLogs/default/talker/app?tailLines=2";
    for via_proxy in [false, true] {
        let out = curl_kubelet(&cloud, &apiserver, via_proxy, logs_path);
        let logs = text(&out.stdout);
        assert!(out.status.success(), "{via_proxy}: {}", text(&out.stderr));
        assert_eq!(logs.lines().count(), 2, "{via_proxy}: {logs}");
        assert!(logs.lines().all(|l| l.starts_with("line ")), "{logs}");
    }
    let out = curl_kubelet(
        &cloud,
        &apiserver,
        false,
        "/containerLogs/default/talker/app?previous=true",
    );
    assert!(
        text(&out.stdout).contains("previous terminated container"),
        "{}",
        text(&out.stdout)
    );
    // It is no open proxy: a CONNECT to what is not a node is refused.
    let ca = cloud
        .dir
        .join("etc/kubeedge/ca/rootCA.crt")
        .display()
        .to_string();
    let out = Command::new("curl")
        .args(["-sS", "-p", "--max-time", "10", "--proxy"])
        .arg(format!("https://127.0.0.1:{}", cloud.stream_port()))
        .args(["--proxy-cacert", &ca, "--proxy-cert", &apiserver.0])
        .args(["--proxy-key", &apiserver.1, "http://192.0.2.1:80/"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("403"), "{}", text(&out.stderr));
    // An edge node's certificate cannot open streams there.
    let edge_certs = (
        edge_dir
            .join("etc/kubeedge/certs/server.crt")
            .display()
            .to_string(),
        edge_dir
            .join("etc/kubeedge/certs/server.key")
            .display()
            .to_string(),
    );
    let out = curl_kubelet(&cloud, &edge_certs, false, logs_path);
    assert!(
        text(&out.stdout).contains("nodes may not open streams"),
        "{}",
        text(&out.stdout)
    );
    assert!(!text(&out.stdout).contains("line "));

    // --previous: the container exits and is restarted.
    let out = cloud.kubectl(&["exec", "talker", "-c", "app", "--", "touch", "/tmp/stop"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let previous = eventually(
        "the previous container's log",
        Duration::from_secs(60),
        || {
            let out = cloud.kubectl(&["logs", "talker", "-c", "app", "--previous"]);
            out.status.success().then(|| text(&out.stdout))
        },
    );
    assert!(previous.ends_with("stopping\n"), "{previous}");
    let current = eventually("the restarted container's log", WAIT, || {
        let out = cloud.kubectl(&["logs", "talker", "-c", "app"]);
        let logs = text(&out.stdout);
        (out.status.success() && logs.starts_with("line 0")).then_some(logs)
    });
    assert!(!current.contains("stopping"), "{current}");

    // The edge goes away: the commands fail at once and say why.
    let status = edge.stop_with(Signal::SIGTERM, WAIT);
    assert!(status.success());
    for args in [
        &["logs", "talker", "-c", "app"][..],
        &["exec", "talker", "-c", "app", "--", "true"][..],
    ] {
        let started = Instant::now();
        let out = cloud.kubectl(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{args:?} took {:?}",
            started.elapsed()
        );
        // "is not connected", or "tunnel … closed" if cloudcore had not yet seen it go.
        assert!(
            text(&out.stderr).contains(&format!("node \"{NODE}\"")),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // And back: they work again.
    let mut edge = start_edge(&config);
    let out = eventually("logs after the edge returned", WAIT, || {
        let out = cloud.kubectl(&["exec", "talker", "-c", "app", "--", "echo", "back"]);
        out.status.success().then_some(out)
    });
    assert_eq!(text(&out.stdout), "back\n");
    let metrics = cloud.metrics();
    assert!(metrics.contains("cloudcore_stream_tunnels 1"), "{metrics}");

    // A second cloudcore holds the node's tunnel: a CONNECT reaching the first is forwarded.
    let replica_dir = dir.path().join("replica");
    std::fs::create_dir_all(replica_dir.join("etc/kubeedge/ca")).unwrap();
    std::fs::copy(
        dir.path().join("etc/kubeedge/ca/streamCA.crt"),
        replica_dir.join("etc/kubeedge/ca/streamCA.crt"),
    )
    .unwrap();
    let replica = Cloud::start_replica(&replica_dir, &cloud);
    assert!(edge.stop_with(Signal::SIGTERM, WAIT).success());
    let moved = std::fs::read_to_string(&config).unwrap().replace(
        &format!(
            "127.0.0.1:{}\n",
            cloud.tunnel_server().rsplit(':').next().unwrap()
        ),
        &format!("{}\n", replica.tunnel_server()),
    );
    assert_ne!(moved, std::fs::read_to_string(&config).unwrap());
    std::fs::write(&config, moved).unwrap();
    let mut moved_edge = start_edge(&config);
    let logs = eventually("logs through the replica", WAIT, || {
        let out = curl_kubelet(&cloud, &apiserver, true, logs_path);
        let logs = text(&out.stdout);
        (logs.lines().count() == 2 && logs.lines().all(|l| l.starts_with("line "))).then_some(logs)
    });
    assert!(logs.starts_with("line "), "{logs}");
    // kubectl through the first cloudcore's API server: forwarded to the holder too.
    let out = eventually("kubectl logs through the replica", WAIT, || {
        let out = cloud.kubectl(&["logs", "talker", "-c", "app", "--tail=2"]);
        out.status.success().then_some(out)
    });
    assert_eq!(
        text(&out.stdout).lines().count(),
        2,
        "{}",
        text(&out.stdout)
    );
    let out = sh_in_app(&cloud, "echo via-replica; exit 4");
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "via-replica\n");
    let node = cloud.get(&["node", NODE]).unwrap();
    assert_eq!(
        node["metadata"]["annotations"]["cloudstream.kubeedge.io/server"],
        format!("127.0.0.1:{}", replica.stream_port())
    );
    assert!(node["metadata"]["annotations"]["cloudstream.kubeedge.io/connected-at"].is_string());
    // Its tunnel ends: the holder withdraws its claim.
    assert!(moved_edge.stop_with(Signal::SIGTERM, WAIT).success());
    eventually("the holder annotation withdrawn", WAIT, || {
        let node = cloud.get(&["node", NODE])?;
        let annotations = &node["metadata"]["annotations"];
        (annotations["cloudstream.kubeedge.io/server"].is_null()
            && annotations["cloudstream.kubeedge.io/connected-at"].is_null())
        .then_some(())
    });
}

/// An edge's certificate opens a tunnel only for its own node.
#[test]
fn a_node_cannot_open_the_tunnel_of_another_node() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(dir.path());
    let edge_dir = dir.path().join("edge");
    let config = cloud.edge_config(&edge_dir, "edge-a", &[]);
    let edge = cloud.start_registered_edge(&config, "edge-a");
    let certs = |name: &str| {
        edge_dir
            .join("etc/kubeedge")
            .join(name)
            .display()
            .to_string()
    };
    let tunnel = std::fs::read_to_string(&config)
        .unwrap()
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("edgeStream:"))
        .find_map(|l| l.trim_start().strip_prefix("server: ").map(str::to_owned))
        .expect("edgeStream.server");
    let upgrade = |node: &str| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "2",
                "--cacert",
                &certs("ca/rootCA.crt"),
                "--cert",
                &certs("certs/server.crt"),
                "--key",
                &certs("certs/server.key"),
                "-H",
                "Connection: Upgrade",
                "-H",
                "Upgrade: websocket",
                "-H",
                "Sec-WebSocket-Version: 13",
                "-H",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "-H",
                &format!("SessionHostNameOverride: {node}"),
                &format!("https://{tunnel}/v1/kubeedge/connect"),
            ])
            .output()
            .unwrap();
        (text(&out.stdout), text(&out.stderr))
    };
    assert_eq!(upgrade("edge-b").0, "403", "{:?}", upgrade("edge-b"));
    // The node's own name is let in (curl then waits on the open WebSocket until --max-time).
    assert_eq!(upgrade("edge-a").0, "101");
    drop(edge);
}
