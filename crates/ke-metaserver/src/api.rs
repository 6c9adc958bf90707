//! The Kubernetes-style HTTP API: discovery, GET, LIST and WATCH of the cached kinds, with
//! label/field selectors and resourceVersion semantics. Read-only: writes get a clear error.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Method, Request, Response, StatusCode, header};
use ke_message::kinds::Kind;
use ke_metamanager::Reader;
use ke_selectors::{FieldSelector, LabelSelector};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::history::{Event, History, Live};

pub type Body = BoxBody<Bytes, Infallible>;

/// How often a watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

pub struct Api {
    pub reader: Mutex<Reader>,
    pub history: Arc<History>,
    pub address: String,
    /// For writes, which go to the cloud through edgehub.
    pub bus: ke_bus::Bus,
    pub node: String,
}

/// Kinds the metaserver serves, with kubectl's short names.
const SERVED: &[(Kind, &str)] = &[
    (Kind::POD, "po"),
    (Kind::CONFIGMAP, "cm"),
    (Kind::SECRET, ""),
    (Kind::SERVICE, "svc"),
    (Kind::ENDPOINTS, "ep"),
    (Kind::NODE, "no"),
    (Kind::LEASE, ""),
];

fn served(group: &str, version: &str) -> impl Iterator<Item = &'static (Kind, &'static str)> {
    let (group, version) = (group.to_owned(), version.to_owned());
    SERVED
        .iter()
        .filter(move |(k, _)| k.group == group && k.version == version)
}

/// A request that fails, answered as a `metav1.Status`.
pub(crate) struct Failure {
    code: StatusCode,
    reason: &'static str,
    message: String,
}

impl Failure {
    pub(crate) fn new(
        code: StatusCode,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Failure {
        Failure {
            code,
            reason,
            message: message.into(),
        }
    }

    pub(crate) fn response(&self) -> Response<Body> {
        status(self.code, self.reason, &self.message)
    }
}

/// What a path names.
pub(crate) enum Target {
    Document(Value),
    Collection {
        kind: Kind,
        namespace: Option<String>,
    },
    Object {
        kind: Kind,
        namespace: Option<String>,
        name: String,
        /// `status` in `…/pods/web/status`.
        subresource: Option<String>,
    },
}

impl Api {
    pub async fn serve(self: Arc<Self>, request: Request<hyper::body::Incoming>) -> Response<Body> {
        let path = request.uri().path().to_owned();
        let query = parse_query(request.uri().query().unwrap_or(""));
        let target = match self.target(&path) {
            Ok(target) => target,
            Err(failure) => return failure.response(),
        };
        if request.method() != Method::GET {
            // Writes belong to the cloud: forwarded when it is connected, refused otherwise.
            let write =
                match crate::write::Write::of(request.method(), &target, &query, request.headers())
                {
                    Ok(write) => write,
                    Err(failure) => return failure.response(),
                };
            let body = match crate::write::read_body(request.into_body()).await {
                Ok(body) => body,
                Err(failure) => return failure.response(),
            };
            return write.send(&self.bus, &self.node, body).await;
        }
        match target {
            Target::Document(document) => json_response(StatusCode::OK, &document),
            Target::Object {
                subresource: Some(sub),
                ..
            } => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("subresource {sub:?} is not served from the edge cache"),
            ),
            Target::Object {
                kind,
                namespace,
                name,
                subresource: None,
            } => {
                self.get(kind, namespace.as_deref().unwrap_or(""), &name)
                    .await
            }
            Target::Collection { kind, namespace } => {
                let selector = match Selector::parse(&query) {
                    Ok(selector) => selector,
                    Err(err) => {
                        return status(StatusCode::BAD_REQUEST, "BadRequest", &err.to_string());
                    }
                };
                let scope = Scope {
                    kind,
                    namespace,
                    selector,
                };
                if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
                    self.watch(scope, &query)
                } else {
                    self.list(&scope).await
                }
            }
        }
    }

    fn target(&self, path: &str) -> Result<Target, Failure> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let not_found = || {
            Failure::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("the server could not find the requested resource {path}"),
            )
        };
        let (group, version, rest) = match segments.as_slice() {
            ["version"] => return Ok(Target::Document(version_info())),
            ["healthz" | "readyz" | "livez"] => return Ok(Target::Document(json!("ok"))),
            ["api"] => return Ok(Target::Document(self.api_versions())),
            ["apis"] => return Ok(Target::Document(api_groups())),
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return Err(not_found()),
        };
        let kind_of = |plural: &str| {
            served(group, version)
                .find(|(k, _)| k.plural == plural)
                .map(|(k, _)| *k)
                .ok_or_else(not_found)
        };
        // The `namespaces/…` forms come first: `namespaces` is not a served plural.
        Ok(match rest {
            [] if served(group, version).next().is_some() => {
                Target::Document(resource_list(group, version))
            }
            [plural] => Target::Collection {
                kind: kind_of(plural)?,
                namespace: None,
            },
            ["namespaces", namespace, plural] if kind_of(plural)?.namespaced => {
                Target::Collection {
                    kind: kind_of(plural)?,
                    namespace: Some((*namespace).to_owned()),
                }
            }
            ["namespaces", namespace, plural, name, sub @ ..]
                if sub.len() <= 1 && kind_of(plural)?.namespaced =>
            {
                Target::Object {
                    kind: kind_of(plural)?,
                    namespace: Some((*namespace).to_owned()),
                    name: (*name).to_owned(),
                    subresource: sub.first().map(|s| (*s).to_owned()),
                }
            }
            [plural, name, sub @ ..] if sub.len() <= 1 && !kind_of(plural)?.namespaced => {
                Target::Object {
                    kind: kind_of(plural)?,
                    namespace: None,
                    name: (*name).to_owned(),
                    subresource: sub.first().map(|s| (*s).to_owned()),
                }
            }
            _ => return Err(not_found()),
        })
    }

    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&Reader) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, Failure> {
        let api = Arc::clone(self);
        let result = tokio::task::spawn_blocking(move || {
            let reader = api.reader.lock().unwrap_or_else(PoisonError::into_inner);
            read(&reader)
        })
        .await;
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!("reading the edge database: {err}"),
            )),
            Err(err) => Err(Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                err.to_string(),
            )),
        }
    }

    async fn get(self: &Arc<Self>, kind: Kind, namespace: &str, name: &str) -> Response<Body> {
        let (ns, nm) = (namespace.to_owned(), name.to_owned());
        match self.read(move |r| r.get(kind, &ns, &nm)).await {
            Ok(Some(cached)) => raw_json_response(StatusCode::OK, cached.value),
            Ok(None) => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("{} \"{name}\" not found", kind.plural),
            ),
            Err(failure) => failure.response(),
        }
    }

    async fn list(self: &Arc<Self>, scope: &Scope) -> Response<Body> {
        // The feed's revision is read first: a watch from it may repeat an event the list
        // already shows, but never misses one.
        let revision = self.history.revision();
        let (kind, namespace) = (scope.kind, scope.namespace.clone());
        let items = match self.read(move |r| r.list(kind, namespace.as_deref())).await {
            Ok(items) => items,
            Err(failure) => return failure.response(),
        };
        let mut body = format!(
            "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{{\"resourceVersion\":\"{revision}\"}},\"items\":[",
            kind.kind,
            kind.api_version()
        );
        let mut first = true;
        for item in items {
            if !scope.selector.is_everything() {
                let Ok(object) = serde_json::from_str::<Value>(&item.value) else {
                    continue;
                };
                if !scope.selector.matches(&object) {
                    continue;
                }
            }
            if !first {
                body.push(',');
            }
            first = false;
            body.push_str(&item.value);
        }
        body.push_str("]}");
        raw_json_response(StatusCode::OK, body)
    }

    fn watch(self: &Arc<Self>, scope: Scope, query: &HashMap<String, String>) -> Response<Body> {
        let from = query
            .get("resourceVersion")
            .map(String::as_str)
            .unwrap_or("");
        let bookmarks = query
            .get("allowWatchBookmarks")
            .is_some_and(|v| v == "true");
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_secs);
        let (lines, body) = mpsc::channel::<Bytes>(64);
        let start = match from {
            "" | "0" => {
                let (revision, live) = self.history.subscribe();
                Start::Initial { revision, live }
            }
            from => match from.parse::<u64>() {
                Ok(from) => match self.history.watch(scope.kind, from) {
                    Ok((backlog, live)) => Start::Resume { backlog, live },
                    Err(gone) => Start::Gone(gone.oldest),
                },
                Err(_) => {
                    return status(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        &format!("invalid resourceVersion {from:?}"),
                    );
                }
            },
        };
        let api = Arc::clone(self);
        tokio::spawn(async move {
            let stream = WatchStream {
                api,
                scope,
                lines,
                bookmarks,
            };
            let run = stream.run(start);
            match timeout {
                Some(timeout) => {
                    let _ = tokio::time::timeout(timeout, run).await;
                }
                None => run.await,
            }
        });
        let stream = futures_util::stream::unfold(body, |mut body| async move {
            let line = body.recv().await?;
            Some((Ok::<_, Infallible>(Frame::data(line)), body))
        });
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(StreamBody::new(stream).boxed())
            .expect("static response parts")
    }

    fn api_versions(&self) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.address}],
        })
    }
}

/// A list's or watch's `labelSelector` and `fieldSelector`. The edge has no per-kind field
/// index, so any field path is accepted.
struct Selector {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Selector {
    fn parse(query: &HashMap<String, String>) -> Result<Selector, ke_selectors::SelectorError> {
        let text = |name: &str| query.get(name).map_or("", String::as_str);
        Ok(Selector {
            labels: LabelSelector::parse(text("labelSelector"))?,
            fields: FieldSelector::parse(text("fieldSelector"), |_| true)?,
        })
    }

    fn is_everything(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }
}

struct Scope {
    kind: Kind,
    namespace: Option<String>,
    selector: Selector,
}

impl Scope {
    fn matches(&self, event: &Event) -> bool {
        event.kind == self.kind
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| event.namespace == ns)
            && (self.selector.is_everything()
                || serde_json::from_str::<Value>(&event.object)
                    .is_ok_and(|object| self.selector.matches(&object)))
    }
}

enum Start {
    Initial {
        revision: u64,
        live: broadcast::Receiver<Live>,
    },
    Resume {
        backlog: Vec<Arc<Event>>,
        live: broadcast::Receiver<Live>,
    },
    Gone(u64),
}

struct WatchStream {
    api: Arc<Api>,
    scope: Scope,
    lines: mpsc::Sender<Bytes>,
    bookmarks: bool,
}

impl WatchStream {
    async fn run(self, start: Start) {
        let (mut revision, mut live) = match start {
            Start::Gone(oldest) => {
                let expired = status_value(
                    410,
                    "Expired",
                    &format!("too old resource version; the oldest available is {oldest}"),
                );
                self.send(&json!({"type": "ERROR", "object": expired}))
                    .await;
                return;
            }
            Start::Initial { revision, live } => {
                let (kind, namespace) = (self.scope.kind, self.scope.namespace.clone());
                let Ok(items) = self
                    .api
                    .read(move |r| r.list(kind, namespace.as_deref()))
                    .await
                else {
                    return;
                };
                for item in items {
                    let Ok(object) = serde_json::from_str::<Value>(&item.value) else {
                        continue;
                    };
                    if self.scope.selector.matches(&object)
                        && !self.send(&json!({"type": "ADDED", "object": object})).await
                    {
                        return;
                    }
                }
                (revision, live)
            }
            Start::Resume { backlog, live } => {
                let mut revision = 0;
                for event in backlog {
                    revision = event.revision;
                    if self.scope.matches(&event) && !self.send_event(&event).await {
                        return;
                    }
                }
                (revision, live)
            }
        };
        // The first bookmark right after the backlog (the API server marks the end of the
        // initial events the same way), then one every BOOKMARK_EVERY.
        let mut bookmark = tokio::time::interval(BOOKMARK_EVERY);
        let mut first_bookmark = true;
        loop {
            tokio::select! {
                received = live.recv() => match received {
                    Ok(Live::Event(event)) => {
                        if event.revision <= revision && event.kind == self.scope.kind {
                            continue;
                        }
                        revision = revision.max(event.revision);
                        if self.scope.matches(&event) && !self.send_event(&event).await {
                            return;
                        }
                    }
                    // Ending the watch makes the client relist, which is what it must do.
                    Ok(Live::Reset) | Err(_) => return,
                },
                _ = bookmark.tick(), if self.bookmarks => {
                    if !self.send_bookmark(first_bookmark).await {
                        return;
                    }
                    first_bookmark = false;
                }
                () = self.lines.closed() => return,
            }
        }
    }

    async fn send_bookmark(&self, initial_events_end: bool) -> bool {
        let kind = self.scope.kind;
        let mut object = json!({
            "kind": kind.kind,
            "apiVersion": kind.api_version(),
            "metadata": {"resourceVersion": self.api.history.revision().to_string()},
        });
        if initial_events_end {
            object["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        self.send(&json!({"type": "BOOKMARK", "object": object}))
            .await
    }

    /// The stored JSON is spliced in, not re-encoded.
    async fn send_event(&self, event: &Event) -> bool {
        let line = format!(
            "{{\"type\":\"{}\",\"object\":{}}}\n",
            event.type_name(),
            event.object
        );
        self.lines.send(Bytes::from(line)).await.is_ok()
    }

    /// False once the client has gone.
    async fn send(&self, line: &Value) -> bool {
        let mut bytes = serde_json::to_vec(line).unwrap_or_default();
        bytes.push(b'\n');
        self.lines.send(Bytes::from(bytes)).await.is_ok()
    }
}

fn resource_list(group: &str, version: &str) -> Value {
    let resources: Vec<Value> = served(group, version)
        .map(|(kind, short)| {
            let mut resource = json!({
                "name": kind.plural,
                "singularName": kind.kind.to_lowercase(),
                "namespaced": kind.namespaced,
                "kind": kind.kind,
                "verbs": ["get", "list", "watch"],
            });
            if !short.is_empty() {
                resource["shortNames"] = json!([short]);
            }
            resource
        })
        .collect();
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })
}

fn api_groups() -> Value {
    let mut groups: Vec<(&str, &str)> = SERVED
        .iter()
        .filter(|(k, _)| !k.group.is_empty())
        .map(|(k, _)| (k.group, k.version))
        .collect();
    groups.dedup();
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(group, version)| {
            let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
            json!({"name": group, "versions": [gv], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": format!("v1.32.10-kubeedge-rs-{}", env!("CARGO_PKG_VERSION")),
        "platform": format!("linux/{}", std::env::consts::ARCH),
    })
}

fn status_value(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

pub fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(code, &status_value(code.as_u16(), reason, message))
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    raw_json_response(code, value.to_string())
}

pub(crate) fn raw_json_response(code: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("static response parts")
}

/// `a=1&b=x%3Dy` → {a: 1, b: x=y}.
fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_decoded() {
        let query = parse_query("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=true&x");
        assert_eq!(query["labelSelector"], "app=web,tier in (a)");
        assert_eq!(query["watch"], "true");
        assert_eq!(query["x"], "");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
