//! Opening `database.dataSource`: upstream's schema byte-for-byte, one owner at a time, and a
//! clear error — not a crash loop — for a file that is locked, corrupt or not a database.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// What can go wrong with the database file.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("create the directory of {path}: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is in use by another process (is another edgecore running?)")]
    InUse { path: PathBuf },
    #[error("{path} is not a usable SQLite database ({reason}); move it away to start empty")]
    Unusable { path: PathBuf, reason: String },
    #[error("database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

/// Which modules' tables a database gets. Upstream's `dao.Init` creates a module's tables only
/// when the module is enabled; so do we.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tables {
    pub device_twin: bool,
    pub event_bus: bool,
    pub service_bus: bool,
}

/// The module a table belongs to.
#[derive(Clone, Copy)]
enum Owner {
    MetaManager,
    DeviceTwin,
    EventBus,
    ServiceBus,
}

impl Tables {
    fn wants(&self, owner: Owner) -> bool {
        match owner {
            Owner::MetaManager => true,
            Owner::DeviceTwin => self.device_twin,
            Owner::EventBus => self.event_bus,
            Owner::ServiceBus => self.service_bus,
        }
    }
}

/// Upstream's tables, as its gorm migrator writes them (golden `sqlite.md`), so `sqlite3 .schema`
/// shows the same text whichever side created the file; with the module that needs each.
const UPSTREAM_TABLES: &[(&str, Owner, &str)] = &[
    (
        "device",
        Owner::DeviceTwin,
        "CREATE TABLE `device` (`id` text,`name` text,`description` text,`state` text,\
         `last_online` text,PRIMARY KEY (`id`))",
    ),
    (
        "device_attr",
        Owner::DeviceTwin,
        "CREATE TABLE `device_attr` (`id` integer PRIMARY KEY AUTOINCREMENT,`deviceid` text,\
         `name` text,`description` text,`value` text,`optional` numeric,`attr_type` text,\
         `metadata` text)",
    ),
    (
        "device_twin",
        Owner::DeviceTwin,
        "CREATE TABLE `device_twin` (`id` integer PRIMARY KEY AUTOINCREMENT,`deviceid` text,\
         `name` text,`description` text,`expected` text,`actual` text,`expected_meta` text,\
         `actual_meta` text,`expected_version` text,`actual_version` text,`optional` numeric,\
         `attr_type` text,`metadata` text)",
    ),
    (
        "sub_topics",
        Owner::EventBus,
        "CREATE TABLE `sub_topics` (`topic` text,PRIMARY KEY (`topic`))",
    ),
    (
        "meta",
        Owner::MetaManager,
        "CREATE TABLE `meta` (`key` text,`type` text,`value` text,PRIMARY KEY (`key`))",
    ),
    (
        "meta_v2",
        Owner::MetaManager,
        "CREATE TABLE `meta_v2` (`key` text,`group_version_resource` text,`namespace` text,\
         `name` text,`resource_version` integer,`value` text,PRIMARY KEY (`key`))",
    ),
    (
        "target_urls",
        Owner::ServiceBus,
        "CREATE TABLE `target_urls` (`url` text,PRIMARY KEY (`url`))",
    ),
    // Ours: devicetwin's twin and state reports until the cloud confirms them (ke-devicetwin's
    // outbox); ignored by a stock edgecore, like `upstream_outbox`.
    (
        "twin_outbox",
        Owner::DeviceTwin,
        "CREATE TABLE `twin_outbox` (`seq` integer PRIMARY KEY AUTOINCREMENT,\
         `resource` text NOT NULL,`message` text NOT NULL)",
    ),
    // Ours: reports for the cloud kept while it is unreachable, newest per resource. Upstream
    // ignores tables it does not know, so the file stays readable by a stock edgecore.
    (
        "upstream_outbox",
        Owner::MetaManager,
        "CREATE TABLE `upstream_outbox` (`seq` integer PRIMARY KEY AUTOINCREMENT,\
         `resource` text NOT NULL UNIQUE,`message` text NOT NULL)",
    ),
];

/// The database file, held exclusively by this process for as long as the value lives.
pub(crate) struct Database {
    pub path: PathBuf,
    /// An advisory lock on the file itself: SQLite's own locks are per transaction, and two
    /// edgecores interleaving writes to one store would each ACK what the other overwrote.
    _owner: File,
}

impl Database {
    pub fn open(path: &Path, tables: Tables) -> Result<(Database, Connection), DbError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| DbError::Directory {
                path: path.to_owned(),
                source,
            })?;
        }
        let owner = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| DbError::Unusable {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        if owner.try_lock().is_err() {
            return Err(DbError::InUse {
                path: path.to_owned(),
            });
        }
        let connection = connect(path)?;
        prepare(&connection, tables).map_err(|e| classify(path, e))?;
        Ok((
            Database {
                path: path.to_owned(),
                _owner: owner,
            },
            connection,
        ))
    }

    /// Another read-write connection to the same file, for the modules that own tables in it
    /// (eventbus, devicetwin). Writes are serialized by SQLite; `busy_timeout` waits them out.
    pub fn writer(&self) -> Result<Connection, DbError> {
        let connection = connect(&self.path)?;
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(|e| classify(&self.path, e))?;
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(|e| classify(&self.path, e))?;
        Ok(connection)
    }

    /// Another connection to the same file, for readers (the metaserver).
    pub fn reader(&self) -> Result<Connection, DbError> {
        let connection = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| classify(&self.path, e))?;
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(|e| classify(&self.path, e))?;
        Ok(connection)
    }
}

fn connect(path: &Path) -> Result<Connection, DbError> {
    let connection = Connection::open(path).map_err(|e| classify(path, e))?;
    connection
        .busy_timeout(Duration::from_secs(2))
        .map_err(|e| classify(path, e))?;
    Ok(connection)
}

fn prepare(connection: &Connection, tables: Tables) -> rusqlite::Result<()> {
    // The first read of the header is where a non-database file fails.
    let check: String = connection.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
    if check != "ok" {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(check),
        ));
    }
    // WAL: readers (metaserver) never block the writer. FULL: a committed batch survives power
    // loss, which is what an ACK promises the cloud.
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    for (table, owner, create) in UPSTREAM_TABLES {
        if !tables.wants(*owner) {
            continue;
        }
        let exists: bool = connection.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |row| row.get(0),
        )?;
        if !exists {
            connection.execute(create, [])?;
        }
    }
    Ok(())
}

fn classify(path: &Path, err: rusqlite::Error) -> DbError {
    use rusqlite::ffi::ErrorCode;
    match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => DbError::InUse {
            path: path.to_owned(),
        },
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => DbError::Unusable {
            path: path.to_owned(),
            reason: err.to_string(),
        },
        _ => DbError::Sqlite {
            path: path.to_owned(),
            source: err,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Tables = Tables {
        device_twin: true,
        event_bus: true,
        service_bus: true,
    };

    /// The `.schema` of a database upstream's edgecore created (golden `sqlite.md`).
    const GOLDEN_SCHEMA: &str = include_str!("../tests/golden/schema.sql");

    fn tables(connection: &Connection) -> Vec<String> {
        let mut statement = connection
            .prepare(
                "SELECT sql FROM sqlite_master WHERE type = 'table' \
                 AND name NOT IN ('upstream_outbox', 'twin_outbox') ORDER BY rowid",
            )
            .unwrap();
        statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_fresh_file_has_upstreams_schema_for_the_enabled_modules() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, connection) = Database::open(&dir.path().join("edgecore.db"), ALL).unwrap();
        let golden: Vec<&str> = GOLDEN_SCHEMA
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.trim_end_matches(';'))
            .collect();
        assert_eq!(tables(&connection), golden);

        let none = Tables {
            device_twin: false,
            event_bus: false,
            service_bus: false,
        };
        let (_db, connection) = Database::open(&dir.path().join("minimal.db"), none).unwrap();
        assert_eq!(
            tables(&connection),
            [
                "CREATE TABLE `meta` (`key` text,`type` text,`value` text,PRIMARY KEY (`key`))",
                "CREATE TABLE `meta_v2` (`key` text,`group_version_resource` text,`namespace` text,`name` text,`resource_version` integer,`value` text,PRIMARY KEY (`key`))",
                "CREATE TABLE sqlite_sequence(name,seq)",
            ]
        );
    }

    #[test]
    fn garbage_and_second_owners_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
        let err = Database::open(&garbage, ALL)
            .err()
            .expect("garbage accepted");
        assert!(matches!(err, DbError::Unusable { .. }), "{err}");
        assert!(err.to_string().contains("garbage.db"), "{err}");

        let path = dir.path().join("edgecore.db");
        let _first = Database::open(&path, ALL).unwrap();
        let err = Database::open(&path, ALL)
            .err()
            .expect("second owner accepted");
        assert!(matches!(err, DbError::InUse { .. }), "{err}");
    }
}
