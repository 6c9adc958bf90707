//! Container log rotation, as kubelet's container log manager does it: a log over
//! `containerLogMaxSize` is renamed with a timestamp, the runtime reopens a fresh file
//! (`ReopenContainerLog`), and only `containerLogMaxFiles` files (the live one included) are
//! kept. An edge node's disk is small: a chatty container must not fill it.

use std::io;
use std::path::{Path, PathBuf};

use crate::runtime::Runtime;

#[derive(Debug, Clone, Copy)]
pub struct LogPolicy {
    pub max_size: u64,
    pub max_files: usize,
}

impl LogPolicy {
    /// Rotates the logs of the running containers `ids` that grew too big.
    pub async fn rotate(&self, runtime: &Runtime, ids: &[String]) {
        for id in ids {
            let Ok(Some(status)) = runtime.container_status(id).await else {
                continue;
            };
            let log = PathBuf::from(&status.log_path);
            if status.log_path.is_empty() || !self.too_big(&log) {
                continue;
            }
            match rotate_file(&log, self.max_files) {
                Ok(()) => {
                    if let Err(err) = runtime.reopen_log(id).await {
                        tracing::warn!(container = %id, error = %err, "container log not reopened");
                    }
                }
                Err(err) => {
                    tracing::warn!(path = %log.display(), error = %err, "container log not rotated");
                }
            }
        }
    }

    fn too_big(&self, log: &Path) -> bool {
        std::fs::metadata(log).is_ok_and(|m| m.len() > self.max_size)
    }
}

/// The end of a CRI log file as a termination message: the last 80 lines, at most 2 KiB, of
/// what the container wrote (the CRI prefix `<time> <stream> <tag> ` stripped), as kubelet's
/// `FallbackToLogsOnError` reports.
pub fn tail(log: &Path) -> String {
    const MAX_LINES: usize = 80;
    const MAX_BYTES: usize = 2048;
    use std::io::{Read as _, Seek as _, SeekFrom};
    // Only the end is needed; a log may be megabytes.
    const READ: u64 = 64 * 1024;
    let mut text = Vec::new();
    let read = std::fs::File::open(log).and_then(|mut file| {
        let size = file.metadata()?.len();
        file.seek(SeekFrom::Start(size.saturating_sub(READ)))?;
        file.read_to_end(&mut text)
    });
    if read.is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|line| line.splitn(4, ' ').nth(3))
        .collect();
    let mut message = lines[lines.len().saturating_sub(MAX_LINES)..].join("\n");
    if message.len() > MAX_BYTES {
        let mut cut = message.len() - MAX_BYTES;
        while !message.is_char_boundary(cut) {
            cut += 1;
        }
        message = message.split_off(cut);
    }
    message
}

/// Renames `log` to `<log>.<UTC timestamp>` and removes the oldest rotated files beyond
/// `max_files - 1`.
fn rotate_file(log: &Path, max_files: usize) -> io::Result<()> {
    let stamp = time::OffsetDateTime::now_utc();
    let rotated = PathBuf::from(format!(
        "{}.{:04}{:02}{:02}-{:02}{:02}{:02}.{:09}",
        log.display(),
        stamp.year(),
        u8::from(stamp.month()),
        stamp.day(),
        stamp.hour(),
        stamp.minute(),
        stamp.second(),
        stamp.nanosecond()
    ));
    std::fs::rename(log, &rotated)?;
    let (Some(dir), Some(name)) = (log.parent(), log.file_name()) else {
        return Ok(());
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut old: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    // Timestamps sort in time order.
    old.sort();
    let keep = max_files.saturating_sub(1).max(1);
    for stale in old.iter().take(old.len().saturating_sub(keep)) {
        std::fs::remove_file(stale)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_of_a_cri_log_drops_the_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        let lines: String = (0..100)
            .map(|i| format!("2026-12-01T10:00:00.000000000Z stderr F line {i}\n"))
            .collect();
        std::fs::write(&log, lines).unwrap();
        let tail = tail(&log);
        assert!(tail.starts_with("line 20\n"), "{tail}");
        assert!(tail.ends_with("line 99"), "{tail}");
        assert_eq!(super::tail(&dir.path().join("missing")), "");
    }

    #[test]
    fn rotation_keeps_at_most_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        for round in 0..4 {
            std::fs::write(&log, format!("round {round}\n")).unwrap();
            rotate_file(&log, 3).unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2, "{names:?}");
        let newest = std::fs::read_to_string(dir.path().join(&names[1])).unwrap();
        assert_eq!(newest, "round 3\n");
        assert!(!log.exists());
    }
}
