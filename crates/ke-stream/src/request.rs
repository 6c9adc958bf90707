//! What a `*_CONNECT` message asks of the edge: the kubelet-style HTTP request to serve, as
//! upstream's cloudstream encodes it (`BaseEdgedConnection`: `{"messID", "method", "header",
//! "url"}` with Go's `url.URL` as an object of its field names and `http.Header` as a map of
//! lists), and the kubelet paths inside it.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// The host upstream's cloud puts in every URL (edged's server on the edge).
pub const EDGED_HOST: &str = "127.0.0.1:10350";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectRequest {
    pub mess_id: u64,
    /// Empty for logs (upstream leaves it unset), GET or POST for upgrades.
    pub method: String,
    pub header: BTreeMap<String, Vec<String>>,
    /// Path, e.g. `/containerLogs/default/web/nginx`.
    pub path: String,
    /// The raw (still percent-encoded) query.
    pub raw_query: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("connect request is not a JSON object: {0}")]
    NotJson(String),
    #[error("connect request has no url.Path")]
    NoPath,
    #[error("unknown kubelet path {0:?}")]
    UnknownPath(String),
}

impl ConnectRequest {
    /// The request for session `id` (upstream's edges answer on `messID`).
    pub fn with_mess_id(&self, id: u64) -> ConnectRequest {
        ConnectRequest {
            mess_id: id,
            ..self.clone()
        }
    }

    /// Upstream's JSON, with the URL pointing at edged as upstream's cloud writes it.
    pub fn to_json(&self) -> Vec<u8> {
        let value = json!({
            "messID": self.mess_id,
            "method": self.method,
            "header": self.header,
            "url": {
                "Scheme": "http",
                "Opaque": "",
                "User": null,
                "Host": EDGED_HOST,
                "Path": self.path,
                "RawPath": "",
                "OmitHost": false,
                "ForceQuery": false,
                "RawQuery": self.raw_query,
                "Fragment": "",
                "RawFragment": "",
            },
        });
        serde_json::to_vec(&value).unwrap_or_default()
    }

    /// Decodes with Go's rules: keys match case-insensitively (older upstreams wrote `MessID`),
    /// unknown keys are ignored, a missing or `null` field is its zero value.
    pub fn from_json(bytes: &[u8]) -> Result<ConnectRequest, RequestError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| RequestError::NotJson(e.to_string()))?;
        let Value::Object(object) = value else {
            return Err(RequestError::NotJson("not an object".into()));
        };
        let url = field(&object, "url").and_then(Value::as_object);
        let url_field = |name: &str| {
            url.and_then(|u| field(u, name))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let path = url_field("Path");
        if path.is_empty() {
            return Err(RequestError::NoPath);
        }
        let mut header = BTreeMap::new();
        if let Some(Value::Object(map)) = field(&object, "header") {
            for (name, values) in map {
                let values = values
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                header.insert(name.clone(), values);
            }
        }
        Ok(ConnectRequest {
            mess_id: field(&object, "messID")
                .and_then(Value::as_u64)
                .unwrap_or_default(),
            method: field(&object, "method")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            header,
            path,
            raw_query: url_field("RawQuery"),
        })
    }

    /// The values of a header, its name matched case-insensitively.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.header
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .flat_map(|(_, values)| values.iter().map(String::as_str))
            .collect()
    }

    pub fn kubelet(&self) -> Result<KubeletRequest, RequestError> {
        KubeletRequest::parse(&self.path, &self.raw_query)
    }
}

/// The request headers that go to the node: what the streaming protocols need. Credentials
/// (`Authorization`, cookies, impersonation) never leave the cloud.
const FORWARDED_HEADERS: &[&str] = &[
    "accept",
    "connection",
    "content-type",
    "upgrade",
    "user-agent",
    "x-stream-protocol-version",
];

/// Whether a caller's header is passed on to the node.
pub fn forwarded(name: &str) -> bool {
    FORWARDED_HEADERS
        .iter()
        .any(|allowed| name.eq_ignore_ascii_case(allowed))
}

/// Go's decoder: an exact key first, else the last key that matches ignoring case.
fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .rev()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Logs,
    Exec,
    Attach,
    PortForward,
}

impl StreamKind {
    /// The kubelet path segment.
    pub fn path_segment(self) -> &'static str {
        match self {
            StreamKind::Logs => "containerLogs",
            StreamKind::Exec => "exec",
            StreamKind::Attach => "attach",
            StreamKind::PortForward => "portForward",
        }
    }
}

/// A kubelet streaming request: `/containerLogs/{ns}/{pod}/{container}`,
/// `/{exec,attach}/{ns}/{pod}[/{uid}]/{container}`, `/portForward/{ns}/{pod}[/{uid}]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletRequest {
    pub kind: StreamKind,
    pub namespace: String,
    pub pod: String,
    pub uid: Option<String>,
    /// Empty for port-forward.
    pub container: String,
    /// Decoded query pairs in order (`command` repeats).
    pub query: Vec<(String, String)>,
}

impl KubeletRequest {
    pub fn parse(path: &str, raw_query: &str) -> Result<KubeletRequest, RequestError> {
        let unknown = || RequestError::UnknownPath(path.to_owned());
        let segments: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(percent_decode)
            .collect();
        let (head, rest) = segments.split_first().ok_or_else(unknown)?;
        let kind = match head.as_str() {
            "containerLogs" => StreamKind::Logs,
            "exec" => StreamKind::Exec,
            "attach" => StreamKind::Attach,
            "portForward" => StreamKind::PortForward,
            _ => return Err(unknown()),
        };
        let (namespace, pod, uid, container) = match (kind, rest) {
            (StreamKind::PortForward, [ns, pod]) => (ns, pod, None, ""),
            (StreamKind::PortForward, [ns, pod, uid]) => (ns, pod, Some(uid), ""),
            (StreamKind::Logs, [ns, pod, container]) => (ns, pod, None, container.as_str()),
            (StreamKind::Exec | StreamKind::Attach, [ns, pod, container]) => {
                (ns, pod, None, container.as_str())
            }
            (StreamKind::Exec | StreamKind::Attach, [ns, pod, uid, container]) => {
                (ns, pod, Some(uid), container.as_str())
            }
            _ => return Err(unknown()),
        };
        if namespace.is_empty() || pod.is_empty() {
            return Err(unknown());
        }
        Ok(KubeletRequest {
            kind,
            namespace: namespace.clone(),
            pod: pod.clone(),
            uid: uid.cloned(),
            container: container.to_owned(),
            query: parse_query(raw_query),
        })
    }

    /// The path as the kubelet serves it.
    pub fn path(&self) -> String {
        let mut path = format!(
            "/{}/{}/{}",
            self.kind.path_segment(),
            percent_encode(&self.namespace),
            percent_encode(&self.pod)
        );
        if let Some(uid) = &self.uid {
            path.push('/');
            path.push_str(&percent_encode(uid));
        }
        if !self.container.is_empty() {
            path.push('/');
            path.push_str(&percent_encode(&self.container));
        }
        path
    }

    /// The last value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every value of a query parameter, in order.
    pub fn params(&self, name: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }

    /// A boolean parameter as Go's `strconv.ParseBool` reads it (`1`, `true`…).
    pub fn flag(&self, name: &str) -> bool {
        matches!(
            self.param(name),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True")
        )
    }
}

/// `a=1&b=x%20y` → pairs, decoded (`+` is a space, as Go's `url.ParseQuery`).
pub fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(&key.replace('+', " ")),
                percent_decode(&value.replace('+', " ")),
            )
        })
        .collect()
}

/// Pairs → a query string, each part percent-encoded.
pub fn encode_query<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    pairs
        .into_iter()
        .map(|(key, value)| format!("{}={}", percent_encode(key), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_upstream_and_reads_older_spellings() {
        let request = ConnectRequest {
            mess_id: 7,
            method: String::new(),
            header: BTreeMap::from([("Accept".to_owned(), vec!["*/*".to_owned()])]),
            path: "/containerLogs/ns/pod/ctr".into(),
            raw_query: "follow=true".into(),
        };
        let json = String::from_utf8(request.to_json()).unwrap();
        assert!(json.starts_with(r#"{"messID":7,"method":"","header":{"Accept":["*/*"]},"url":{"Scheme":"http","Opaque":"","User":null,"Host":"127.0.0.1:10350","Path":"/containerLogs/ns/pod/ctr""#), "{json}");
        assert_eq!(ConnectRequest::from_json(json.as_bytes()), Ok(request));
        let old = br#"{"MessID":3,"Method":"POST","Header":{"X-Stream-Protocol-Version":["v4.channel.k8s.io"]},"URL":{"Path":"/exec/ns/p/c","RawQuery":"command=ls"}}"#;
        let decoded = ConnectRequest::from_json(old).unwrap();
        assert_eq!(decoded.mess_id, 3);
        assert_eq!(decoded.method, "POST");
        assert_eq!(
            decoded.header_values("x-stream-protocol-version"),
            ["v4.channel.k8s.io"]
        );
        assert_eq!(
            ConnectRequest::from_json(b"[1]"),
            Err(RequestError::NotJson("not an object".into()))
        );
        assert_eq!(ConnectRequest::from_json(b"{}"), Err(RequestError::NoPath));
    }

    #[test]
    fn kubelet_paths() {
        let exec = KubeletRequest::parse(
            "/exec/default/web/nginx",
            "command=sh&command=-c&command=echo+hi%21&stdin=1&tty=true",
        )
        .unwrap();
        assert_eq!(exec.kind, StreamKind::Exec);
        assert_eq!(exec.container, "nginx");
        assert_eq!(exec.params("command"), ["sh", "-c", "echo hi!"]);
        assert!(exec.flag("stdin") && exec.flag("tty") && !exec.flag("stdout"));
        assert_eq!(exec.path(), "/exec/default/web/nginx");
        let pf = KubeletRequest::parse("/portForward/default/web/uid-1", "").unwrap();
        assert_eq!(
            (pf.kind, pf.uid.as_deref(), pf.container.as_str()),
            (StreamKind::PortForward, Some("uid-1"), "")
        );
        let logs = KubeletRequest::parse("/containerLogs/a/b/c", "tailLines=5").unwrap();
        assert_eq!(logs.param("tailLines"), Some("5"));
        for bad in [
            "/",
            "/stats/summary",
            "/containerLogs/a/b",
            "/exec//p/c",
            "/portForward/a/b/c/d",
        ] {
            assert!(KubeletRequest::parse(bad, "").is_err(), "{bad}");
        }
        assert_eq!(
            encode_query([("command", "echo hi"), ("stdout", "1")]),
            "command=echo%20hi&stdout=1"
        );
    }
}
