//! The watch feed: metamanager's stored changes, numbered in one increasing sequence, with a
//! window of recent events so a client can resume from a resourceVersion — or learn (410) that
//! it must relist.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use ke_message::kinds::Kind;
use ke_metamanager::{Change, ChangeType};
use serde_json::Value;
use tokio::sync::broadcast;

/// Events kept for resuming watches.
const WINDOW: usize = 4096;

#[derive(Debug)]
pub struct Event {
    pub kind: Kind,
    pub change: ChangeType,
    pub namespace: String,
    /// The object's JSON.
    pub object: Arc<str>,
    /// Position in the feed; never decreases. Cloud resourceVersions mostly increase in arrival
    /// order, but a delete carries its object's old version and a resend can be older than what
    /// came before it: those take the current revision instead.
    pub revision: u64,
}

impl Event {
    pub fn type_name(&self) -> &'static str {
        match self.change {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// What a live watcher receives.
#[derive(Debug, Clone)]
pub enum Live {
    Event(Arc<Event>),
    /// Events were lost (metamanager outran the feed): every watch must end, and its client
    /// relist.
    Reset,
}

pub struct History {
    inner: Mutex<Inner>,
    live: broadcast::Sender<Live>,
}

struct Inner {
    events: VecDeque<Arc<Event>>,
    /// The newest revision in the feed (or in the store when the feed started).
    revision: u64,
    /// Events up to this revision may be missing from the window: resuming from before it is
    /// 410 Gone.
    floor: u64,
}

/// Why a watch cannot resume.
#[derive(Debug, PartialEq, Eq)]
pub struct Gone {
    pub oldest: u64,
}

impl History {
    /// Starts the feed at the store's current revision, fed by `changes`.
    pub fn start(revision: u64, mut changes: broadcast::Receiver<Change>) -> Arc<History> {
        let (live, _) = broadcast::channel(1024);
        let history = Arc::new(History {
            inner: Mutex::new(Inner {
                events: VecDeque::with_capacity(WINDOW),
                revision,
                floor: revision,
            }),
            live,
        });
        let feed = Arc::clone(&history);
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(change) => feed.push(change),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            missed,
                            "metaserver watch feed fell behind; watchers relist"
                        );
                        feed.reset();
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        history
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, change: Change) {
        let mut inner = self.lock();
        let revision = change.revision.max(inner.revision);
        inner.revision = revision;
        let mut object = change.object;
        if change.change == ChangeType::Deleted
            && let Ok(mut deleted) = serde_json::from_str::<Value>(&object)
        {
            // As the API server does: a deletion is at the revision that deleted it.
            deleted["metadata"]["resourceVersion"] = Value::String(revision.to_string());
            object = Arc::from(deleted.to_string());
        }
        let event = Arc::new(Event {
            kind: change.kind,
            change: change.change,
            namespace: change.namespace,
            object,
            revision,
        });
        if inner.events.len() == WINDOW
            && let Some(dropped) = inner.events.pop_front()
        {
            inner.floor = inner.floor.max(dropped.revision);
        }
        inner.events.push_back(Arc::clone(&event));
        // Sent under the lock: a watcher that subscribes under it sees each event exactly once,
        // either in its backlog or live.
        let _ = self.live.send(Live::Event(event));
    }

    fn reset(&self) {
        let mut inner = self.lock();
        inner.events.clear();
        inner.floor = inner.revision;
        let _ = self.live.send(Live::Reset);
    }

    /// The feed's current revision.
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// Events of `kind` after `from`, and the live feed from there on.
    pub fn watch(
        &self,
        kind: Kind,
        from: u64,
    ) -> Result<(Vec<Arc<Event>>, broadcast::Receiver<Live>), Gone> {
        let inner = self.lock();
        if from < inner.floor {
            return Err(Gone {
                oldest: inner.floor,
            });
        }
        let backlog = inner
            .events
            .iter()
            .filter(|e| e.revision > from && e.kind == kind)
            .cloned()
            .collect();
        Ok((backlog, self.live.subscribe()))
    }

    /// The live feed from now on, with the revision it starts after.
    pub fn subscribe(&self) -> (u64, broadcast::Receiver<Live>) {
        let inner = self.lock();
        (inner.revision, self.live.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn change(name: &str, rv: u64, change: ChangeType) -> Change {
        Change {
            kind: Kind::POD,
            change,
            namespace: "default".into(),
            object: json!({"metadata": {"name": name, "resourceVersion": rv.to_string()}})
                .to_string()
                .into(),
            revision: rv,
        }
    }

    #[tokio::test]
    async fn resumes_from_a_revision_or_says_gone() {
        let (tx, rx) = broadcast::channel(16);
        let history = History::start(10, rx);
        tx.send(change("a", 11, ChangeType::Added)).unwrap();
        tx.send(change("b", 12, ChangeType::Added)).unwrap();
        // A delete with the object's old version still moves the feed forward.
        tx.send(change("a", 11, ChangeType::Deleted)).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(history.revision(), 12);

        let (backlog, _) = history.watch(Kind::POD, 11).unwrap();
        let seen: Vec<_> = backlog
            .iter()
            .map(|e| (e.type_name(), e.revision))
            .collect();
        assert_eq!(seen, [("ADDED", 12), ("DELETED", 12)]);
        let deleted: Value = serde_json::from_str(&backlog[1].object).unwrap();
        assert_eq!(deleted["metadata"]["resourceVersion"], "12");
        assert!(history.watch(Kind::CONFIGMAP, 10).unwrap().0.is_empty());
        assert_eq!(history.watch(Kind::POD, 9).err(), Some(Gone { oldest: 10 }));
    }
}
