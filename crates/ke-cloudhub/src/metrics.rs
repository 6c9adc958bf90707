//! Counters for the Prometheus endpoint. Plain atomics: updated on hot paths, read rarely.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds (seconds) of the ACK-latency histogram buckets.
const ACK_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0];

/// Appends more metrics in the text format, e.g. from modules that share cloudhub's endpoint.
pub type Exporter = Box<dyn Fn(&mut String) + Send + Sync>;

#[derive(Default)]
pub struct Metrics {
    connected: AtomicU64,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    keepalive_timeouts: AtomicU64,
    upstream_unroutable: AtomicU64,
    ack_buckets: [AtomicU64; ACK_BUCKETS.len()],
    ack_count: AtomicU64,
    ack_sum_micros: AtomicU64,
    queue_depth: Mutex<HashMap<String, usize>>,
    exporters: Mutex<Vec<Exporter>>,
}

impl Metrics {
    pub(crate) fn set_connected(&self, nodes: usize) {
        self.connected.store(nodes as u64, Ordering::Relaxed);
    }
    pub(crate) fn message_in(&self) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn message_out(&self) {
        self.messages_out.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn keepalive_timeout(&self) {
        self.keepalive_timeouts.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn upstream_unroutable(&self) {
        self.upstream_unroutable.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn observe_ack(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        for (bucket, bound) in self.ack_buckets.iter().zip(ACK_BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.ack_count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.ack_sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
    pub(crate) fn set_queue_depth(&self, node: &str, depth: usize) {
        let mut depths = self.queue_depth.lock().expect("metrics lock poisoned");
        match depths.get_mut(node) {
            Some(current) => *current = depth,
            None if depth > 0 => {
                depths.insert(node.to_owned(), depth);
            }
            None => {}
        }
    }

    /// Serves `exporter`'s metrics on the same endpoint.
    pub fn add_exporter(&self, exporter: Exporter) {
        self.exporters
            .lock()
            .expect("metrics lock poisoned")
            .push(exporter);
    }

    pub fn connected_nodes(&self) -> u64 {
        self.connected.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut out,
            "cloudhub_connected_nodes",
            "Edge nodes with an open session.",
            "gauge",
            load(&self.connected),
        );
        counter(
            &mut out,
            "cloudhub_messages_received_total",
            "Messages read from edges.",
            "counter",
            load(&self.messages_in),
        );
        counter(
            &mut out,
            "cloudhub_messages_sent_total",
            "Messages written to edges, retransmissions included.",
            "counter",
            load(&self.messages_out),
        );
        counter(
            &mut out,
            "cloudhub_keepalive_timeouts_total",
            "Sessions closed for silence.",
            "counter",
            load(&self.keepalive_timeouts),
        );
        counter(
            &mut out,
            "cloudhub_upstream_unroutable_total",
            "Edge messages no cloud module took.",
            "counter",
            load(&self.upstream_unroutable),
        );
        let depth: usize = self
            .queue_depth
            .lock()
            .expect("metrics lock poisoned")
            .values()
            .sum();
        counter(
            &mut out,
            "cloudhub_queue_depth",
            "ACK messages pending or in flight, all nodes.",
            "gauge",
            depth as u64,
        );
        let _ = writeln!(
            out,
            "# HELP cloudhub_ack_latency_seconds First write to ACK.\n# TYPE cloudhub_ack_latency_seconds histogram"
        );
        for (bucket, bound) in self.ack_buckets.iter().zip(ACK_BUCKETS) {
            let _ = writeln!(
                out,
                "cloudhub_ack_latency_seconds_bucket{{le=\"{bound}\"}} {}",
                load(bucket)
            );
        }
        let count = load(&self.ack_count);
        let _ = writeln!(
            out,
            "cloudhub_ack_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "cloudhub_ack_latency_seconds_sum {}",
            load(&self.ack_sum_micros) as f64 / 1e6
        );
        let _ = writeln!(out, "cloudhub_ack_latency_seconds_count {count}");
        for exporter in self.exporters.lock().expect("metrics lock poisoned").iter() {
            exporter(&mut out);
        }
        out
    }
}

/// Serves `GET /metrics` in plain HTTP on the monitor address (loopback by default).
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    while let Some((tcp, _)) = crate::accept::next_connection(&listener, &shutdown, "metrics").await
    {
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
                let body = if request.uri().path() == "/metrics" {
                    metrics.render()
                } else {
                    String::from("see /metrics\n")
                };
                async move {
                    Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from(body),
                    )))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let metrics = Metrics::default();
        metrics.set_connected(3);
        metrics.message_in();
        metrics.observe_ack(Duration::from_millis(2));
        metrics.observe_ack(Duration::from_millis(200));
        metrics.set_queue_depth("a", 4);
        metrics.set_queue_depth("b", 1);
        let text = metrics.render();
        assert!(text.contains("cloudhub_connected_nodes 3\n"));
        assert!(text.contains("cloudhub_messages_received_total 1\n"));
        assert!(text.contains("cloudhub_queue_depth 5\n"));
        assert!(text.contains("cloudhub_ack_latency_seconds_bucket{le=\"0.0025\"} 1\n"));
        assert!(text.contains("cloudhub_ack_latency_seconds_bucket{le=\"0.5\"} 2\n"));
        assert!(text.contains("cloudhub_ack_latency_seconds_count 2\n"));
    }
}
