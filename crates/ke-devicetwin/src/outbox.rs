//! Twin and state reports for the cloud, kept until the cloud confirms them.
//!
//! Upstream keeps unconfirmed reports in memory only, drops what is produced while the cloud
//! is away, and retries after 60 idle seconds. Here every report is a `twin_outbox` row
//! (written in the same transaction as the twin it reports), so reports survive offline
//! periods and restarts. Per resource (one device's twin, or its state) one report is in
//! flight at a time, so an older one never overtakes a newer one; reports made meanwhile are
//! merged into one waiting report — per twin and per side for twin reports, newest wins for
//! state — so a device reporting every second while the cloud is away costs one row, not
//! thousands. A report the cloud does not confirm is sent again with backoff, folded under the
//! newer report waiting behind it if there is one (so a retry carries the newest values), and
//! given up after [`MAX_ATTEMPTS`] (the cloud refuses it: a device it does not know, or one
//! bound to another node); only recent sends count towards [`MAX_IN_FLIGHT`], so such reports
//! never hold the window.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ke_message::Message;
use serde_json::Value;

use crate::store::Write;
use crate::twin::DELETED;

/// How long a sent report waits for its confirmation before it is sent again (doubling with
/// each attempt, up to [`MAX_BACKOFF`]).
pub const RETRY_AFTER: Duration = Duration::from_secs(15);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Sends of one report (about 40 minutes of a connected cloud not confirming it).
pub const MAX_ATTEMPTS: u32 = 10;
/// Reports sent and not yet confirmed, at most. edgehub sends at most `messageQPS` messages a
/// second; more in flight would only wait in its queue, be resent after [`RETRY_AFTER`] while
/// still queued, and spend the link on duplicates.
pub const MAX_IN_FLIGHT: usize = 32;

struct Entry {
    message: Message,
    sent: Option<Instant>,
    attempts: u32,
}

fn backoff(attempts: u32) -> Duration {
    RETRY_AFTER
        .saturating_mul(1 << attempts.saturating_sub(1).min(8))
        .min(MAX_BACKOFF)
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
                            attempts: 0,
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
                attempts: 0,
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

    /// Reports to send now — per resource its oldest report, when never sent or its
    /// confirmation is overdue; never-sent ones first, then oldest first — while fewer than [`MAX_IN_FLIGHT`] were sent in the last
    /// [`RETRY_AFTER`]; and the rows that changed (overdue reports folded into newer ones,
    /// reports given up). What is returned counts as sent at `now`.
    pub fn due(&mut self, now: Instant) -> (Vec<Message>, Vec<Write>) {
        let recent = |e: &Entry| e.sent.is_some_and(|s| now.duration_since(s) < RETRY_AFTER);
        let overdue = |e: &Entry| {
            e.sent
                .is_some_and(|s| now.duration_since(s) >= backoff(e.attempts))
        };
        let mut in_flight = self.entries.values().filter(|e| recent(e)).count();
        // The common case under load, without allocating: the window is full and nothing is
        // overdue.
        if in_flight >= MAX_IN_FLIGHT && !self.entries.values().any(overdue) {
            return (Vec::new(), Vec::new());
        }
        let mut order: Vec<(String, Vec<i64>)> = Vec::new();
        let mut index = std::collections::HashMap::new();
        for (seq, entry) in &self.entries {
            let resource = entry.message.router.resource.as_str();
            let at = *index.entry(resource).or_insert_with(|| {
                order.push((resource.to_owned(), Vec::new()));
                order.len() - 1
            });
            order[at].1.push(*seq);
        }
        // Reports never sent go before retries, so reports the cloud keeps refusing cannot
        // take the window from the others.
        order.sort_by_key(|(_, seqs)| self.entries[&seqs[0]].sent.is_some());
        let (mut send, mut writes) = (Vec::new(), Vec::new());
        for (resource, seqs) in order {
            for (i, seq) in seqs.iter().enumerate() {
                let entry = &self.entries[seq];
                if let Some(sent) = entry.sent {
                    if now.duration_since(sent) < backoff(entry.attempts) {
                        break;
                    }
                    if entry.attempts >= MAX_ATTEMPTS {
                        tracing::warn!(%resource, attempts = entry.attempts, "the cloud never confirmed this report; given up");
                        self.entries.remove(seq);
                        writes.push(Write::DeleteReport(*seq));
                        continue;
                    }
                    if let Some(next) = seqs.get(i + 1) {
                        let head = self.entries.remove(seq).expect("listed above");
                        writes.push(Write::DeleteReport(*seq));
                        let newer = self.entries.get_mut(next).expect("listed above");
                        let mut folded = head.message.content;
                        merge(&mut folded, std::mem::take(&mut newer.message.content));
                        newer.message.content = folded;
                        newer.attempts = head.attempts;
                        writes.push(Write::PutReport {
                            seq: *next,
                            message: newer.message.clone(),
                        });
                        continue;
                    }
                }
                if in_flight < MAX_IN_FLIGHT {
                    let entry = self.entries.get_mut(seq).expect("listed above");
                    entry.sent = Some(now);
                    entry.attempts += 1;
                    in_flight += 1;
                    send.push(entry.message.clone());
                }
                break;
            }
        }
        (send, writes)
    }

    /// `id` could not be handed to the cloud link; send it again at the next chance.
    pub fn unsent(&mut self, id: &str) {
        if let Some(entry) = self
            .entries
            .values_mut()
            .find(|e| e.message.header.id == id)
        {
            entry.sent = None;
            entry.attempts = entry.attempts.saturating_sub(1);
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
        let first = outbox.due(now).0;
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
        let state = outbox.due(now).0;
        assert_eq!(state.len(), 1, "only the state report is new");
        assert!(outbox.due(now + Duration::from_secs(1)).0.is_empty());

        assert!(outbox.confirm(&first[0].header.id).is_some());
        let second = outbox.due(now + Duration::from_secs(1)).0;
        assert_eq!(second.len(), 1);
        assert_eq!(
            second[0].content,
            json!({"twin": {"a": {"actual": {"value": "3"}}, "b": {"actual": {"value": "9"}}}})
        );
        // Unconfirmed: sent again after the retry interval, with the same id.
        let again = outbox.due(now + RETRY_AFTER + Duration::from_secs(1)).0;
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
        let first = outbox.due(now).0;
        assert_eq!(first.len(), MAX_IN_FLIGHT);
        assert!(outbox.due(now).0.is_empty());
        outbox.confirm(&first[0].header.id);
        assert_eq!(outbox.due(now).0.len(), 1, "a confirmation frees one place");
    }

    #[test]
    fn overdue_reports_carry_newer_values_back_off_and_are_given_up() {
        let mut outbox = Outbox::default();
        let now = Instant::now();
        outbox.push(report(
            TWIN,
            json!({"twin": {"a": {"actual": {"value": "1"}}, "b": {"actual": {"value": "1"}}}}),
        ));
        let first = outbox.due(now).0;
        outbox.push(report(
            TWIN,
            json!({"twin": {"a": {"actual": {"value": "2"}}}}),
        ));
        // Unconfirmed: the retry is the newer report with what only the first had.
        let (retry, writes) = outbox.due(now + RETRY_AFTER);
        assert_eq!(retry.len(), 1);
        assert_ne!(retry[0].header.id, first[0].header.id);
        assert_eq!(
            retry[0].content,
            json!({"twin": {"a": {"actual": {"value": "2"}}, "b": {"actual": {"value": "1"}}}})
        );
        assert!(matches!(
            writes[..],
            [Write::DeleteReport(_), Write::PutReport { .. }]
        ));
        assert_eq!(outbox.len(), 1);
        // Backoff doubles: not again after another 15 s, but after 30.
        let mut at = now + RETRY_AFTER;
        assert!(outbox.due(at + RETRY_AFTER).0.is_empty());
        at += RETRY_AFTER * 2;
        assert_eq!(outbox.due(at).0.len(), 1);
        // Never confirmed: given up after MAX_ATTEMPTS sends.
        for _ in 0..MAX_ATTEMPTS {
            at += MAX_BACKOFF;
            outbox.due(at);
        }
        assert!(outbox.is_empty());
    }

    #[test]
    fn stuck_reports_do_not_hold_the_window() {
        let mut outbox = Outbox::default();
        for i in 0..MAX_IN_FLIGHT {
            outbox.push(report(
                &format!("device/default/stuck{i}/state/update"),
                json!("online"),
            ));
        }
        let now = Instant::now();
        assert_eq!(outbox.due(now).0.len(), MAX_IN_FLIGHT);
        outbox.push(report("device/default/fresh/state/update", json!("online")));
        assert!(outbox.due(now).0.is_empty(), "the window is full");
        // Once the stuck ones are past RETRY_AFTER they wait in backoff outside the window.
        let later = now + RETRY_AFTER;
        let sent = outbox.due(later).0;
        assert!(sent.iter().any(|m| m.router.resource.contains("fresh")));
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
