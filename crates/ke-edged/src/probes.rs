//! Liveness, readiness and startup probes: one worker task per probe of each running
//! container, as kubelet's prober runs them, each publishing its latest verdict.
//!
//! Verdicts are keyed by container ID, so a restarted container starts from scratch, and a
//! change wakes edged (`changed`) so readiness reaches the pod status without waiting for the
//! next periodic sync.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::model::{Container, IntOrString, Probe};
use crate::runtime::Runtime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Liveness,
    Readiness,
    Startup,
}

/// The probe's current verdict; before the first one, kubelet's defaults apply (see
/// [`Probes::verdict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure,
}

type Verdicts = Arc<Mutex<HashMap<(String, Kind), Verdict>>>;

pub(crate) struct Probes {
    workers: HashMap<(String, Kind), tokio::task::JoinHandle<()>>,
    verdicts: Verdicts,
    changed: Arc<Notify>,
}

/// Where a container's probes connect: its pod's IP (the node's for host-network pods).
pub struct Target {
    pub runtime: Runtime,
    pub container_id: String,
    pub ip: String,
    /// Seconds the container has already run, taken off `initialDelaySeconds`.
    pub running_for: Duration,
}

impl Probes {
    pub fn new() -> Probes {
        Probes {
            workers: HashMap::new(),
            verdicts: Arc::default(),
            changed: Arc::new(Notify::new()),
        }
    }

    /// Starts the workers of every probe `container` defines, unless they run already.
    pub fn ensure(&mut self, container: &Container, target: &Target) {
        let probes = [
            (Kind::Startup, &container.startup_probe),
            (Kind::Liveness, &container.liveness_probe),
            (Kind::Readiness, &container.readiness_probe),
        ];
        for (kind, probe) in probes {
            let Some(probe) = probe else { continue };
            let key = (target.container_id.clone(), kind);
            if self.workers.contains_key(&key) {
                continue;
            }
            let worker = Worker {
                kind,
                probe: probe.clone(),
                ports: container
                    .ports
                    .iter()
                    .map(|p| (p.name.clone(), p.container_port))
                    .collect(),
                gated_by_startup: kind != Kind::Startup && container.startup_probe.is_some(),
                runtime: target.runtime.clone(),
                container_id: target.container_id.clone(),
                ip: target.ip.clone(),
                running_for: target.running_for,
                verdicts: Arc::clone(&self.verdicts),
                changed: Arc::clone(&self.changed),
            };
            self.workers.insert(key, tokio::spawn(worker.run()));
        }
    }

    /// Stops the workers (and forgets the verdicts) of containers not in `running`.
    pub fn retain(&mut self, running: &HashSet<String>) {
        self.workers.retain(|(id, _), worker| {
            let keep = running.contains(id);
            if !keep {
                worker.abort();
            }
            keep
        });
        lock(&self.verdicts).retain(|(id, _), _| running.contains(id));
    }

    /// The verdict of a defined probe, with kubelet's defaults before the first one: not
    /// ready, not started, alive.
    pub fn verdict(&self, container_id: &str, kind: Kind) -> Verdict {
        let known = lock(&self.verdicts)
            .get(&(container_id.to_owned(), kind))
            .copied();
        known.unwrap_or(match kind {
            Kind::Liveness => Verdict::Success,
            Kind::Readiness | Kind::Startup => Verdict::Failure,
        })
    }

    /// Whether the container failed its liveness probe, or its startup probe gave up on it:
    /// either way kubelet restarts it.
    pub fn unhealthy(&self, container_id: &str) -> bool {
        let verdicts = lock(&self.verdicts);
        [Kind::Liveness, Kind::Startup]
            .iter()
            .any(|kind| verdicts.get(&(container_id.to_owned(), *kind)) == Some(&Verdict::Failure))
    }

    /// Resolves when some verdict changed.
    pub fn changed(&self) -> impl Future<Output = ()> + 'static {
        let changed = Arc::clone(&self.changed);
        async move { changed.notified().await }
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        for worker in self.workers.values() {
            worker.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Worker {
    kind: Kind,
    probe: Probe,
    ports: HashMap<String, i32>,
    gated_by_startup: bool,
    runtime: Runtime,
    container_id: String,
    ip: String,
    running_for: Duration,
    verdicts: Verdicts,
    changed: Arc<Notify>,
}

impl Worker {
    async fn run(self) {
        let probe = &self.probe;
        let delay = Duration::from_secs(probe.initial_delay_seconds.into());
        tokio::time::sleep(delay.saturating_sub(self.running_for)).await;
        let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1).into());
        let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1).into());
        let success_threshold = probe.success_threshold.unwrap_or(1).max(1);
        let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut successes, mut failures) = (0, 0);
        loop {
            ticks.tick().await;
            if self.gated_by_startup && !self.started() {
                continue;
            }
            let outcome = tokio::time::timeout(timeout, self.attempt())
                .await
                .unwrap_or_else(|_| Err(format!("timed out after {timeout:?}")));
            if let Err(reason) = &outcome {
                tracing::debug!(container = %self.container_id, kind = ?self.kind, reason, "probe failed");
            }
            if outcome.is_ok() {
                successes += 1;
                failures = 0;
            } else {
                failures += 1;
                successes = 0;
            }
            if successes >= success_threshold {
                self.publish(Verdict::Success);
                if self.kind == Kind::Startup {
                    // A started container is never probed for startup again.
                    return;
                }
            } else if failures >= failure_threshold {
                self.publish(Verdict::Failure);
            }
        }
    }

    fn started(&self) -> bool {
        lock(&self.verdicts).get(&(self.container_id.clone(), Kind::Startup))
            == Some(&Verdict::Success)
    }

    fn publish(&self, verdict: Verdict) {
        let key = (self.container_id.clone(), self.kind);
        let before = lock(&self.verdicts).insert(key, verdict);
        if before != Some(verdict) {
            tracing::info!(container = %self.container_id, kind = ?self.kind, ?verdict, "probe verdict changed");
            self.changed.notify_one();
        }
    }

    async fn attempt(&self) -> Result<(), String> {
        let probe = &self.probe;
        if let Some(exec) = &probe.exec {
            let timeout = probe.timeout_seconds.unwrap_or(1).max(1);
            let code = self
                .runtime
                .exec_sync(&self.container_id, exec.command.clone(), timeout.into())
                .await
                .map_err(|e| e.to_string())?;
            return (code == 0)
                .then_some(())
                .ok_or(format!("command exited with {code}"));
        }
        if let Some(http) = &probe.http_get {
            let port = self.port(&http.port)?;
            let host = if http.host.is_empty() {
                &self.ip
            } else {
                &http.host
            };
            let path = if http.path.is_empty() {
                "/"
            } else {
                &http.path
            };
            let headers: Vec<(&str, &str)> = http
                .http_headers
                .iter()
                .map(|h| (h.name.as_str(), h.value.as_str()))
                .collect();
            let tls = http.scheme.eq_ignore_ascii_case("HTTPS");
            let status = http_get(host, port, path, &headers, tls).await?;
            return (200..400)
                .contains(&status)
                .then_some(())
                .ok_or(format!("HTTP probe failed with statuscode: {status}"));
        }
        if let Some(tcp) = &probe.tcp_socket {
            let port = self.port(&tcp.port)?;
            let host = if tcp.host.is_empty() {
                &self.ip
            } else {
                &tcp.host
            };
            tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| format!("dial tcp {host}:{port}: {e}"))?;
            return Ok(());
        }
        Err("probe has no handler (exec, httpGet or tcpSocket)".into())
    }

    fn port(&self, port: &IntOrString) -> Result<u16, String> {
        let number = match port {
            IntOrString::Int(n) => *n,
            IntOrString::String(name) => match name.parse() {
                Ok(n) => n,
                Err(_) => *self
                    .ports
                    .get(name)
                    .ok_or_else(|| format!("no container port named {name:?}"))?,
            },
        };
        u16::try_from(number)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid port {number}"))
    }
}

/// The status code of `GET path` on `host:port` (over TLS, unverified, with `tls`) — all a
/// probe needs, so no HTTP client.
async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    tls: bool,
) -> Result<u16, String> {
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("dial tcp {host}:{port}: {e}"))?;
    if !tls {
        return status_of(tcp, host, port, path, headers).await;
    }
    let config = ke_pki::tls::client_config_for_probes().map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host}: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {host}:{port}: {e}"))?;
    status_of(stream, host, port, path, headers).await
}

async fn status_of<S>(
    mut stream: S,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<u16, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    // The status line is in the first bytes; the rest of the answer is not needed.
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < head.len() && !head[..read].contains(&b'\n') {
        match stream.read(&mut head[read..]).await {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(e.to_string()),
        }
    }
    let line = String::from_utf8_lossy(&head[..read]);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {line:?}"))
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    async fn server(answer: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn http_status_codes_are_read() {
        let ok = server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(http_get("127.0.0.1", ok, "/", &[], false).await, Ok(200));
        let broken = server("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        assert_eq!(
            http_get("127.0.0.1", broken, "/healthz", &[("X-A", "b")], false).await,
            Ok(503)
        );
        let garbage = server("hello").await;
        assert!(
            http_get("127.0.0.1", garbage, "/", &[], false)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn https_probes_accept_a_self_signed_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(ke_pki::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(socket).await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = tls.read(&mut buf).await;
            tls.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
            tls.shutdown().await.ok();
        });
        assert_eq!(http_get("127.0.0.1", port, "/", &[], true).await, Ok(204));
    }
}
