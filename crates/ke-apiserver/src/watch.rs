//! `?watch=true`: newline-delimited `{"type":…,"object":…}` events, from a resourceVersion (or
//! from the current state, sent as ADDED events), until `timeoutSeconds`, the client leaving, or
//! the store ending the change feed (the client then re-watches from its last resourceVersion).

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::handlers::{Selectors, decode_as};
use crate::registry::{Resource, ResourceInfo};
use crate::server::ApiServer;
use crate::status::ApiError;
use crate::storage::{
    EventKind, ListOptions, Revision, Storage, StorageError, StoredObject, WatchEvent,
};
use crate::table;

/// Events buffered between the producer task and the HTTP body; when full, the producer waits
/// (and so does the store's feed to it), which is how a slow client slows only its own watch.
const BUFFER: usize = 64;

pub(crate) async fn serve<S: Storage>(
    server: &ApiServer<S>,
    res: Resource,
    ns: Option<&str>,
    q: &HashMap<String, String>,
    table: Option<table::Include>,
) -> Result<Response, ApiError> {
    let sel = Selectors::parse(&res, q)?;
    let max = server.config.max_watch_timeout;
    let timeout = match q.get("timeoutSeconds").map(String::as_str) {
        None | Some("") => max,
        Some(t) => Duration::from_secs(
            t.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        )
        .min(max),
    };
    let bookmarks = q.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let send_initial = q.get("sendInitialEvents").map(String::as_str) == Some("true");
    let from: Option<Revision> = match q.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let prefix = res.prefix(ns);

    let mut initial = Vec::new();
    let start = if from.is_none() || send_initial {
        let page = server
            .storage
            .list(&prefix, ListOptions::default())
            .await
            .map_err(|e| ApiError::from_storage(&res, "", e))?;
        for stored in &page.items {
            let obj = decode_as(&res, stored)?;
            if sel.matches(&obj) {
                initial.push((stored.key.clone(), obj));
            }
        }
        page.revision
    } else {
        from.unwrap_or_default()
    };

    let (tx, rx) = mpsc::channel::<Bytes>(BUFFER);
    match server.storage.watch(&prefix, start).await {
        Ok(feed) => {
            let w = Watcher {
                res,
                sel,
                table,
                tx,
                last_rv: start,
                matched: HashSet::new(),
            };
            let interval = server.config.bookmark_interval;
            tokio::spawn(w.run(feed, initial, send_initial, bookmarks, interval, timeout));
        }
        // As kube-apiserver: the watch is accepted, then ends with an ERROR event carrying 410.
        Err(e @ StorageError::Compacted { .. }) => {
            let status = ApiError::from_storage(&res, "", e).to_status();
            let _ = tx.try_send(line("ERROR", &status));
        }
        Err(e) => return Err(ApiError::from_storage(&res, "", e)),
    }
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut resp = (StatusCode::OK, Body::from_stream(stream)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

#[derive(Clone, Copy)]
enum EventType {
    Added = 0,
    Modified = 1,
    Deleted = 2,
}

impl EventType {
    fn name(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// What every watcher of one live change shares (through the event's memo): the object decoded
/// once, and each kind of event line encoded once. With a thousand watches on pods, a change
/// costs one decode and one encode instead of a thousand of each.
struct SharedEvent {
    /// The version the object was decoded as; watchers of another version of a CRD decode
    /// their own.
    api_version: String,
    object: Option<Value>,
    frames: [OnceLock<Bytes>; 3],
}

impl SharedEvent {
    fn new(res: &ResourceInfo, stored: &StoredObject) -> SharedEvent {
        SharedEvent {
            api_version: res.api_version(),
            object: decode_as(res, stored).ok(),
            frames: Default::default(),
        }
    }
}

struct Watcher {
    res: Resource,
    sel: Selectors,
    /// Events carry one-row Tables (what `kubectl get -w` asks for) instead of objects.
    table: Option<table::Include>,
    tx: mpsc::Sender<Bytes>,
    /// The revision every event up to which has been considered: what a BOOKMARK may promise.
    last_rv: Revision,
    /// Keys the client currently sees as matching the selectors, so an object that stops
    /// matching is reported DELETED (the store's events do not carry the previous value).
    matched: HashSet<String>,
}

impl Watcher {
    async fn run(
        mut self,
        mut feed: mpsc::Receiver<WatchEvent>,
        initial: Vec<(String, Value)>,
        send_initial: bool,
        bookmarks: bool,
        bookmark_interval: Duration,
        timeout: Duration,
    ) {
        for (key, obj) in initial {
            self.matched.insert(key);
            if !self.send("ADDED", &obj).await {
                return;
            }
        }
        if send_initial && !self.bookmark(true).await {
            return;
        }
        let deadline = tokio::time::sleep_until(Instant::now() + timeout);
        tokio::pin!(deadline);
        let mut tick =
            tokio::time::interval_at(Instant::now() + bookmark_interval, bookmark_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = self.tx.closed() => return,
                _ = tick.tick(), if bookmarks => {
                    if !self.bookmark(false).await {
                        return;
                    }
                }
                ev = feed.recv() => {
                    let Some(ev) = ev else { return };
                    if !self.on_event(ev).await {
                        return;
                    }
                }
            }
        }
    }

    async fn on_event(&mut self, ev: WatchEvent) -> bool {
        self.last_rv = ev.revision;
        let api_version = self.res.api_version();
        let shared = ev
            .memo
            .get_or_init(|| SharedEvent::new(&self.res, &ev.object))
            .filter(|s| s.api_version == api_version);
        let local;
        let obj = match shared {
            Some(s) => &s.object,
            None => {
                local = decode_as(&self.res, &ev.object).ok();
                &local
            }
        };
        let Some(obj) = obj else {
            return true;
        };
        let key = ev.object.key;
        let matches = self.sel.matches(obj);
        let filtered = !self.sel.is_empty();
        let kind = match ev.kind {
            EventKind::Added if matches => {
                self.matched.insert(key);
                EventType::Added
            }
            EventKind::Added => return true,
            EventKind::Modified if matches => {
                self.matched.insert(key);
                EventType::Modified
            }
            // Stopped matching: to this client the object is gone.
            EventKind::Modified if filtered && self.matched.remove(&key) => EventType::Deleted,
            EventKind::Modified => return true,
            EventKind::Deleted => {
                let seen = self.matched.remove(&key);
                if !(matches || seen) {
                    return true;
                }
                EventType::Deleted
            }
        };
        let frame = match (self.table, shared) {
            (None, Some(s)) => s.frames[kind as usize]
                .get_or_init(|| line(kind.name(), obj))
                .clone(),
            _ => self.frame(kind.name(), obj),
        };
        self.tx.send(frame).await.is_ok()
    }

    async fn bookmark(&mut self, initial_events_end: bool) -> bool {
        let mut meta = json!({ "resourceVersion": self.last_rv.to_string() });
        if initial_events_end {
            meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        let obj = json!({
            "kind": self.res.kind,
            "apiVersion": self.res.api_version(),
            "metadata": meta,
        });
        self.send("BOOKMARK", &obj).await
    }

    async fn send(&mut self, kind: &str, obj: &Value) -> bool {
        let frame = self.frame(kind, obj);
        self.tx.send(frame).await.is_ok()
    }

    /// One event line for this watcher: a one-row Table if it asked for tables.
    fn frame(&self, kind: &str, obj: &Value) -> Bytes {
        match self.table {
            Some(include) if kind != "BOOKMARK" => {
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or_default();
                let t = table::render(
                    &self.res,
                    std::slice::from_ref(obj),
                    json!({ "resourceVersion": rv }),
                    include,
                );
                line(kind, &t)
            }
            _ => line(kind, obj),
        }
    }
}
