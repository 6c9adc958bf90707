//! `kubectl logs` from the CRI log file, as kubelet reads it: lines are
//! `<RFC 3339 time> <stream> <P|F> <content>`, a `P` (partial) line continues in the next one.
//! Options: `follow`, `tailLines`, `sinceSeconds`/`sinceTime`, `timestamps`, `limitBytes`,
//! `previous` (the container before the current one).

use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ke_cri::CriClient;
use ke_stream::Session;
use ke_stream::request::KubeletRequest;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::containers::{self, Refusal};

/// How often a followed log is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(50);
/// How often a followed log checks whether its container still runs.
const RUNNING_CHECK: Duration = Duration::from_secs(1);
const READ_CHUNK: usize = 32 * 1024;
/// Output per read pass (see [`pass`]).
const PASS_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    pub tail_lines: Option<u64>,
    pub since: Option<OffsetDateTime>,
    pub timestamps: bool,
    pub limit_bytes: Option<u64>,
    pub previous: bool,
}

impl LogOptions {
    pub fn from_request(request: &KubeletRequest, now: OffsetDateTime) -> Result<Self, Refusal> {
        let number = |name: &str| -> Result<Option<u64>, Refusal> {
            request
                .param(name)
                .map(|v| {
                    v.parse::<i64>()
                        .ok()
                        .and_then(|n| u64::try_from(n).ok())
                        .ok_or_else(|| Refusal::bad_request(format!("{name}={v:?}: not a count")))
                })
                .transpose()
        };
        let since = match (request.param("sinceSeconds"), request.param("sinceTime")) {
            (Some(v), _) => {
                let seconds = number("sinceSeconds")?.unwrap_or_default();
                let since = i64::try_from(seconds)
                    .ok()
                    .and_then(|s| now.checked_sub(time::Duration::seconds(s)));
                Some(since.ok_or_else(|| {
                    Refusal::bad_request(format!("sinceSeconds={v:?}: too far back"))
                })?)
            }
            (None, Some(t)) => Some(OffsetDateTime::parse(t, &Rfc3339).map_err(|_| {
                Refusal::bad_request(format!("sinceTime={t:?}: not an RFC 3339 time"))
            })?),
            (None, None) => None,
        };
        Ok(LogOptions {
            follow: request.flag("follow"),
            tail_lines: number("tailLines")?,
            since,
            timestamps: request.flag("timestamps"),
            limit_bytes: number("limitBytes")?,
            previous: request.flag("previous"),
        })
    }
}

/// One line of a CRI log file.
#[derive(Debug, PartialEq)]
struct Entry<'a> {
    time: &'a str,
    partial: bool,
    content: &'a [u8],
}

fn parse_line(line: &[u8]) -> Option<Entry<'_>> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or_default();
    Some(Entry {
        time,
        partial: tag.first() == Some(&b'P'),
        content,
    })
}

/// Turns CRI lines into what the user reads.
struct Renderer {
    options: LogOptions,
    written: u64,
}

impl Renderer {
    /// Appends `line` (without its newline) as the user sees it; false once `limitBytes` is
    /// reached.
    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(entry) = parse_line(line) else {
            return true;
        };
        if let Some(since) = self.options.since
            && OffsetDateTime::parse(entry.time, &Rfc3339).is_ok_and(|t| t < since)
        {
            return true;
        }
        let start = out.len();
        if self.options.timestamps {
            match OffsetDateTime::parse(entry.time, &Rfc3339) {
                Ok(time) => out.extend_from_slice(fixed_nanos(time).as_bytes()),
                Err(_) => out.extend_from_slice(entry.time.as_bytes()),
            }
            out.push(b' ');
        }
        out.extend_from_slice(entry.content);
        if !entry.partial {
            out.push(b'\n');
        }
        let added = (out.len() - start) as u64;
        if let Some(limit) = self.options.limit_bytes {
            let room = limit.saturating_sub(self.written);
            if added >= room {
                out.truncate(start + room as usize);
                self.written = limit;
                return false;
            }
        }
        self.written += added;
        true
    }
}

/// kubelet's `RFC3339NanoFixed` (always nine fraction digits, UTC), which `--timestamps`
/// prints; the runtime writes `RFC3339Nano`, trailing zeros dropped.
fn fixed_nanos(time: OffsetDateTime) -> String {
    let t = time.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

/// Where the last `lines` lines of `file` begin.
fn tail_offset(file: &mut std::fs::File, lines: u64) -> std::io::Result<u64> {
    let size = file.metadata()?.len();
    if lines == 0 {
        return Ok(size);
    }
    let mut end = size;
    let mut newlines = 0u64;
    let mut block = vec![0u8; 64 * 1024];
    // The file's last byte is a newline ending the last line; it does not start one.
    let mut skip_last = true;
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        for (i, &byte) in chunk.iter().enumerate().rev() {
            if byte != b'\n' {
                skip_last = false;
                continue;
            }
            if std::mem::take(&mut skip_last) {
                continue;
            }
            newlines += 1;
            if newlines == lines {
                return Ok(start + i as u64 + 1);
            }
        }
        end = start;
    }
    Ok(0)
}

/// Streams the log the request asks for into `session`; a refusal is for the user.
pub async fn serve(
    cri: &CriClient,
    request: &KubeletRequest,
    session: &Session,
) -> Result<(), Refusal> {
    let options = LogOptions::from_request(request, OffsetDateTime::now_utc())?;
    let container = containers::container(cri, request, options.previous).await?;
    let status = containers::status(cri, &container.id).await?;
    if status.log_path.is_empty() {
        return Err(Refusal::not_found(format!(
            "container \"{}\" has no log file",
            request.container
        )));
    }
    let path = PathBuf::from(&status.log_path);
    let follow = options.follow && !options.previous;
    let mut reader = LogReader::open(&path, options.tail_lines).map_err(|e| {
        Refusal::not_found(format!("log of container \"{}\": {e}", request.container))
    })?;
    let mut renderer = Renderer {
        options,
        written: 0,
    };
    let mut last_check = tokio::time::Instant::now();
    loop {
        let pass = pass(&mut reader, &mut renderer, session, &path).await?;
        if pass == Pass::Done {
            return Ok(());
        }
        if pass == Pass::More {
            continue;
        }
        if !follow {
            return Ok(());
        }
        if reader.rotated() {
            // Lines may have gone to the old file after our last read: drain it, then go on
            // with the new one.
            if pass_to_end(&mut reader, &mut renderer, session, &path).await? == Pass::Done {
                return Ok(());
            }
            match reader.reopen() {
                Ok(next) => reader = next,
                Err(_) => tokio::time::sleep(FOLLOW_POLL).await,
            }
            continue;
        }
        if last_check.elapsed() >= RUNNING_CHECK {
            last_check = tokio::time::Instant::now();
            if !containers::is_running(cri, &container.id).await {
                // What it wrote before it stopped, then the end.
                pass_to_end(&mut reader, &mut renderer, session, &path).await?;
                return Ok(());
            }
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

/// How a read pass ended.
#[derive(Debug, PartialEq, Eq)]
enum Pass {
    /// At the end of the file for now.
    End,
    /// The pass's budget is used up; more is there.
    More,
    /// `limitBytes` reached, or the peer went away.
    Done,
}

/// Reads and sends up to [`PASS_BYTES`] of output, so a fast writer cannot keep one pass going
/// (and memory growing) forever and a closed session is noticed between passes.
async fn pass(
    reader: &mut LogReader,
    renderer: &mut Renderer,
    session: &Session,
    path: &Path,
) -> Result<Pass, Refusal> {
    let mut out = Vec::new();
    let mut limit_reached = false;
    let at_end = reader
        .read_lines(|line| {
            if !renderer.line(line, &mut out) {
                limit_reached = true;
                return false;
            }
            out.len() < PASS_BYTES
        })
        .map_err(|e| Refusal::runtime(format!("reading {}: {e}", path.display())))?;
    if !out.is_empty() && session.send(&out).await.is_err() {
        return Ok(Pass::Done);
    }
    if limit_reached || session.sender().is_closed() {
        return Ok(Pass::Done);
    }
    Ok(if at_end { Pass::End } else { Pass::More })
}

async fn pass_to_end(
    reader: &mut LogReader,
    renderer: &mut Renderer,
    session: &Session,
    path: &Path,
) -> Result<Pass, Refusal> {
    loop {
        match pass(reader, renderer, session, path).await? {
            Pass::More => continue,
            other => return Ok(other),
        }
    }
}

/// Whole lines from a growing file.
struct LogReader {
    path: PathBuf,
    file: std::fs::File,
    /// Bytes read but not yet ended by a newline.
    pending: Vec<u8>,
}

impl LogReader {
    fn open(path: &Path, tail_lines: Option<u64>) -> std::io::Result<LogReader> {
        let mut file = std::fs::File::open(path)?;
        if let Some(lines) = tail_lines {
            let offset = tail_offset(&mut file, lines)?;
            file.seek(SeekFrom::Start(offset))?;
        }
        Ok(LogReader {
            path: path.to_owned(),
            file,
            pending: Vec::new(),
        })
    }

    /// The file now at the path, read from its start; a partial line read from the old one is
    /// carried over.
    fn reopen(&mut self) -> std::io::Result<LogReader> {
        let mut next = LogReader::open(&self.path, None)?;
        next.pending = std::mem::take(&mut self.pending);
        Ok(next)
    }

    /// Reads what is there, calling `line` per whole line until it returns false. True when the
    /// end of the file was reached.
    fn read_lines(&mut self, mut line: impl FnMut(&[u8]) -> bool) -> std::io::Result<bool> {
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            // Whole lines read earlier (a pass stopped before them) come first.
            let mut start = 0;
            let mut stopped = false;
            while let Some(end) = self.pending[start..].iter().position(|&b| b == b'\n') {
                let go_on = line(&self.pending[start..start + end]);
                start += end + 1;
                if !go_on {
                    stopped = true;
                    break;
                }
            }
            self.pending.drain(..start);
            if stopped {
                return Ok(false);
            }
            let n = self.file.read(&mut chunk)?;
            if n == 0 {
                return Ok(true);
            }
            self.pending.extend_from_slice(&chunk[..n]);
        }
    }

    /// Whether the path now names another file (the runtime reopened it after a rotation).
    fn rotated(&self) -> bool {
        let (Ok(open), Ok(now)) = (self.file.metadata(), std::fs::metadata(&self.path)) else {
            return false;
        };
        (open.dev(), open.ino()) != (now.dev(), now.ino())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    const LOG: &str = "2026-12-01T10:00:00.000000001Z stdout F one\n\
                       2026-12-01T10:00:01Z stderr F two\n\
                       2026-12-01T10:00:02.5Z stdout P thr\n\
                       2026-12-01T10:00:02.6Z stdout F ee\n";

    fn render(options: LogOptions) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, LOG).unwrap();
        let mut reader = LogReader::open(&path, options.tail_lines).unwrap();
        let mut renderer = Renderer {
            options,
            written: 0,
        };
        let mut out = Vec::new();
        reader
            .read_lines(|line| renderer.line(line, &mut out))
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn renders_as_kubelet() {
        assert_eq!(render(LogOptions::default()), "one\ntwo\nthree\n");
        let timestamps = LogOptions {
            timestamps: true,
            tail_lines: Some(3),
            ..Default::default()
        };
        assert_eq!(
            render(timestamps),
            "2026-12-01T10:00:01.000000000Z two\n2026-12-01T10:00:02.500000000Z thr\
             2026-12-01T10:00:02.600000000Z ee\n"
        );
        let tail = |n| {
            render(LogOptions {
                tail_lines: Some(n),
                ..Default::default()
            })
        };
        assert_eq!(tail(0), "");
        assert_eq!(tail(1), "ee\n");
        assert_eq!(tail(4), "one\ntwo\nthree\n");
        assert_eq!(tail(100), "one\ntwo\nthree\n");
        let since = LogOptions {
            since: Some(OffsetDateTime::parse("2026-12-01T10:00:01Z", &Rfc3339).unwrap()),
            ..Default::default()
        };
        assert_eq!(render(since), "two\nthree\n");
        let limit = LogOptions {
            limit_bytes: Some(6),
            ..Default::default()
        };
        assert_eq!(render(limit), "one\ntw");
    }

    #[test]
    fn a_pass_that_stops_early_resumes_at_the_next_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, LOG).unwrap();
        let mut reader = LogReader::open(&path, None).unwrap();
        let mut seen = Vec::new();
        // One line per pass, as a pass whose budget is used up after each line.
        while !reader
            .read_lines(|l| {
                seen.push(String::from_utf8_lossy(l).into_owned());
                false
            })
            .unwrap()
        {}
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert!(
            seen[0].ends_with("one") && seen[3].ends_with("ee"),
            "{seen:?}"
        );
    }

    #[test]
    fn options_from_the_query() {
        let request = KubeletRequest::parse(
            "/containerLogs/a/b/c",
            "follow=true&tailLines=10&timestamps=1&sinceSeconds=60",
        )
        .unwrap();
        let now = OffsetDateTime::parse("2026-12-01T10:00:00Z", &Rfc3339).unwrap();
        let options = LogOptions::from_request(&request, now).unwrap();
        assert!(options.follow && options.timestamps && !options.previous);
        assert_eq!(options.tail_lines, Some(10));
        assert_eq!(options.since, Some(now - Duration::from_secs(60)));
        for bad in [
            "tailLines=x",
            "limitBytes=-1",
            "sinceTime=yesterday",
            "sinceSeconds=999999999999",
        ] {
            let request = KubeletRequest::parse("/containerLogs/a/b/c", bad).unwrap();
            assert_eq!(
                LogOptions::from_request(&request, now).unwrap_err().status,
                400
            );
        }
    }

    #[test]
    fn a_partial_write_waits_for_its_newline_and_rotation_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(b"2026-12-01T10:00:00Z stdout F a\n2026-12-01T10:00:00Z stdout F b")
            .unwrap();
        let mut reader = LogReader::open(&path, None).unwrap();
        let mut lines = Vec::new();
        reader
            .read_lines(|l| {
                lines.push(l.to_vec());
                true
            })
            .unwrap();
        assert_eq!(lines.len(), 1);
        file.write_all(b"\n").unwrap();
        reader
            .read_lines(|l| {
                lines.push(l.to_vec());
                true
            })
            .unwrap();
        assert_eq!(lines.len(), 2);
        assert!(!reader.rotated());
        std::fs::rename(&path, dir.path().join("0.log.1")).unwrap();
        std::fs::write(&path, "").unwrap();
        assert!(reader.rotated());
    }
}
