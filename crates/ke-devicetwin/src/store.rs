//! The twin module's rows in the edge database: upstream's `device` and `device_twin` tables
//! (same columns, same value encodings, so either edgecore reads the other's file) and our
//! `twin_outbox` of reports the cloud has not confirmed yet.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use ke_message::Message;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

use crate::device::Device;
use crate::twin::{Side, Twin, Version};

/// One change to the database; a batch of them is one transaction.
#[derive(Debug, Clone)]
pub enum Write {
    PutDevice(Device),
    DeleteDevice(String),
    PutTwin {
        device: String,
        name: String,
        twin: Twin,
    },
    PutReport {
        seq: i64,
        message: Message,
    },
    DeleteReport(i64),
}

#[derive(Clone)]
pub struct Store {
    connection: Arc<Mutex<Connection>>,
}

/// What the twin module starts from.
pub struct Loaded {
    pub devices: BTreeMap<String, Device>,
    pub reports: Vec<(i64, Message)>,
    /// What metamanager and the DMI server keep in `meta`: Device and DeviceModel objects
    /// and registered mappers, with their type (`device`, `devicemodel`, `devicemapper`).
    pub objects: Vec<(String, Value)>,
}

impl Store {
    pub fn new(connection: Connection) -> Store {
        Store {
            connection: Arc::new(Mutex::new(connection)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn load(&self) -> rusqlite::Result<Loaded> {
        let connection = self.lock();
        let mut devices = BTreeMap::new();
        {
            let mut statement = connection
                .prepare("SELECT id, name, description, state, last_online FROM device")?;
            let rows = statement.query_map([], |row| {
                Ok(Device {
                    id: row.get(0)?,
                    name: text(row.get(1)?),
                    description: text(row.get(2)?),
                    state: text(row.get(3)?),
                    last_online: text(row.get(4)?),
                    twins: BTreeMap::new(),
                })
            })?;
            for device in rows {
                let device = device?;
                devices.insert(device.id.clone(), device);
            }
        }
        {
            let mut statement = connection.prepare(
                "SELECT deviceid, name, expected, actual, expected_meta, actual_meta, \
                 expected_version, actual_version, optional, attr_type, metadata \
                 FROM device_twin ORDER BY id",
            )?;
            let mut rows = statement.query([])?;
            while let Some(row) = rows.next()? {
                let device: String = row.get(0)?;
                let Some(device) = devices.get_mut(&device) else {
                    continue;
                };
                let side = |value: Option<String>, meta: Option<String>| {
                    value.filter(|v| !v.is_empty()).map(|value| Side {
                        value,
                        timestamp: meta
                            .and_then(|m| serde_json::from_str::<Value>(&m).ok())
                            .and_then(|m| m.get("timestamp").and_then(Value::as_i64))
                            .unwrap_or(0),
                    })
                };
                let version = |text: Option<String>| {
                    text.and_then(|t| serde_json::from_str::<Value>(&t).ok())
                        .and_then(|v| Version::from_json(&v))
                };
                let twin = Twin {
                    expected: side(row.get(2)?, row.get(4)?),
                    actual: side(row.get(3)?, row.get(5)?),
                    expected_version: version(row.get(6)?),
                    actual_version: version(row.get(7)?),
                    optional: row.get::<_, Option<bool>>(8)?.unwrap_or(true),
                    attr_type: text(row.get(9)?),
                    metadata: text(row.get(10)?),
                };
                device.twins.insert(row.get(1)?, twin);
            }
        }
        let mut reports = Vec::new();
        {
            let mut statement =
                connection.prepare("SELECT seq, message FROM twin_outbox ORDER BY seq")?;
            let mut rows = statement.query([])?;
            while let Some(row) = rows.next()? {
                let seq: i64 = row.get(0)?;
                let text: String = row.get(1)?;
                match ke_message::decode(text.as_bytes()) {
                    Ok(message) => reports.push((seq, message)),
                    Err(err) => tracing::warn!(seq, %err, "unreadable twin report dropped"),
                }
            }
        }
        let objects = {
            let has_meta: Option<i64> = connection
                .query_row(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
                    [],
                    |row| row.get(0),
                )
                .optional()?;
            let mut objects = Vec::new();
            if has_meta.is_some() {
                let mut statement = connection.prepare(
                    "SELECT type, value FROM meta \
                     WHERE type IN ('device', 'devicemodel', 'devicemapper') ORDER BY key",
                )?;
                let mut rows = statement.query([])?;
                while let Some(row) = rows.next()? {
                    let (kind, text): (String, String) = (row.get(0)?, row.get(1)?);
                    if let Ok(object) = serde_json::from_str(&text) {
                        objects.push((kind, object));
                    }
                }
            }
            objects
        };
        Ok(Loaded {
            devices,
            reports,
            objects,
        })
    }

    /// Records a registered mapper as upstream's DMI server does (a `meta` row).
    pub fn put_mapper(&self, name: &str, info: &Value) -> rusqlite::Result<()> {
        self.lock()
            .execute(
                "INSERT OR REPLACE INTO meta (key, type, value) VALUES (?1, 'devicemapper', ?2)",
                params![
                    format!("node/nodeID/namespace/devicemapper/{name}"),
                    crate::json::encode(info)
                ],
            )
            .map(drop)
    }

    /// Applies `writes` in one transaction.
    pub fn apply(&self, writes: &[Write]) -> rusqlite::Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut connection = self.lock();
        let transaction = connection.transaction()?;
        for write in writes {
            match write {
                Write::PutDevice(device) => {
                    transaction
                        .prepare_cached(
                            "INSERT OR REPLACE INTO device (id, name, description, state, \
                             last_online) VALUES (?1, ?2, ?3, ?4, ?5)",
                        )?
                        .execute(params![
                            device.id,
                            device.name,
                            device.description,
                            device.state,
                            device.last_online
                        ])?;
                }
                Write::DeleteDevice(id) => {
                    for statement in [
                        "DELETE FROM device WHERE id = ?1",
                        "DELETE FROM device_attr WHERE deviceid = ?1",
                        "DELETE FROM device_twin WHERE deviceid = ?1",
                    ] {
                        transaction.prepare_cached(statement)?.execute([id])?;
                    }
                }
                Write::PutTwin { device, name, twin } => {
                    put_twin(&transaction, device, name, twin)?
                }
                Write::PutReport { seq, message } => {
                    let text =
                        String::from_utf8(ke_message::encode(message)).expect("JSON is UTF-8");
                    transaction
                        .prepare_cached(
                            "INSERT OR REPLACE INTO twin_outbox (seq, resource, message) \
                             VALUES (?1, ?2, ?3)",
                        )?
                        .execute(params![seq, message.router.resource, text])?;
                }
                Write::DeleteReport(seq) => {
                    transaction
                        .prepare_cached("DELETE FROM twin_outbox WHERE seq = ?1")?
                        .execute([seq])?;
                }
            }
        }
        transaction.commit()
    }
}

fn text(value: Option<String>) -> String {
    value.unwrap_or_default()
}

/// Upstream's encodings: raw values, `{"timestamp":ms}` metas, `{"cloud":c,"edge":e}` versions,
/// NULL for what a twin does not have.
fn put_twin(
    transaction: &rusqlite::Transaction<'_>,
    device: &str,
    name: &str,
    twin: &Twin,
) -> rusqlite::Result<()> {
    let value = |side: &Option<Side>| side.as_ref().map(|s| s.value.clone());
    let meta = |side: &Option<Side>| {
        side.as_ref()
            .map(|s| json!({ "timestamp": s.timestamp }).to_string())
    };
    let version = |v: Option<Version>| v.map(|v| v.to_json().to_string());
    let columns = params![
        value(&twin.expected),
        value(&twin.actual),
        meta(&twin.expected),
        meta(&twin.actual),
        version(twin.expected_version),
        version(twin.actual_version),
        twin.optional,
        twin.attr_type,
        twin.metadata,
        device,
        name,
    ];
    let updated = transaction
        .prepare_cached(
            "UPDATE device_twin SET expected = ?1, actual = ?2, expected_meta = ?3, \
             actual_meta = ?4, expected_version = ?5, actual_version = ?6, optional = ?7, \
             attr_type = ?8, metadata = ?9 WHERE deviceid = ?10 AND name = ?11",
        )?
        .execute(columns)?;
    if updated == 0 {
        transaction
            .prepare_cached(
                "INSERT INTO device_twin (expected, actual, expected_meta, actual_meta, \
                 expected_version, actual_version, optional, attr_type, metadata, deviceid, \
                 name, description) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, '')",
            )?
            .execute(columns)?;
    }
    Ok(())
}
