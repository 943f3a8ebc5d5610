//! Following a growing JSON-lines log (issue 16 item 8: Suricata EVE, Falco, OpenCanary,
//! Cowrie): every complete new line goes through the same path as `vacsine agent ingest`
//! ([`crate::respond::ingest`]: parse, decide, apply, record, queue).
//!
//! The position is kept per file in the agent's data dir (`tail/<hash of the path>.json`):
//! device and inode, the offset after the last line whose outcome is stored, and a hash of
//! the file's first bytes. It is written (temporary file, fsync, rename) only after the
//! lines before it are in the response store, so a crash re-reads at most the last lines,
//! which the store dedupes by event id: at least once into the store, exactly once in effect.
//!
//! Rotation: when the path names another inode (rename + new file), the old file is read to
//! its end first, one poll later (its last line even without a newline: its writer has moved
//! on), then the new file from its start. After a restart, a saved inode that is no longer at the path is
//! looked for among the path's siblings (`eve.json.1`, …) and read to its end first.
//! Truncation (copytruncate, or a file replaced in place): a file shorter than the offset, or
//! whose first bytes no longer hash the same, is read from its start.

use crate::respond::{ingest, IngestReport};
use anyhow::Context;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use vacsine_events::Format;

/// How often a followed file is looked at (`ingest --follow`, the agent's decoy logs): a
/// look is two `stat`s when nothing is new, and this delay is most of the time from a line
/// written to its ban in effect (200 ms gave p50 158 ms; `bench/mitigate.sh`).
pub const POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Bytes hashed at the start of a file to tell it from another with the same inode.
const HEAD: u64 = 256;
/// At most this much is read and fed at once (then the next round goes on).
const CHUNK: u64 = 4 << 20;

/// Where a followed file's position is kept.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub offset: u64,
    /// Length hashed (the file's first `min(256, offset)` bytes, as read) and their
    /// SHA-256, hex.
    pub head_len: u64,
    pub head: String,
}

/// The position file of `file` in the data dir `data`.
pub fn position_path(data: &Path, file: &Path) -> PathBuf {
    let h = Sha256::digest(file.as_os_str().as_encoded_bytes());
    data.join("tail")
        .join(format!("{}.json", &hex::encode(h)[..16]))
}

fn load(p: &Path) -> Option<Position> {
    let b = std::fs::read(p).ok()?;
    serde_json::from_slice(&b).ok()
}

fn save(p: &Path, pos: &Position) -> anyhow::Result<()> {
    let dir = p.parent().expect("position paths have a parent");
    vacsine_private::private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    vacsine_private::write_private(p, &serde_json::to_vec(pos)?)
        .with_context(|| format!("writing {}", p.display()))
}

/// The first `n` bytes of `f`, or `None` when it is shorter.
fn head_of(f: &mut File, n: u64) -> std::io::Result<Option<Vec<u8>>> {
    f.seek(SeekFrom::Start(0))?;
    let mut b = Vec::with_capacity(n as usize);
    Read::by_ref(f).take(n).read_to_end(&mut b)?;
    Ok((b.len() as u64 == n).then_some(b))
}

fn hash(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// What one feed read: lines from byte `offset` (the record lines in the report's errors
/// count from there), of the file rotated away when `rotated`.
#[derive(Debug, serde::Serialize)]
pub struct Fed {
    pub offset: u64,
    pub rotated: bool,
    #[serde(flatten)]
    pub report: IngestReport,
}

struct Current {
    file: File,
    dev: u64,
    ino: u64,
    offset: u64,
    /// The file's first `min(256, offset)` bytes, as read (not as they are now: a file
    /// truncated and written again between a read and the save must not match).
    head: Vec<u8>,
}

/// One followed file.
pub struct Follower {
    data: PathBuf,
    path: PathBuf,
    state: PathBuf,
    format: Option<Format>,
    cur: Option<Current>,
    /// The rotated file (device, inode) in its last round.
    draining: Option<(u64, u64)>,
}

impl Follower {
    /// `path` should be absolute (it names the position file).
    pub fn new(data: &Path, path: &Path, format: Option<Format>) -> Follower {
        Follower {
            data: data.to_path_buf(),
            path: path.to_path_buf(),
            state: position_path(data, path),
            format,
            cur: None,
            draining: None,
        }
    }

    /// The saved position, if any.
    pub fn position(&self) -> Option<Position> {
        load(&self.state)
    }

    /// One round: read what is new (and finish a rotated file), feed it, save the position.
    /// Returns the reports of what was fed (none when nothing was new).
    pub async fn step(&mut self) -> anyhow::Result<Vec<Fed>> {
        let mut reports = Vec::new();
        if self.cur.is_none() {
            self.resume()?;
        }
        loop {
            let at_path = std::fs::metadata(&self.path).ok();
            let Some(cur) = self.cur.as_mut() else {
                if at_path.is_some() {
                    self.open_path(0)?;
                    continue;
                }
                return Ok(reports);
            };
            let rotated = at_path
                .as_ref()
                .is_some_and(|m| (m.dev(), m.ino()) != (cur.dev, cur.ino));
            if !rotated {
                // Truncated or replaced in place: from the start.
                let len = cur.file.metadata()?.len();
                let head_changed = !cur.head.is_empty()
                    && head_of(&mut cur.file, cur.head.len() as u64)?.as_ref() != Some(&cur.head);
                if len < cur.offset || head_changed {
                    tracing::warn!(file = %self.path.display(), "truncated or replaced: read from its start");
                    cur.offset = 0;
                    cur.head.clear();
                }
            }
            // A rotated file gets one more round (its writer may append a last line before
            // it reopens the path), then is read to its end, its last line with or without
            // a newline.
            let id = (cur.dev, cur.ino);
            let finish = rotated && self.draining == Some(id);
            if rotated {
                self.draining = Some(id);
            }
            let fed = self.feed(finish).await?;
            let more = fed.as_ref().is_some_and(|r| r.1);
            if let Some((r, _)) = fed {
                reports.push(r);
            }
            if more {
                continue;
            }
            if finish {
                // The old file is read to its end: the new one from its start.
                self.draining = None;
                self.open_path(0)?;
                continue;
            }
            return Ok(reports);
        }
    }

    /// At the start: the saved position's file (at the path or a rotated sibling), else the
    /// path from its start.
    fn resume(&mut self) -> anyhow::Result<()> {
        let Some(p) = load(&self.state) else {
            if self.path.exists() {
                self.open_path(0)?;
            }
            return Ok(());
        };
        let same = |m: &std::fs::Metadata| (m.dev(), m.ino()) == (p.dev, p.ino);
        let mut candidates = vec![self.path.clone()];
        if let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) {
            if let Ok(rd) = std::fs::read_dir(dir) {
                for e in rd.flatten() {
                    let n = e.file_name();
                    if n != name && n.as_encoded_bytes().starts_with(name.as_encoded_bytes()) {
                        candidates.push(e.path());
                    }
                }
            }
        }
        for c in candidates {
            let Ok(mut f) = File::open(&c) else { continue };
            let m = f.metadata()?;
            if !same(&m) {
                continue;
            }
            let head = head_of(&mut f, p.head_len)?.filter(|h| hash(h) == p.head);
            let intact = m.len() >= p.offset && p.head_len == p.offset.min(HEAD);
            let (offset, head) = match head {
                Some(h) if intact => (p.offset, h),
                _ => (0, Vec::new()),
            };
            self.cur = Some(Current {
                file: f,
                dev: m.dev(),
                ino: m.ino(),
                offset,
                head,
            });
            if c != self.path {
                tracing::info!(file = %c.display(), "rotated since the last run: read to its end first");
            }
            return Ok(());
        }
        if self.path.exists() {
            self.open_path(0)?;
        }
        Ok(())
    }

    fn open_path(&mut self, offset: u64) -> anyhow::Result<()> {
        let f = File::open(&self.path)
            .with_context(|| format!("{}: cannot be read", self.path.display()))?;
        let m = f.metadata()?;
        self.cur = Some(Current {
            file: f,
            dev: m.dev(),
            ino: m.ino(),
            offset,
            head: Vec::new(),
        });
        Ok(())
    }

    /// Feeds the complete lines after the offset (all of it when `finish`: the file is
    /// rotated away), then saves the position. Returns the report and whether more is left.
    async fn feed(&mut self, finish: bool) -> anyhow::Result<Option<(Fed, bool)>> {
        let cur = self.cur.as_mut().expect("feed has a current file");
        let start = cur.offset;
        let len = cur.file.metadata()?.len();
        if len <= cur.offset {
            return Ok(None);
        }
        cur.file.seek(SeekFrom::Start(cur.offset))?;
        let mut buf = Vec::new();
        Read::by_ref(&mut cur.file)
            .take(CHUNK)
            .read_to_end(&mut buf)?;
        let more = (buf.len() as u64) == CHUNK && cur.offset + CHUNK < len;
        let end = match buf.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            // A partial last line waits for its newline, unless its writer has moved on.
            None if finish && !more => buf.len(),
            // A line longer than a chunk: fed as it is (refused as a bad record, located),
            // rather than waiting forever.
            None if buf.len() as u64 == CHUNK => buf.len(),
            None => return Ok(None),
        };
        let end = if finish && !more { buf.len() } else { end };
        buf.truncate(end);
        let format = match self.format {
            Some(f) => f,
            None => match Format::detect(&buf) {
                Some(f) => {
                    self.format = Some(f);
                    f
                }
                None => anyhow::bail!(
                    "{}: the format of these events cannot be told from their first bytes; name it with --from",
                    self.path.display()
                ),
            },
        };
        // Stored first; the position only after.
        let report = ingest(&self.data, format, &buf).await?;
        let cur = self.cur.as_mut().expect("feed has a current file");
        if (cur.head.len() as u64) < HEAD && cur.head.len() as u64 == cur.offset {
            let take = (HEAD as usize - cur.head.len()).min(end);
            cur.head.extend_from_slice(&buf[..take]);
        }
        cur.offset += end as u64;
        let (head_len, head) = (cur.head.len() as u64, hash(&cur.head));
        save(
            &self.state,
            &Position {
                path: self.path.clone(),
                dev: cur.dev,
                ino: cur.ino,
                offset: cur.offset,
                head_len,
                head,
            },
        )?;
        Ok(Some((
            Fed {
                offset: start,
                rotated: finish,
                report,
            },
            more,
        )))
    }
}
