//! Asking the edge's metaserver (plain HTTP on loopback, the node's own cache) about the node
//! and its pods — what `join` waits for and `debug` reports.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::Value;

/// `GET path` on the metaserver at `server`; the object when it answers 200.
pub fn get(server: &str, path: &str) -> Option<Value> {
    let mut stream = std::net::TcpStream::connect(server).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    // HTTP/1.0: the answer is delimited by the connection closing, never chunked.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {server}\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.lines().next()?.split_whitespace().nth(1)?;
    if status != "200" {
        return None;
    }
    serde_json::from_str(body).ok()
}

pub fn node_ready(server: &str, node: &str) -> bool {
    get(server, &format!("/api/v1/nodes/{node}")).is_some_and(|node| {
        node["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    })
}
