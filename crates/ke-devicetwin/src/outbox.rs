//! Twin and state reports for the cloud, kept until the cloud confirms them.
//!
//! Upstream keeps unconfirmed reports in memory only, drops what is produced while the cloud
//! is away, and retries after 60 idle seconds. Here every report is a `twin_outbox` row
//! (written in the same transaction as the twin it reports), so reports survive offline
//! periods and restarts. Per resource (one device's twin, or its state) one report is in
//! flight at a time, so an older one never overtakes a newer one; reports made meanwhile are
//! merged into one waiting report — per twin and per side for twin reports, newest wins for
//! state — so a device reporting every second while the cloud is away costs one row, not
//! thousands.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ke_message::Message;
use serde_json::Value;

use crate::store::Write;
use crate::twin::DELETED;

/// How long a sent report waits for its confirmation before it is sent again.
pub const RETRY_AFTER: Duration = Duration::from_secs(15);
/// Reports sent and not yet confirmed, at most. edgehub sends at most `messageQPS` messages a
/// second; more in flight would only wait in its queue, be resent after [`RETRY_AFTER`] while
/// still queued, and spend the link on duplicates.
pub const MAX_IN_FLIGHT: usize = 32;

struct Entry {
    message: Message,
    sent: Option<Instant>,
}

#[derive(Default)]
pub struct Outbox {
    entries: BTreeMap<i64, Entry>,
    next_seq: i64,
}

impl Outbox {
    pub fn load(rows: Vec<(i64, Message)>) -> Outbox {
        let next_seq = rows.iter().map(|(seq, _)| seq + 1).max().unwrap_or(1);
        Outbox {
            entries: rows
                .into_iter()
                .map(|(seq, message)| {
                    (
                        seq,
                        Entry {
                            message,
                            sent: None,
                        },
                    )
                })
                .collect(),
            next_seq,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Queues `report`; returns the row to write.
    pub fn push(&mut self, report: Message) -> Write {
        let resource = report.router.resource.clone();
        let waiting = self
            .entries
            .iter_mut()
            .rev()
            .find(|(_, e)| e.message.router.resource == resource)
            .filter(|(_, e)| e.sent.is_none());
        if let Some((seq, entry)) = waiting {
            merge(&mut entry.message.content, report.content);
            // A new id: a late confirmation of what was sent under the old one must not
            // clear what was merged into it since.
            entry.message.header.id = report.header.id;
            entry.message.header.timestamp = report.header.timestamp;
            return Write::PutReport {
                seq: *seq,
                message: entry.message.clone(),
            };
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(
            seq,
            Entry {
                message: report.clone(),
                sent: None,
            },
        );
        Write::PutReport {
            seq,
            message: report,
        }
    }

    /// The cloud confirmed the report with message id `id`.
    pub fn confirm(&mut self, id: &str) -> Option<Write> {
        let seq = *self
            .entries
            .iter()
            .find(|(_, e)| e.message.header.id == id)?
            .0;
        self.entries.remove(&seq);
        Some(Write::DeleteReport(seq))
    }

    /// Reports to send now, oldest first: per resource the oldest, when it was never sent or
    /// its confirmation is overdue, while fewer than [`MAX_IN_FLIGHT`] wait for one. They count
    /// as sent from `now`.
    pub fn due(&mut self, now: Instant) -> Vec<Message> {
        let waiting =
            |sent: Option<Instant>| sent.is_some_and(|sent| now.duration_since(sent) < RETRY_AFTER);
        let mut in_flight = self.entries.values().filter(|e| waiting(e.sent)).count();
        if in_flight >= MAX_IN_FLIGHT {
            return Vec::new();
        }
        let mut heads = std::collections::HashSet::new();
        let mut chosen = Vec::new();
        for (seq, entry) in &self.entries {
            if in_flight >= MAX_IN_FLIGHT {
                break;
            }
            if heads.insert(entry.message.router.resource.as_str()) && !waiting(entry.sent) {
                chosen.push(*seq);
                in_flight += 1;
            }
        }
        chosen
            .into_iter()
            .filter_map(|seq| {
                let entry = self.entries.get_mut(&seq)?;
                entry.sent = Some(now);
                Some(entry.message.clone())
            })
            .collect()
    }

    /// `id` could not be handed to the cloud link; send it again at the next chance.
    pub fn unsent(&mut self, id: &str) {
        if let Some(entry) = self
            .entries
            .values_mut()
            .find(|e| e.message.header.id == id)
        {
            entry.sent = None;
        }
    }

    /// The link was lost or restored: whatever was in flight is sent again.
    pub fn resend_all(&mut self) {
        for entry in self.entries.values_mut() {
            entry.sent = None;
        }
    }

    /// Drops the reports of a removed device.
    pub fn forget_device(&mut self, id: &str) -> Vec<Write> {
        let prefix = format!("device/{id}/");
        let seqs: Vec<i64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.message.router.resource.starts_with(&prefix))
            .map(|(seq, _)| *seq)
            .collect();
        seqs.into_iter()
            .map(|seq| {
                self.entries.remove(&seq);
                Write::DeleteReport(seq)
            })
            .collect()
    }
}

/// Folds a newer report into a waiting one. Twin reports (`{"twin": {...}}` objects) merge per
/// twin and, within a twin, per field — a later actual-only report keeps the earlier expected
/// side — except that a deletion, or a twin revived after one, replaces the twin. Anything else
/// (state reports, a JSON string) is replaced by the newer content.
fn merge(older: &mut Value, newer: Value) {
    let (Some(old_twins), Some(new_twins)) = (
        older.get("twin").and_then(Value::as_object).cloned(),
        newer.get("twin").and_then(Value::as_object),
    ) else {
        *older = newer;
        return;
    };
    let deleted = |t: &Value| t.pointer("/metadata/type").and_then(Value::as_str) == Some(DELETED);
    let mut twins = old_twins;
    for (name, twin) in new_twins {
        let old = twins.get_mut(name);
        let mergeable = old
            .as_deref()
            .is_some_and(|old| old.is_object() && !deleted(old))
            && twin.is_object()
            && !deleted(twin);
        match (old, twin) {
            (Some(Value::Object(old)), Value::Object(new)) if mergeable => {
                for (field, value) in new {
                    old.insert(field.clone(), value.clone());
                }
            }
            _ => {
                twins.insert(name.clone(), twin.clone());
            }
        }
    }
    let mut merged = newer;
    merged["twin"] = Value::Object(twins);
    *older = merged;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(resource: &str, content: Value) -> Message {
        Message::new()
            .with_route("twin", "resource", resource, "update")
            .with_content(content)
    }

    const TWIN: &str = "device/default/t/twin/edge_updated";

    #[test]
    fn one_report_in_flight_per_resource_and_the_rest_merged() {
        let mut outbox = Outbox::default();
        let now = Instant::now();
        outbox.push(report(
            TWIN,
            json!({"twin": {"a": {"expected": {"value": "1"}, "actual": {"value": "1"}}}}),
        ));
        let first = outbox.due(now);
        assert_eq!(first.len(), 1);
        // While the first is in flight, two more reports become one waiting report.
        outbox.push(report(
            TWIN,
            json!({"twin": {"a": {"actual": {"value": "2"}}}}),
        ));
        outbox.push(report(
            TWIN,
            json!({"twin": {"a": {"actual": {"value": "3"}}, "b": {"actual": {"value": "9"}}}}),
        ));
        outbox.push(report("device/default/t/state/update", json!("online")));
        assert_eq!(outbox.len(), 3);
        let state = outbox.due(now);
        assert_eq!(state.len(), 1, "only the state report is new");
        assert!(outbox.due(now + Duration::from_secs(1)).is_empty());

        assert!(outbox.confirm(&first[0].header.id).is_some());
        let second = outbox.due(now + Duration::from_secs(1));
        assert_eq!(second.len(), 1);
        assert_eq!(
            second[0].content,
            json!({"twin": {"a": {"actual": {"value": "3"}}, "b": {"actual": {"value": "9"}}}})
        );
        // Unconfirmed: sent again after the retry interval, with the same id.
        let again = outbox.due(now + RETRY_AFTER + Duration::from_secs(1));
        assert!(again.iter().any(|m| m.header.id == second[0].header.id));
        assert!(outbox.confirm("unknown").is_none());
    }

    #[test]
    fn at_most_a_window_of_reports_waits_for_confirmations() {
        let mut outbox = Outbox::default();
        for i in 0..MAX_IN_FLIGHT + 5 {
            outbox.push(report(
                &format!("device/default/d{i}/state/update"),
                json!("online"),
            ));
        }
        let now = Instant::now();
        let first = outbox.due(now);
        assert_eq!(first.len(), MAX_IN_FLIGHT);
        assert!(outbox.due(now).is_empty());
        outbox.confirm(&first[0].header.id);
        assert_eq!(outbox.due(now).len(), 1, "a confirmation frees one place");
    }

    #[test]
    fn merging_keeps_sides_and_replaces_deletions() {
        let mut older = json!({"event_id": "1", "twin": {
            "a": {"expected": {"value": "1"}, "actual": {"value": "1"}},
            "b": {"actual": {"value": "1"}}
        }});
        merge(
            &mut older,
            json!({"event_id": "2", "twin": {
                "a": {"actual": {"value": "2"}},
                "b": {"optional": true, "metadata": {"type": "deleted"}}
            }}),
        );
        assert_eq!(
            older,
            json!({"event_id": "2", "twin": {
                "a": {"expected": {"value": "1"}, "actual": {"value": "2"}},
                "b": {"optional": true, "metadata": {"type": "deleted"}}
            }})
        );
        let mut state = json!("offline");
        merge(&mut state, json!("online"));
        assert_eq!(state, json!("online"));
    }

    #[test]
    fn a_merge_after_a_restart_gets_a_new_id_and_removed_devices_are_forgotten() {
        let sent = report(TWIN, json!({"twin": {}}));
        let mut outbox = Outbox::load(vec![(7, sent.clone())]);
        let Write::PutReport { seq, message } = outbox.push(report(TWIN, json!({"twin": {}})))
        else {
            panic!("a report row");
        };
        assert_eq!(seq, 7);
        assert_ne!(message.header.id, sent.header.id);
        assert!(outbox.confirm(&sent.header.id).is_none());
        assert_eq!(outbox.forget_device("default/t").len(), 1);
        assert!(outbox.is_empty());
    }
}
