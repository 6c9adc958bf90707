//! The edge's memory: upstream's `meta` table (wire resource → object, what edged and the cloud
//! protocol use) and `meta_v2` (the metaserver's keyed store), kept in step, plus our outbox of
//! reports waiting for the cloud. Writes happen in batches, one transaction and one fsync each.

use std::path::Path;
use std::sync::Arc;

use ke_message::Message;
use ke_message::kinds::Kind;
use ke_message::resource::WireResource;
use rusqlite::{Connection, OptionalExtension as _, params};
use serde_json::Value;

use crate::db::{Database, DbError, Tables};

/// What happened to a cached object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// A change to a cached object, as the metaserver's watchers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: Kind,
    pub change: ChangeType,
    pub namespace: String,
    /// The object as JSON, with its TypeMeta (for a deletion, its last stored state). Text, not
    /// a parsed value: it is held in the watch window and usually only copied to watchers.
    pub object: Arc<str>,
    /// The object's numeric resourceVersion (0 when it has none).
    pub revision: u64,
}

/// An object cached in `meta_v2`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cached {
    pub namespace: String,
    pub name: String,
    pub revision: u64,
    pub value: String,
}

/// What a batch did, in order.
#[derive(Debug, Default)]
pub struct Applied {
    pub changes: Vec<Change>,
}

pub struct Store {
    db: Database,
    connection: Connection,
}

impl Store {
    pub fn open(path: &Path, tables: Tables) -> Result<Store, DbError> {
        let (db, connection) = Database::open(path, tables)?;
        Ok(Store { db, connection })
    }

    /// A read-write connection for a module that owns tables in the file.
    pub fn writer(&self) -> Result<rusqlite::Connection, DbError> {
        self.db.writer()
    }

    /// A read-only connection for another thread (the metaserver).
    pub fn reader(&self) -> Result<Reader, DbError> {
        Ok(Reader {
            connection: self.db.reader()?,
        })
    }

    /// Runs `write` in one transaction: all of it is stored, or none.
    pub fn batch<T>(
        &mut self,
        write: impl FnOnce(&mut Batch<'_>) -> rusqlite::Result<T>,
    ) -> Result<(T, Applied), DbError> {
        let path = self.db.path.clone();
        let sqlite = |source| DbError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.connection.transaction().map_err(sqlite)?;
        let mut batch = Batch {
            tx,
            applied: Applied::default(),
        };
        let out = write(&mut batch).map_err(sqlite)?;
        let Batch { tx, applied } = batch;
        tx.commit().map_err(sqlite)?;
        Ok((out, applied))
    }

    /// The `meta` values of one resource (`<ns>/<type>/<name>`), or of every object of a type
    /// (`<ns>/<type>`), as upstream's local query answers them.
    pub fn query(&self, resource: &WireResource) -> Result<Vec<String>, DbError> {
        let sqlite = |source| DbError::Sqlite {
            path: self.db.path.clone(),
            source,
        };
        match resource.name.as_deref() {
            Some(_) => {
                let key = resource.to_string();
                let value = self
                    .connection
                    .query_row("SELECT value FROM meta WHERE key = ?1", [&key], |row| {
                        row.get(0)
                    })
                    .optional()
                    .map_err(sqlite)?;
                Ok(value.into_iter().collect())
            }
            // Upstream answers a type query with every object of the type, whatever the
            // namespace (`QueryMeta("type", …)`); edged relies on it for its pod set.
            None => {
                let mut statement = self
                    .connection
                    .prepare_cached("SELECT value FROM meta WHERE type = ?1 ORDER BY key")
                    .map_err(sqlite)?;
                let rows = statement
                    .query_map([&resource.resource_type], |row| row.get(0))
                    .map_err(sqlite)?;
                rows.collect::<Result<_, _>>().map_err(sqlite)
            }
        }
    }

    /// The report waiting for the cloud for `resource`, if any.
    pub fn outbox_entry(&self, resource: &str) -> Result<Option<Message>, DbError> {
        let text: Option<String> = self
            .connection
            .prepare_cached("SELECT message FROM upstream_outbox WHERE resource = ?1")
            .and_then(|mut s| s.query_row([resource], |row| row.get(0)).optional())
            .map_err(|source| DbError::Sqlite {
                path: self.db.path.clone(),
                source,
            })?;
        Ok(text.and_then(|text| ke_message::decode(text.as_bytes()).ok()))
    }

    /// Reports waiting for the cloud, oldest first.
    pub fn outbox(&self) -> Result<Vec<Message>, DbError> {
        let sqlite = |source| DbError::Sqlite {
            path: self.db.path.clone(),
            source,
        };
        let mut statement = self
            .connection
            .prepare_cached("SELECT message FROM upstream_outbox ORDER BY seq")
            .map_err(sqlite)?;
        let rows = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(sqlite)?;
        let mut messages = Vec::new();
        for row in rows {
            match ke_message::decode(row.map_err(sqlite)?.as_bytes()) {
                Ok(message) => messages.push(message),
                // Only we write this table; a row we cannot read is dropped, not retried forever.
                Err(err) => tracing::warn!(error = %err, "unreadable outbox entry skipped"),
            }
        }
        Ok(messages)
    }
}

/// Writes inside one transaction.
pub struct Batch<'a> {
    tx: rusqlite::Transaction<'a>,
    applied: Applied,
}

impl Batch<'_> {
    /// Stores an object the cloud sent, unless a newer version of the same object (same UID,
    /// higher resourceVersion) is already stored: redelivered or reordered old versions are
    /// harmless. Returns whether it was stored.
    pub fn upsert(&mut self, resource: &WireResource, object: &Value) -> rusqlite::Result<bool> {
        let key = resource.to_string();
        let stored = self.meta_value(&key)?;
        if let Some(stored) = &stored
            && uid(stored) == uid(object)
            && revision(stored) > revision(object)
        {
            return Ok(false);
        }
        let value = encode_text(object);
        self.tx
            .prepare_cached("INSERT OR REPLACE INTO meta (key, type, value) VALUES (?1, ?2, ?3)")?
            .execute(params![key, resource.resource_type, value])?;
        if let Some(kind) = cacheable(resource) {
            let object = with_type_meta(object.clone(), kind);
            let value = encode_text(&object);
            let (namespace, name) = (namespace_of(&object), name_of(&object));
            self.tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO meta_v2 (key, group_version_resource, namespace, \
                     name, resource_version, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    v2_key(kind, &namespace, &name),
                    gvr(kind),
                    namespace,
                    name,
                    revision(&object) as i64,
                    value,
                ])?;
            self.applied.changes.push(Change {
                kind,
                change: if stored.is_some() {
                    ChangeType::Modified
                } else {
                    ChangeType::Added
                },
                revision: revision(&object),
                namespace,
                object: Arc::from(value),
            });
        }
        Ok(true)
    }

    /// Removes an object the cloud deleted. With a UID (the delete's content), only that object
    /// goes: a delete that crossed a re-creation must not remove the new object. A pod's stored
    /// status patch goes with it, as upstream does. Returns whether something was removed.
    pub fn delete(
        &mut self,
        resource: &WireResource,
        uid_hint: Option<&str>,
    ) -> rusqlite::Result<bool> {
        let key = resource.to_string();
        let Some(stored) = self.meta_value(&key)? else {
            return Ok(false);
        };
        if let Some(expected) = uid_hint
            && uid(&stored).is_some_and(|stored| stored != expected)
        {
            return Ok(false);
        }
        self.tx
            .prepare_cached("DELETE FROM meta WHERE key = ?1")?
            .execute([&key])?;
        if resource.resource_type == ke_message::constants::resource_type::POD {
            let patch = WireResource::new(
                resource.namespace.as_deref(),
                ke_message::constants::resource_type::POD_PATCH,
                resource.name.as_deref(),
            );
            self.tx
                .prepare_cached("DELETE FROM meta WHERE key = ?1")?
                .execute([patch.to_string()])?;
        }
        if let Some(kind) = cacheable(resource) {
            let object = with_type_meta(stored, kind);
            let namespace = namespace_of(&object);
            self.tx
                .prepare_cached("DELETE FROM meta_v2 WHERE key = ?1")?
                .execute([v2_key(kind, &namespace, &name_of(&object))])?;
            self.applied.changes.push(Change {
                kind,
                change: ChangeType::Deleted,
                revision: revision(&object),
                namespace,
                object: Arc::from(encode_text(&object)),
            });
        }
        Ok(true)
    }

    /// Keeps a report made on the edge (status, patch, deletion) as upstream does in `meta`, and
    /// in the outbox until the cloud has answered it. A newer report for the same resource
    /// replaces an unsent older one: the cloud only needs the latest.
    pub fn record_report(&mut self, message: &Message) -> rusqlite::Result<()> {
        let resource = &message.router.resource;
        if let Ok(wire) = WireResource::parse(resource)
            && message.router.operation != ke_message::constants::operation::DELETE
        {
            let value = String::from_utf8_lossy(&message.content_bytes()).into_owned();
            self.tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO meta (key, type, value) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![resource, wire.resource_type, value])?;
            if wire.resource_type == ke_message::constants::resource_type::POD_PATCH {
                self.show_pod_status(&wire, &message.content)?;
            }
        }
        let encoded = String::from_utf8_lossy(&ke_message::encode(message)).into_owned();
        self.tx
            .prepare_cached(
                "INSERT INTO upstream_outbox (resource, message) VALUES (?1, ?2) \
                 ON CONFLICT (resource) DO UPDATE SET message = excluded.message, \
                 seq = (SELECT coalesce(max(seq), 0) + 1 FROM upstream_outbox)",
            )?
            .execute(params![resource, encoded])?;
        Ok(())
    }

    /// Puts the status edged reports into the pod the edge serves, so local clients see the
    /// node's pods as they are even while the cloud is away. The cloud's next version of the
    /// pod replaces it as usual.
    fn show_pod_status(&mut self, patch: &WireResource, content: &Value) -> rusqlite::Result<()> {
        let report: Value = match content {
            Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
            other => other.clone(),
        };
        let Some(status) = report.get("status").filter(|s| s.is_object()) else {
            return Ok(());
        };
        let pod = WireResource::new(
            patch.namespace.as_deref(),
            ke_message::constants::resource_type::POD,
            patch.name.as_deref(),
        );
        let Some(mut stored) = self.meta_value(&pod.to_string())? else {
            return Ok(());
        };
        let reported_uid = report["metadata"]["uid"].as_str();
        if reported_uid.is_some_and(|reported| uid(&stored) != Some(reported)) {
            return Ok(());
        }
        stored["status"] = status.clone();
        self.upsert(&pod, &stored)?;
        Ok(())
    }

    /// Drops a report the cloud has answered — unless a newer one replaced it meanwhile.
    pub fn report_done(&mut self, message: &Message) -> rusqlite::Result<()> {
        self.tx
            .prepare_cached(
                "DELETE FROM upstream_outbox WHERE resource = ?1 \
                 AND json_extract(message, '$.header.msg_id') = ?2",
            )?
            .execute(params![message.router.resource, message.header.id])?;
        Ok(())
    }

    fn meta_value(&self, key: &str) -> rusqlite::Result<Option<Value>> {
        let value: Option<String> = self
            .tx
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row([key], |row| row.get(0))
            .optional()?;
        Ok(value.and_then(|v| serde_json::from_str(&v).ok()))
    }
}

/// Reads of `meta_v2` for the metaserver, on its own connection.
pub struct Reader {
    connection: Connection,
}

impl Reader {
    /// The cached objects of `kind`, optionally in one namespace.
    pub fn list(&self, kind: Kind, namespace: Option<&str>) -> rusqlite::Result<Vec<Cached>> {
        self.connection
            .prepare_cached(
                "SELECT namespace, name, resource_version, value FROM meta_v2 \
                 WHERE group_version_resource = ?1 AND (?2 IS NULL OR namespace = ?2) \
                 ORDER BY namespace, name",
            )?
            .query_map(params![gvr(kind), namespace], cached)?
            .collect()
    }

    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> rusqlite::Result<Option<Cached>> {
        self.connection
            .prepare_cached(
                "SELECT namespace, name, resource_version, value FROM meta_v2 WHERE key = ?1",
            )?
            .query_row([v2_key(kind, namespace, name)], cached)
            .optional()
    }

    /// The highest resourceVersion cached: the metaserver's "current revision".
    pub fn revision(&self) -> rusqlite::Result<u64> {
        max_revision(&self.connection)
    }
}

fn cached(row: &rusqlite::Row<'_>) -> rusqlite::Result<Cached> {
    Ok(Cached {
        namespace: row.get(0)?,
        name: row.get(1)?,
        revision: row.get::<_, i64>(2)?.max(0) as u64,
        value: row.get(3)?,
    })
}

fn max_revision(connection: &Connection) -> rusqlite::Result<u64> {
    let max: Option<i64> =
        connection.query_row("SELECT max(resource_version) FROM meta_v2", [], |row| {
            row.get(0)
        })?;
    Ok(max.unwrap_or(0).max(0) as u64)
}

/// The kinds the metaserver serves; status reports and the like stay in `meta` only.
fn cacheable(resource: &WireResource) -> Option<Kind> {
    Kind::by_token(&resource.resource_type)
        .filter(|kind| kind.token != ke_message::constants::resource_type::EVENT)
}

/// Upstream's metaserver key for a stored object.
pub fn v2_key(kind: Kind, namespace: &str, name: &str) -> String {
    ke_message::kinds::metaserver_key(kind, Some(namespace), Some(name))
}

/// Go's `GroupVersionResource.String()`, which upstream stores in `group_version_resource`.
pub fn gvr(kind: Kind) -> String {
    format!("{}/{}, Resource={}", kind.group, kind.version, kind.plural)
}

/// Objects from informers carry no TypeMeta; the metaserver's clients need it.
fn with_type_meta(mut object: Value, kind: Kind) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.entry("apiVersion")
            .or_insert_with(|| Value::String(kind.api_version()));
        map.entry("kind")
            .or_insert_with(|| Value::String(kind.kind.to_owned()));
        if map
            .get("apiVersion")
            .is_some_and(|v| v.as_str() == Some(""))
        {
            map.insert("apiVersion".into(), Value::String(kind.api_version()));
        }
        if map.get("kind").is_some_and(|v| v.as_str() == Some("")) {
            map.insert("kind".into(), Value::String(kind.kind.to_owned()));
        }
    }
    object
}

/// Go-compatible JSON text, as upstream stores values.
fn encode_text(value: &Value) -> String {
    String::from_utf8_lossy(&ke_message::codec::encode_value(value)).into_owned()
}

fn uid(object: &Value) -> Option<&str> {
    object["metadata"]["uid"].as_str()
}

pub(crate) fn revision(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn namespace_of(object: &Value) -> String {
    object["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn name_of(object: &Value) -> String {
    object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const TABLES: Tables = Tables {
        device_twin: false,
        event_bus: false,
        service_bus: false,
    };

    fn pod(uid: &str, rv: &str) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default", "uid": uid, "resourceVersion": rv}})
    }

    fn resource(text: &str) -> WireResource {
        WireResource::parse(text).unwrap()
    }

    #[test]
    fn old_versions_and_deletes_of_other_uids_do_not_win() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("edgecore.db"), TABLES).unwrap();
        let web = resource("default/pod/web");
        let ((), applied) = store
            .batch(|b| {
                assert!(b.upsert(&web, &pod("a", "5"))?);
                assert!(!b.upsert(&web, &pod("a", "4"))?);
                assert!(!b.delete(&web, Some("other-uid"))?);
                Ok(())
            })
            .unwrap();
        assert_eq!(applied.changes.len(), 1);
        let stored = store.query(&web).unwrap();
        assert_eq!(stored.len(), 1);
        assert!(stored[0].contains("\"resourceVersion\":\"5\""));

        let reader = store.reader().unwrap();
        let (items, revision) = (
            reader.list(Kind::POD, Some("default")).unwrap(),
            reader.revision().unwrap(),
        );
        assert_eq!((items.len(), revision), (1, 5));
        assert!(
            items[0].value.contains("\"kind\":\"Pod\""),
            "{}",
            items[0].value
        );

        store.batch(|b| b.delete(&web, Some("a"))).unwrap();
        assert!(store.query(&web).unwrap().is_empty());
        assert!(reader.list(Kind::POD, None).unwrap().is_empty());
    }

    #[test]
    fn the_outbox_keeps_the_newest_report_per_resource_until_answered() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("edgecore.db"), TABLES).unwrap();
        let report = |n: u32| {
            Message::new()
                .with_route("edged", "meta", "null/nodepatch/edge-1", "patch")
                .with_content(format!("{{\"n\":{n}}}"))
        };
        let lease = Message::new()
            .with_route("edged", "meta", "kube-node-lease/lease/edge-1", "update")
            .with_content(json!({}));
        let (first, second) = (report(1), report(2));
        store
            .batch(|b| {
                b.record_report(&first)?;
                b.record_report(&lease)?;
                b.record_report(&second)
            })
            .unwrap();
        let waiting = store.outbox().unwrap();
        assert_eq!(waiting, [lease.clone(), second.clone()]);
        // An answer to the replaced report does not drop the newer one.
        store.batch(|b| b.report_done(&first)).unwrap();
        assert_eq!(store.outbox().unwrap().len(), 2);
        store.batch(|b| b.report_done(&second)).unwrap();
        assert_eq!(store.outbox().unwrap(), [lease]);
        let key = resource("null/nodepatch/edge-1");
        assert_eq!(store.query(&key).unwrap(), ["{\"n\":2}"]);
    }

    #[test]
    fn a_reported_pod_status_shows_in_the_local_pod() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("edgecore.db"), TABLES).unwrap();
        let web = resource("default/pod/web");
        let report = |uid: &str, phase: &str| {
            Message::new()
                .with_route("edged", "meta", "default/podpatch/web", "patch")
                .with_content(
                    json!({"metadata": {"uid": uid}, "status": {"phase": phase}}).to_string(),
                )
        };
        let ((), applied) = store
            .batch(|b| {
                b.upsert(&web, &pod("a", "5"))?;
                b.record_report(&report("a", "Running"))?;
                // A report about an earlier pod of the same name changes nothing.
                b.record_report(&report("old", "Failed"))
            })
            .unwrap();
        assert_eq!(applied.changes.len(), 2, "added, then modified");
        let stored: Value = serde_json::from_str(&store.query(&web).unwrap()[0]).unwrap();
        assert_eq!(stored["status"]["phase"], "Running");
        let served = store
            .reader()
            .unwrap()
            .get(Kind::POD, "default", "web")
            .unwrap();
        assert!(served.unwrap().value.contains("\"Running\""));
    }

    #[test]
    fn keys_match_upstreams_metaserver() {
        assert_eq!(
            v2_key(Kind::POD, "default", "web"),
            "/core/v1/pods/default/web"
        );
        assert_eq!(
            v2_key(Kind::NODE, "", "edge-1"),
            "/core/v1/nodes/null/edge-1"
        );
        assert_eq!(gvr(Kind::POD), "/v1, Resource=pods");
        assert_eq!(gvr(Kind::LEASE), "coordination.k8s.io/v1, Resource=leases");
    }
}
