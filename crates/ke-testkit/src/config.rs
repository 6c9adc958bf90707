//! Editing the configs the daemons print (`--defaultconfig`), for tests: relocate files and
//! ports into a sandbox, add an API server, set single values.

use std::path::Path;

/// Well-known KubeEdge ports that a default config binds or dials.
const DEFAULT_PORTS: [u16; 13] = [
    10000, 10001, 10002, 10003, 10004, 9091, 10350, 10550, 1883, 1884, 9060, 9443, 6443,
];

/// The same config, but with every file under `dir` and every well-known port replaced by a
/// free one, so a test neither writes to /etc nor collides with a running KubeEdge.
pub fn sandboxed(config: &str, dir: &Path) -> String {
    let root = dir.display();
    let mut text = config
        .replace("/etc/kubeedge/", &format!("{root}/etc/kubeedge/"))
        .replace("/var/lib/kubeedge/", &format!("{root}/var/lib/kubeedge/"))
        .replace("/var/lib/kubelet\n", &format!("{root}/var/lib/kubelet\n"))
        .replace("/var/log/pods\n", &format!("{root}/var/log/pods\n"));
    for port in DEFAULT_PORTS {
        let free = free_port();
        text = text
            .replace(&format!("port: {port}\n"), &format!("port: {free}\n"))
            // `tunnelPort`, `streamPort`.
            .replace(&format!("Port: {port}\n"), &format!("Port: {free}\n"))
            .replace(&format!(":{port}\n"), &format!(":{free}\n"));
    }
    text
}

/// cloudcore's printed configs (upstream's) name no API server; this adds the embedded control
/// plane at its default place, which [`sandboxed`] then relocates like every other path.
pub fn with_embedded_control_plane(config: &str) -> String {
    let embedded = "  embedded:\n    dataDir: /var/lib/kubeedge/controlplane\n    \
                    bindAddress: 127.0.0.1:6443\n";
    if config.contains("kubeAPIConfig:\n") {
        config.replacen(
            "kubeAPIConfig:\n",
            &format!("kubeAPIConfig:\n{embedded}"),
            1,
        )
    } else {
        format!("{config}kubeAPIConfig:\n{embedded}")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

/// Replaces the value at `path` — the first `path[0]:` line, then the first `path[1]:` line
/// after it, and so on — and any block-list items under it. YAML is rendered one key per line,
/// lists as `- item` lines, so this is enough for the rendered default configs.
pub fn set(config: &str, path: &[&str], value: &str) -> String {
    let mut out = Vec::new();
    let mut lines = config.lines().peekable();
    let mut depth = 0;
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if depth == path.len() || !trimmed.starts_with(&format!("{}:", path[depth])) {
            out.push(line.to_owned());
            continue;
        }
        depth += 1;
        if depth < path.len() {
            out.push(line.to_owned());
            continue;
        }
        let indent = &line[..line.len() - trimmed.len()];
        out.push(format!("{indent}{}: {value}", path[depth - 1]));
        while lines
            .peek()
            .is_some_and(|next| next.trim_start().starts_with("- ") && next.starts_with(indent))
        {
            lines.next();
        }
    }
    assert_eq!(depth, path.len(), "{path:?} not found in the config");
    out.join("\n") + "\n"
}

/// The `port:` of the listener block `key` (`websocket`, `https`…).
pub fn port_of(config: &str, key: &str) -> String {
    let line = config
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(&format!("{key}:")))
        .find(|l| l.trim_start().starts_with("port:"))
        .expect("listener has a port");
    line.trim_start()
        .trim_start_matches("port:")
        .trim()
        .to_owned()
}
