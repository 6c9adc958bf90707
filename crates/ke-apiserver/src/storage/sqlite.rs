//! SQLite backend for [`super::Storage`]: one database file in WAL mode, one writer thread, a
//! small pool of reader threads.
//!
//! # Schema (`user_version` 1)
//!
//! ```sql
//! objects(key TEXT PRIMARY KEY, value BLOB, create_rev INTEGER, mod_rev INTEGER)
//! changes(rev INTEGER PRIMARY KEY, key TEXT, kind INTEGER, value BLOB, create_rev INTEGER)
//! meta(name TEXT PRIMARY KEY, value INTEGER)        -- 'compacted' = compaction point
//! ```
//!
//! `objects` is the current state; `changes` is the change log, one row per successful write
//! (`kind` 0 = added, 1 = modified, 2 = deleted; a delete row carries the last value).
//!
//! # Revision
//!
//! The store revision is `max(MAX(changes.rev), meta.compacted)`. Every write appends its change
//! row in the same transaction as the object write, so the newest revision is always in the log
//! unless compaction removed it, and compaction records how far it went. No separate counter has
//! to be kept in step, and the revision survives restarts and compaction of the whole log
//! without ever going backwards: **revisions are never reused**. Only successful writes get a
//! revision; a failed precondition does not consume one.
//!
//! # Writes: one thread, group commit
//!
//! All writes go over a channel to the writer thread, which owns the only read-write connection.
//! It takes every request already queued (up to [`SqliteOptions::max_batch`]) and runs them in one
//! `BEGIN IMMEDIATE … COMMIT`, each inside its own savepoint so that an SQLite error in one
//! request fails only that request. Callers are answered only after the commit returned, so an
//! acknowledged write is on disk; under load, requests queue while a commit is syncing and the
//! next commit carries all of them, which is how one fsync serves many writes. The async runtime
//! never blocks on SQLite: callers await a oneshot reply.
//!
//! # Durability: `synchronous=FULL` by default
//!
//! With WAL, `synchronous=NORMAL` writes each commit to the WAL file without fsync (the fsync
//! happens at checkpoints). That survives a process crash (`kill -9`): the data is in the OS page
//! cache. It does not survive a power loss or kernel crash: the last commits vanish. For an API
//! server that is worse than losing data: the revision counter goes back, the next writes
//! *reuse revisions clients have already seen*, and an informer resuming a watch from such a
//! revision silently gets a different history. So the default is [`Durability::Full`] (one
//! fsync of the WAL per commit, as etcd does); group commit amortises it: on a 2-core VM with
//! ~0.4 ms fdatasync, `benches/storage.rs` measures ~3,200 writes/s from one writer and ~14,000
//! from 16 (NORMAL: ~6,000 and ~18,000). [`Durability::Normal`] is available for disposable
//! installs and tests.
//!
//! A write whose future is dropped after it was queued may still commit (as with any database
//! client); the caller learns its outcome from a later read or watch.
//!
//! # Reads
//!
//! Reads run on reader threads with their own connections; in WAL mode they never wait for the
//! writer. A list runs in one read transaction, so its items and its revision come from one
//! snapshot. Paging (`limit` + `start_after`) is in key order; each page is its own snapshot
//! (SQLite keeps no old object versions), so a paged list sees every object that exists
//! throughout exactly once, but pages may be from different revisions.
//!
//! Prefixes are key *ranges* `[prefix, successor(prefix))`, never `LIKE`, so `_` and `%` in keys
//! are plain characters and the primary-key index serves the range.
//!
//! # Watch: no gap, no duplicate
//!
//! After each commit the writer publishes the commit's events, in revision order, on a
//! `tokio::sync::broadcast` channel, under a mutex that also records the last published
//! revision. A watch (1) subscribes first, (2) then replays the change log (`rev > after`,
//! prefix-filtered, in pages) in fresh read transactions, and (3) then forwards live events,
//! dropping those at or below the last revision it replayed or the snapshot revision of its last
//! backlog page. Every commit is either published after the subscription (so it is received
//! live) or was committed before it (so the backlog snapshot, taken later, contains it): no gap.
//! Filtering by revision removes the overlap: no duplicate.
//!
//! Each watcher has a bounded buffer ([`SqliteOptions::watch_buffer`] events) and the broadcast
//! channel holds [`SqliteOptions::broadcast_capacity`] commits. A watcher that falls further
//! behind is *closed* (its receiver ends); it never skips events. The client then re-lists, as
//! Kubernetes clients do. Receivers also end when the store is closed or dropped.
//!
//! # Compaction
//!
//! `compact(rev)` deletes change rows `<= rev` and records `rev` in `meta.compacted`. A watch
//! with `after < compacted` fails with [`StorageError::Compacted`] (`410 Gone`); `after ==
//! compacted` still works, because it needs only revisions `> compacted`. A watch whose backlog
//! is compacted away while it is still replaying is closed.
//!
//! Automatic policy: the writer keeps the last [`SqliteOptions::keep_revisions`] revisions
//! (default 10,000, the same order as etcd's default history in a small cluster) and checks every
//! [`SqliteOptions::compact_every`] writes (default 1,000), so the log stays between 10,000 and
//! 11,000 rows and each compaction deletes about 1,000 rows in a short transaction of its own.
//! A revision budget bounds the disk; a time window would not under a write storm.

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{
    EventKind, ListOptions, ListPage, Memo, Revision, Storage, StorageError, StoredObject,
    WatchEvent,
};

/// How hard a commit is pushed to disk. See the module docs for why `Full` is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: a commit is fsynced before it is acknowledged; survives power loss.
    #[default]
    Full,
    /// `synchronous=NORMAL`: survives a process crash, not a power loss or kernel crash.
    Normal,
}

/// Tuning of [`SqliteStorage`]; `Default` is what the API server uses.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub durability: Durability,
    /// Automatic compaction keeps this many most recent revisions in the change log; 0 = never
    /// compact automatically.
    pub keep_revisions: u64,
    /// Automatic compaction is checked after this many writes.
    pub compact_every: u64,
    /// Reader threads (each with its own connection).
    pub read_connections: usize,
    /// Most write requests committed in one transaction.
    pub max_batch: usize,
    /// Events buffered per watcher before it counts as lagging.
    pub watch_buffer: usize,
    /// Commits buffered in the live fan-out before a slow watcher is closed.
    pub broadcast_capacity: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            durability: Durability::Full,
            keep_revisions: 10_000,
            compact_every: 1_000,
            read_connections: 2,
            max_batch: 256,
            watch_buffer: 1024,
            broadcast_capacity: 1024,
        }
    }
}

/// The SQLite store; a cheap-to-clone handle. The threads stop when the last handle is dropped
/// or [`SqliteStorage::close`] is called.
#[derive(Clone)]
pub struct SqliteStorage {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStorage")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

struct Inner {
    path: PathBuf,
    writes: std_mpsc::Sender<WriteMsg>,
    reads: std_mpsc::Sender<ReadMsg>,
    live: Arc<Mutex<Live>>,
    options: SqliteOptions,
}

/// The live fan-out, and the last revision published on it. Both change together under the
/// mutex; that is what lets a watcher subscribe at an exact revision.
struct Live {
    /// `None` once the writer has stopped, which also closes every subscription.
    sender: Option<broadcast::Sender<Arc<Vec<WatchEvent>>>>,
    revision: Revision,
}

type Reply<T> = oneshot::Sender<Result<T, StorageError>>;

enum WriteOp {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Option<Revision>,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Compact {
        revision: Revision,
    },
}

enum WriteMsg {
    /// `None` in the reply for operations without an object (compaction).
    Op(WriteOp, Reply<Option<StoredObject>>),
    Close(oneshot::Sender<()>),
}

enum ReadMsg {
    Get {
        key: String,
        reply: Reply<Option<StoredObject>>,
    },
    List {
        prefix: String,
        options: ListOptions,
        reply: Reply<ListPage>,
    },
    Changes {
        prefix: String,
        after: Revision,
        limit: usize,
        reply: Reply<ChangesPage>,
    },
    Close,
}

/// A page of the change log.
struct ChangesPage {
    events: Vec<WatchEvent>,
    /// The store revision of the snapshot the page was read at.
    revision: Revision,
    /// No more matching changes up to `revision`.
    complete: bool,
}

/// Change-log rows per backlog read; bounds the memory of a watch that starts far back.
const CHANGES_PAGE: usize = 512;

const KIND_ADDED: i64 = 0;
const KIND_MODIFIED: i64 = 1;
const KIND_DELETED: i64 = 2;

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS objects (
    key TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL,
    create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    rev INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    kind INTEGER NOT NULL,
    value BLOB NOT NULL,
    create_rev INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (name, value) VALUES ('compacted', 0);
";

const CURRENT_REVISION_SQL: &str = "SELECT max(coalesce((SELECT max(rev) FROM changes), 0), \
     (SELECT value FROM meta WHERE name = 'compacted'))";
const COMPACTED_SQL: &str = "SELECT value FROM meta WHERE name = 'compacted'";

fn closed() -> StorageError {
    StorageError::Backend("sqlite store is closed".into())
}

fn sql_err(path: &Path, what: &str, e: rusqlite::Error) -> StorageError {
    StorageError::Backend(format!("sqlite {}: {what}: {e}", path.display()))
}

/// Locks a mutex, ignoring poisoning: the guarded data stays consistent because no code panics
/// while holding these locks, and a store must not turn one bug into a panic in every caller.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The smallest string greater than every string that starts with `prefix`, or `None` when there
/// is none (empty prefix, or only `char::MAX`). UTF-8 byte order (SQLite's `BINARY` collation)
/// is code-point order, so bumping the last code point gives the exclusive upper bound of the
/// prefix range.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(c) = chars.pop() {
        let next = match c {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(c as u32 + 1),
        };
        if let Some(n) = next {
            chars.push(n);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn kind_from_sql(kind: i64) -> EventKind {
    match kind {
        KIND_ADDED => EventKind::Added,
        KIND_MODIFIED => EventKind::Modified,
        _ => EventKind::Deleted,
    }
}

fn rev_to_sql(rev: Revision) -> i64 {
    // Revisions start at 0 and grow by one per write; i64::MAX is out of reach.
    i64::try_from(rev).unwrap_or(i64::MAX)
}

fn rev_from_sql(rev: i64) -> Revision {
    Revision::try_from(rev).unwrap_or(0)
}

fn open_connection(
    path: &Path,
    options: &SqliteOptions,
    writer: bool,
) -> Result<Connection, StorageError> {
    let flags = if writer {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn =
        Connection::open_with_flags(path, flags).map_err(|e| sql_err(path, "cannot open", e))?;
    // Another process holding the file (a second server by mistake, a backup) makes us wait a
    // little instead of failing at once.
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| sql_err(path, "busy_timeout", e))?;
    // The first statement that reads the file: a corrupt or foreign file fails here.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| sql_err(path, "not a usable SQLite database", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StorageError::Backend(format!(
            "sqlite {}: cannot switch to WAL mode (journal_mode is {mode})",
            path.display()
        )));
    }
    let sync = match options.durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA cache_size = -16384;"
    ))
    .map_err(|e| sql_err(path, "pragma", e))?;
    conn.set_prepared_statement_cache_capacity(32);
    if writer {
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| sql_err(path, "user_version", e))?;
        if version > SCHEMA_VERSION {
            return Err(StorageError::Backend(format!(
                "sqlite {}: schema version {version} is newer than this program's \
                 ({SCHEMA_VERSION})",
                path.display()
            )));
        }
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))
        .map_err(|e| sql_err(path, "cannot create schema", e))?;
    } else {
        conn.execute_batch("PRAGMA query_only = 1;")
            .map_err(|e| sql_err(path, "pragma", e))?;
    }
    Ok(conn)
}

impl SqliteStorage {
    /// Opens (creating if needed) the database at `path` with default options.
    ///
    /// Blocks briefly (opening the file, creating the schema); call it at startup.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStorage, StorageError> {
        SqliteStorage::open_with(path, SqliteOptions::default())
    }

    /// Opens (creating if needed) the database at `path`.
    pub fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<SqliteStorage, StorageError> {
        let path = path.as_ref().to_path_buf();
        let writer_conn = open_connection(&path, &options, true)?;
        let (revision, compacted) = {
            let read = |sql: &str| -> Result<Revision, StorageError> {
                writer_conn
                    .query_row(sql, [], |r| r.get::<_, i64>(0))
                    .map(rev_from_sql)
                    .map_err(|e| sql_err(&path, "cannot read revision", e))
            };
            (read(CURRENT_REVISION_SQL)?, read(COMPACTED_SQL)?)
        };
        let mut readers = Vec::new();
        for _ in 0..options.read_connections.max(1) {
            readers.push(open_connection(&path, &options, false)?);
        }

        let (broadcast_tx, _) = broadcast::channel(options.broadcast_capacity.max(1));
        let live = Arc::new(Mutex::new(Live {
            sender: Some(broadcast_tx),
            revision,
        }));

        let (writes, write_rx) = std_mpsc::channel();
        let writer = Writer {
            conn: writer_conn,
            path: path.clone(),
            revision,
            compacted,
            live: live.clone(),
            options: options.clone(),
            writes_since_compaction: 0,
        };
        thread::Builder::new()
            .name("ke-sqlite-writer".into())
            .spawn(move || writer.run(write_rx))
            .map_err(|e| StorageError::Backend(format!("cannot start writer thread: {e}")))?;

        let (reads, read_rx) = std_mpsc::channel();
        let read_rx = Arc::new(Mutex::new(read_rx));
        for (i, conn) in readers.into_iter().enumerate() {
            let rx = read_rx.clone();
            let path = path.clone();
            thread::Builder::new()
                .name(format!("ke-sqlite-reader-{i}"))
                .spawn(move || reader_loop(conn, path, rx))
                .map_err(|e| StorageError::Backend(format!("cannot start reader thread: {e}")))?;
        }

        Ok(SqliteStorage {
            inner: Arc::new(Inner {
                path,
                writes,
                reads,
                live,
                options,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Commits what is queued, stops the threads and closes the database; afterwards every
    /// operation on any clone of this handle fails with `Backend`, and every watch ends.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.writes.send(WriteMsg::Close(tx)).is_ok() {
            let _ = rx.await;
        }
        for _ in 0..self.inner.options.read_connections.max(1) {
            let _ = self.inner.reads.send(ReadMsg::Close);
        }
    }

    async fn write(&self, op: WriteOp) -> Result<Option<StoredObject>, StorageError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .writes
            .send(WriteMsg::Op(op, tx))
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    async fn write_object(&self, op: WriteOp) -> Result<StoredObject, StorageError> {
        self.write(op).await?.ok_or_else(|| {
            StorageError::Backend("sqlite writer returned no object for a write".into())
        })
    }
}

async fn read<T>(
    reads: &std_mpsc::Sender<ReadMsg>,
    msg: impl FnOnce(Reply<T>) -> ReadMsg,
) -> Result<T, StorageError> {
    let (tx, rx) = oneshot::channel();
    reads.send(msg(tx)).map_err(|_| closed())?;
    rx.await.map_err(|_| closed())?
}

async fn read_changes(
    reads: &std_mpsc::Sender<ReadMsg>,
    prefix: &str,
    after: Revision,
) -> Result<ChangesPage, StorageError> {
    read(reads, |reply| ReadMsg::Changes {
        prefix: prefix.to_owned(),
        after,
        limit: CHANGES_PAGE,
        reply,
    })
    .await
}

impl Storage for SqliteStorage {
    async fn get(&self, key: &str) -> Result<Option<StoredObject>, StorageError> {
        read(&self.inner.reads, |reply| ReadMsg::Get {
            key: key.to_owned(),
            reply,
        })
        .await
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListPage, StorageError> {
        read(&self.inner.reads, |reply| ReadMsg::List {
            prefix: prefix.to_owned(),
            options,
            reply,
        })
        .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<StoredObject, StorageError> {
        self.write_object(WriteOp::Create {
            key: key.to_owned(),
            value,
        })
        .await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<StoredObject, StorageError> {
        self.write_object(WriteOp::Update {
            key: key.to_owned(),
            value,
            expected,
        })
        .await
    }

    async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<StoredObject, StorageError> {
        self.write_object(WriteOp::Delete {
            key: key.to_owned(),
            expected,
        })
        .await
    }

    async fn watch(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<mpsc::Receiver<WatchEvent>, StorageError> {
        // Subscribe before reading the backlog: see "no gap" in the module docs.
        let live_rx = {
            let live = lock(&self.inner.live);
            live.sender.as_ref().ok_or_else(closed)?.subscribe()
        };
        // The first page is read here so that a compacted `after` is an error of this call
        // rather than a silently ending stream.
        let first = read_changes(&self.inner.reads, prefix, after).await?;
        let (tx, rx) = mpsc::channel(self.inner.options.watch_buffer.max(1));
        tokio::spawn(forward(
            self.inner.reads.clone(),
            prefix.to_owned(),
            after,
            first,
            live_rx,
            tx,
        ));
        Ok(rx)
    }

    async fn current_revision(&self) -> Result<Revision, StorageError> {
        Ok(lock(&self.inner.live).revision)
    }

    async fn compact(&self, revision: Revision) -> Result<(), StorageError> {
        self.write(WriteOp::Compact { revision }).await.map(drop)
    }
}

/// One watcher: backlog from the change log, then live events. Returning drops `tx`, which
/// ends the caller's receiver.
async fn forward(
    reads: std_mpsc::Sender<ReadMsg>,
    prefix: String,
    after: Revision,
    first: ChangesPage,
    mut live_rx: broadcast::Receiver<Arc<Vec<WatchEvent>>>,
    tx: mpsc::Sender<WatchEvent>,
) {
    // Highest revision delivered or known to hold nothing for us.
    let mut cursor = after;
    let mut page = first;
    loop {
        for event in page.events {
            cursor = event.revision;
            if tx.send(event).await.is_err() {
                return;
            }
        }
        if page.complete {
            cursor = cursor.max(page.revision);
            break;
        }
        page = match read_changes(&reads, &prefix, cursor).await {
            Ok(page) => page,
            // Compacted under us, or the store closed: end the stream, the client re-lists.
            Err(_) => return,
        };
    }
    // Holding the reader pool past the backlog would keep its threads alive after the store
    // is dropped.
    drop(reads);

    loop {
        let batch = tokio::select! {
            received = live_rx.recv() => match received {
                Ok(batch) => batch,
                // Lagged: events would be missing, so the watcher ends instead. Closed: the
                // store stopped.
                Err(_) => return,
            },
            () = tx.closed() => return,
        };
        for event in batch.iter() {
            if event.revision <= cursor || !event.object.key.starts_with(prefix.as_str()) {
                continue;
            }
            cursor = event.revision;
            if tx.send(event.clone()).await.is_err() {
                return;
            }
        }
    }
}

struct Writer {
    conn: Connection,
    path: PathBuf,
    /// Last committed revision.
    revision: Revision,
    compacted: Revision,
    live: Arc<Mutex<Live>>,
    options: SqliteOptions,
    writes_since_compaction: u64,
}

type Pending = (WriteOp, Reply<Option<StoredObject>>);

struct EndWatchesOnDrop(Arc<Mutex<Live>>);

impl Drop for EndWatchesOnDrop {
    fn drop(&mut self) {
        lock(&self.0).sender = None;
    }
}

impl Writer {
    fn run(mut self, rx: std_mpsc::Receiver<WriteMsg>) {
        // Ends every watcher's live stream when the writer stops, also by a panic: a watcher
        // must not wait forever for events that will never come.
        let _end_watches = EndWatchesOnDrop(self.live.clone());
        let max_batch = self.options.max_batch.max(1);
        let mut close_reply = None;
        'outer: while let Ok(first) = rx.recv() {
            let mut batch: Vec<Pending> = Vec::new();
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    WriteMsg::Op(op, reply) => batch.push((op, reply)),
                    WriteMsg::Close(reply) => {
                        close_reply = Some(reply);
                        self.commit_batch(batch);
                        break 'outer;
                    }
                }
                if batch.len() < max_batch {
                    next = rx.try_recv().ok();
                }
            }
            self.commit_batch(batch);
            self.maybe_compact();
        }
        lock(&self.live).sender = None;
        drop(rx);
        if let Err((_, e)) = self.conn.close() {
            tracing::warn!(path = %self.path.display(), error = %e, "closing sqlite store");
        }
        if let Some(reply) = close_reply {
            let _ = reply.send(());
        }
    }

    fn exec(&self, sql: &str) -> Result<(), StorageError> {
        self.conn
            .execute_batch(sql)
            .map_err(|e| sql_err(&self.path, sql, e))
    }

    fn commit_batch(&mut self, batch: Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        let base_revision = self.revision;
        let base_compacted = self.compacted;
        if let Err(e) = self.exec("BEGIN IMMEDIATE") {
            for (_, reply) in batch {
                let _ = reply.send(Err(e.clone_backend()));
            }
            return;
        }
        let mut events = Vec::new();
        let mut results = Vec::with_capacity(batch.len());
        for (op, reply) in batch {
            let result = self.apply_in_savepoint(op, &mut events);
            results.push((result, reply));
        }
        if let Err(e) = self.exec("COMMIT") {
            // The batch is gone as a whole: nobody has seen its revisions, so they may be
            // assigned again.
            let _ = self.conn.execute_batch("ROLLBACK");
            self.revision = base_revision;
            self.compacted = base_compacted;
            tracing::error!(path = %self.path.display(), error = %e, "sqlite commit failed");
            for (_, reply) in results {
                let _ = reply.send(Err(e.clone_backend()));
            }
            return;
        }
        self.writes_since_compaction += events.len() as u64;
        {
            // Publish before answering, so that a caller that got revision R and then asks
            // for the current revision sees at least R.
            let mut live = lock(&self.live);
            live.revision = self.revision;
            if !events.is_empty()
                && let Some(sender) = &live.sender
            {
                // An error only means nobody is watching.
                let _ = sender.send(Arc::new(events));
            }
        }
        for (result, reply) in results {
            let _ = reply.send(result);
        }
    }

    fn apply_in_savepoint(
        &mut self,
        op: WriteOp,
        events: &mut Vec<WatchEvent>,
    ) -> Result<Option<StoredObject>, StorageError> {
        self.exec("SAVEPOINT op")?;
        let revision = self.revision;
        let compacted = self.compacted;
        let result = self.apply(op, events);
        match &result {
            Err(StorageError::Backend(_)) => {
                // Undo whatever part of this request reached the database, keep the rest of
                // the batch.
                // (Events are pushed only after every statement of a request succeeded.)
                self.revision = revision;
                self.compacted = compacted;
                self.exec("ROLLBACK TO op")?;
                self.exec("RELEASE op")?;
            }
            _ => self.exec("RELEASE op")?,
        }
        result
    }

    fn apply(
        &mut self,
        op: WriteOp,
        events: &mut Vec<WatchEvent>,
    ) -> Result<Option<StoredObject>, StorageError> {
        let path = self.path.clone();
        let err = |what: &'static str| move |e: rusqlite::Error| sql_err(&path, what, e);
        match op {
            WriteOp::Create { key, value } => {
                let rev = self.revision + 1;
                let inserted = self
                    .conn
                    .prepare_cached(
                        "INSERT INTO objects (key, value, create_rev, mod_rev) \
                         VALUES (?1, ?2, ?3, ?3) ON CONFLICT (key) DO NOTHING",
                    )
                    .and_then(|mut s| s.execute(params![key, value, rev_to_sql(rev)]))
                    .map_err(err("create"))?;
                if inserted == 0 {
                    return Err(StorageError::AlreadyExists { key });
                }
                let object = StoredObject {
                    key,
                    value: value.into(),
                    create_revision: rev,
                    mod_revision: rev,
                };
                self.log(EventKind::Added, &object)?;
                self.revision = rev;
                events.push(WatchEvent {
                    kind: EventKind::Added,
                    object: object.clone(),
                    revision: rev,
                    memo: Memo::default(),
                });
                Ok(Some(object))
            }
            WriteOp::Update {
                key,
                value,
                expected,
            } => {
                let current = self.current(&key)?;
                let (create_revision, _) = check(&key, current, expected)?;
                let rev = self.revision + 1;
                self.conn
                    .prepare_cached("UPDATE objects SET value = ?2, mod_rev = ?3 WHERE key = ?1")
                    .and_then(|mut s| s.execute(params![key, value, rev_to_sql(rev)]))
                    .map_err(err("update"))?;
                let object = StoredObject {
                    key,
                    value: value.into(),
                    create_revision,
                    mod_revision: rev,
                };
                self.log(EventKind::Modified, &object)?;
                self.revision = rev;
                events.push(WatchEvent {
                    kind: EventKind::Modified,
                    object: object.clone(),
                    revision: rev,
                    memo: Memo::default(),
                });
                Ok(Some(object))
            }
            WriteOp::Delete { key, expected } => {
                let current = self.current(&key)?;
                let (create_revision, value) = check(&key, current, expected)?;
                let rev = self.revision + 1;
                self.conn
                    .prepare_cached("DELETE FROM objects WHERE key = ?1")
                    .and_then(|mut s| s.execute(params![key]))
                    .map_err(err("delete"))?;
                let object = StoredObject {
                    key,
                    value: value.into(),
                    create_revision,
                    mod_revision: rev,
                };
                self.log(EventKind::Deleted, &object)?;
                self.revision = rev;
                events.push(WatchEvent {
                    kind: EventKind::Deleted,
                    object: object.clone(),
                    revision: rev,
                    memo: Memo::default(),
                });
                Ok(Some(object))
            }
            WriteOp::Compact { revision } => {
                if revision > self.revision {
                    return Err(StorageError::Backend(format!(
                        "cannot compact revision {revision}: the current revision is {}",
                        self.revision
                    )));
                }
                self.compact_to(revision)?;
                Ok(None)
            }
        }
    }

    /// The current `(create_rev, mod_rev, value)` of `key`.
    fn current(&self, key: &str) -> Result<Option<(Revision, Revision, Vec<u8>)>, StorageError> {
        self.conn
            .prepare_cached("SELECT create_rev, mod_rev, value FROM objects WHERE key = ?1")
            .and_then(|mut s| {
                s.query_row(params![key], |r| {
                    Ok((
                        rev_from_sql(r.get(0)?),
                        rev_from_sql(r.get(1)?),
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                })
                .optional()
            })
            .map_err(|e| sql_err(&self.path, "read", e))
    }

    fn log(&self, kind: EventKind, object: &StoredObject) -> Result<(), StorageError> {
        let kind = match kind {
            EventKind::Added => KIND_ADDED,
            EventKind::Modified => KIND_MODIFIED,
            EventKind::Deleted => KIND_DELETED,
        };
        self.conn
            .prepare_cached(
                "INSERT INTO changes (rev, key, kind, value, create_rev) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    rev_to_sql(object.mod_revision),
                    object.key,
                    kind,
                    &object.value[..],
                    rev_to_sql(object.create_revision),
                ])
            })
            .map(drop)
            .map_err(|e| sql_err(&self.path, "append to change log", e))
    }

    fn compact_to(&mut self, revision: Revision) -> Result<(), StorageError> {
        if revision <= self.compacted {
            return Ok(());
        }
        self.conn
            .prepare_cached("DELETE FROM changes WHERE rev <= ?1")
            .and_then(|mut s| s.execute(params![rev_to_sql(revision)]))
            .and_then(|_| {
                self.conn
                    .prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'compacted'")
                    .and_then(|mut s| s.execute(params![rev_to_sql(revision)]))
            })
            .map_err(|e| sql_err(&self.path, "compact", e))?;
        self.compacted = revision;
        Ok(())
    }

    /// The automatic policy (module docs), in its own short transaction.
    fn maybe_compact(&mut self) {
        let keep = self.options.keep_revisions;
        if keep == 0 || self.writes_since_compaction < self.options.compact_every.max(1) {
            return;
        }
        self.writes_since_compaction = 0;
        let target = self.revision.saturating_sub(keep);
        if target <= self.compacted {
            return;
        }
        let before = self.compacted;
        let result = self
            .exec("BEGIN IMMEDIATE")
            .and_then(|()| self.compact_to(target))
            .and_then(|()| self.exec("COMMIT"));
        if let Err(e) = result {
            let _ = self.conn.execute_batch("ROLLBACK");
            self.compacted = before;
            tracing::warn!(path = %self.path.display(), error = %e, "automatic compaction failed");
        }
    }
}

/// Applies the precondition; returns the current `(create_rev, value)`.
fn check(
    key: &str,
    current: Option<(Revision, Revision, Vec<u8>)>,
    expected: Option<Revision>,
) -> Result<(Revision, Vec<u8>), StorageError> {
    let Some((create_rev, mod_rev, value)) = current else {
        return Err(StorageError::NotFound {
            key: key.to_owned(),
        });
    };
    match expected {
        Some(expected) if expected != mod_rev => Err(StorageError::Conflict {
            key: key.to_owned(),
            expected,
            current: mod_rev,
        }),
        _ => Ok((create_rev, value)),
    }
}

impl StorageError {
    /// Backend errors are answered to every request of a failed batch; the enum is not `Clone`
    /// (lead's type), and only the `Backend` variant occurs here.
    fn clone_backend(&self) -> StorageError {
        StorageError::Backend(self.to_string())
    }
}

fn reader_loop(mut conn: Connection, path: PathBuf, rx: Arc<Mutex<std_mpsc::Receiver<ReadMsg>>>) {
    loop {
        // The lock is held only while waiting for the next request; the read runs unlocked so
        // the other readers can take the following ones.
        let msg = match lock(&rx).recv() {
            Ok(msg) => msg,
            Err(_) => break,
        };
        match msg {
            ReadMsg::Get { key, reply } => {
                let _ = reply.send(get(&conn, &path, &key));
            }
            ReadMsg::List {
                prefix,
                options,
                reply,
            } => {
                let _ = reply.send(list(&mut conn, &path, &prefix, options));
            }
            ReadMsg::Changes {
                prefix,
                after,
                limit,
                reply,
            } => {
                let _ = reply.send(changes(&mut conn, &path, &prefix, after, limit));
            }
            ReadMsg::Close => break,
        }
    }
    let _ = conn.close();
}

fn get(conn: &Connection, path: &Path, key: &str) -> Result<Option<StoredObject>, StorageError> {
    conn.prepare_cached("SELECT value, create_rev, mod_rev FROM objects WHERE key = ?1")
        .and_then(|mut s| {
            s.query_row(params![key], |r| {
                Ok(StoredObject {
                    key: key.to_owned(),
                    value: r.get::<_, Vec<u8>>(0)?.into(),
                    create_revision: rev_from_sql(r.get(1)?),
                    mod_revision: rev_from_sql(r.get(2)?),
                })
            })
            .optional()
        })
        .map_err(|e| sql_err(path, "get", e))
}

fn list(
    conn: &mut Connection,
    path: &Path,
    prefix: &str,
    options: ListOptions,
) -> Result<ListPage, StorageError> {
    let err = |e| sql_err(path, "list", e);
    // Kubernetes treats limit=0 as "no limit".
    let limit = options.limit.filter(|&l| l > 0);
    let (lower_op, lower) = match &options.start_after {
        Some(after) if after.as_str() >= prefix => (">", after.as_str()),
        _ => (">=", prefix),
    };
    let upper = prefix_end(prefix);
    let sql = format!(
        "SELECT key, value, create_rev, mod_rev FROM objects WHERE key {lower_op} ?1 {} \
         ORDER BY key LIMIT ?3",
        if upper.is_some() {
            "AND key < ?2"
        } else {
            "AND ?2 IS NULL"
        }
    );
    // One more row than asked tells whether another page follows.
    let fetch = limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX - 1) + 1);

    let tx = conn.transaction().map_err(err)?;
    let revision = tx
        .query_row(CURRENT_REVISION_SQL, [], |r| r.get::<_, i64>(0))
        .map(rev_from_sql)
        .map_err(err)?;
    let mut items = {
        let mut stmt = tx.prepare_cached(&sql).map_err(err)?;
        let rows = stmt
            .query_map(params![lower, upper, fetch], |r| {
                Ok(StoredObject {
                    key: r.get(0)?,
                    value: r.get::<_, Vec<u8>>(1)?.into(),
                    create_revision: rev_from_sql(r.get(2)?),
                    mod_revision: rev_from_sql(r.get(3)?),
                })
            })
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)?
    };
    tx.commit().map_err(err)?;

    let continue_after = match limit {
        Some(l) if items.len() > l => {
            items.truncate(l);
            items.last().map(|o| o.key.clone())
        }
        _ => None,
    };
    Ok(ListPage {
        items,
        revision,
        continue_after,
    })
}

fn changes(
    conn: &mut Connection,
    path: &Path,
    prefix: &str,
    after: Revision,
    limit: usize,
) -> Result<ChangesPage, StorageError> {
    let err = |e| sql_err(path, "read change log", e);
    let upper = prefix_end(prefix);
    // The log is scanned in revision order and filtered by key: the page is bounded by the
    // revisions retained (compaction), and a key index would cost every write.
    let sql = format!(
        "SELECT rev, key, kind, value, create_rev FROM changes \
         WHERE rev > ?1 AND key >= ?2 {} ORDER BY rev LIMIT ?4",
        if upper.is_some() {
            "AND key < ?3"
        } else {
            "AND ?3 IS NULL"
        }
    );
    let fetch = i64::try_from(limit).unwrap_or(i64::MAX);

    let tx = conn.transaction().map_err(err)?;
    let compacted = tx
        .query_row(COMPACTED_SQL, [], |r| r.get::<_, i64>(0))
        .map(rev_from_sql)
        .map_err(err)?;
    if after < compacted {
        return Err(StorageError::Compacted {
            requested: after,
            oldest: compacted,
        });
    }
    let revision = tx
        .query_row(CURRENT_REVISION_SQL, [], |r| r.get::<_, i64>(0))
        .map(rev_from_sql)
        .map_err(err)?;
    let events = {
        let mut stmt = tx.prepare_cached(&sql).map_err(err)?;
        let rows = stmt
            .query_map(params![rev_to_sql(after), prefix, upper, fetch], |r| {
                let revision = rev_from_sql(r.get(0)?);
                Ok(WatchEvent {
                    kind: kind_from_sql(r.get(2)?),
                    object: StoredObject {
                        key: r.get(1)?,
                        value: r.get::<_, Vec<u8>>(3)?.into(),
                        create_revision: rev_from_sql(r.get(4)?),
                        mod_revision: revision,
                    },
                    revision,
                    memo: Memo::default(),
                })
            })
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)?
    };
    tx.commit().map_err(err)?;
    Ok(ChangesPage {
        complete: events.len() < limit,
        events,
        revision,
    })
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_exclusive_upper_bound() {
        assert_eq!(prefix_end("/a/"), Some("/a0".to_owned()));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        assert_eq!(prefix_end("a\u{10FFFF}"), Some("b".to_owned()));
        assert_eq!(prefix_end("a\u{D7FF}"), Some("a\u{E000}".to_owned()));
        assert_eq!(prefix_end("é"), Some("ê".to_owned()));
    }
}
