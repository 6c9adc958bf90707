//! Topics subscribed at run time, kept in upstream's `sub_topics` table so they are subscribed
//! again after a restart.

use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;

/// The `sub_topics` table, or nothing (tests, or no database).
#[derive(Clone, Default)]
pub struct SubTopics {
    connection: Option<Arc<Mutex<Connection>>>,
}

impl SubTopics {
    /// Topics in the table of `connection` (which must have it: metamanager creates it when
    /// the eventbus is enabled).
    pub fn new(connection: Connection) -> SubTopics {
        SubTopics {
            connection: Some(Arc::new(Mutex::new(connection))),
        }
    }

    /// Topics that are not kept anywhere.
    pub fn in_memory() -> SubTopics {
        SubTopics::default()
    }

    fn with<T: Default>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        match &self.connection {
            Some(connection) => f(&connection.lock().unwrap_or_else(PoisonError::into_inner)),
            None => Ok(T::default()),
        }
    }

    pub fn load(&self) -> rusqlite::Result<Vec<String>> {
        self.with(|c| {
            let mut statement = c.prepare("SELECT topic FROM sub_topics ORDER BY topic")?;
            let topics = statement.query_map([], |row| row.get(0))?;
            topics.collect()
        })
    }

    pub fn insert(&self, topic: &str) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO sub_topics (topic) VALUES (?1)",
                [topic],
            )
            .map(drop)
        })
    }

    pub fn remove(&self, topic: &str) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM sub_topics WHERE topic = ?1", [topic])
                .map(drop)
        })
    }
}
