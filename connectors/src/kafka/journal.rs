//! A local copy of what each offset commit meant: for every committed offset of a partition,
//! the durable frontier `F` and the event-time bound `K` it was committed behind.
//!
//! Kafka keeps these in the commit's metadata string, and a resumed run reads them back from
//! there. Not every broker keeps commit metadata: Tansu 0.6 accepts it and answers OffsetFetch
//! with none. Without `F` and `K` a resumed run can neither skip the records whose windows are
//! already written nor keep its sinks from overwriting complete files with partial ones, so the
//! source also writes them here, under the output folder, before each commit, and looks the
//! committed offset up here when the broker returned no metadata.
//!
//! One small file per (group, topic, partition) holding its last [`KEEP`] commits as lines
//! `offset F K`, replaced atomically (write, fsync, rename) at every commit. Several entries
//! are kept because a commit may fail after the journal was written: the broker then still
//! holds an earlier offset, and that one must still be found.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Commits remembered per partition.
const KEEP: usize = 64;

/// The journal of one source and consumer group.
#[derive(Debug, Clone)]
pub struct CommitJournal {
    dir: PathBuf,
}

impl CommitJournal {
    /// The journal of consumer group `group` under `root` (the output folder's `_kafka`).
    pub fn new(root: &Path, group: &str) -> Self {
        CommitJournal { dir: root.join(escape(group)) }
    }

    fn file(&self, topic: &str, partition: i32) -> PathBuf {
        self.dir.join(format!("{}.{partition}", escape(topic)))
    }

    /// Records that `offset` of `topic/partition` is about to be committed with `(f, k)`.
    pub fn record(&self, topic: &str, partition: i32, offset: i64, (f, k): (u64, i64)) -> Result<(), String> {
        let path = self.file(topic, partition);
        let mut lines: Vec<(i64, u64, i64)> = read(&path)?;
        lines.retain(|&(o, ..)| o != offset);
        lines.push((offset, f, k));
        let drop = lines.len().saturating_sub(KEEP);
        lines.drain(..drop);
        let mut text = String::new();
        for (o, f, k) in &lines {
            let _ = writeln!(text, "{o} {f} {k}");
        }
        fs::create_dir_all(&self.dir).map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let tmp = path.with_extension(format!("{partition}.tmp"));
        let io = |e: std::io::Error| format!("cannot write {}: {e}", tmp.display());
        let mut file = fs::File::create(&tmp).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)?;
        fs::rename(&tmp, &path).map_err(|e| format!("cannot rename {} into place: {e}", tmp.display()))
    }

    /// `(F, K)` recorded for `offset` of `topic/partition`, if this journal has it.
    pub fn lookup(&self, topic: &str, partition: i32, offset: i64) -> Result<Option<(u64, i64)>, String> {
        let lines = read(&self.file(topic, partition))?;
        Ok(lines.into_iter().rev().find(|&(o, ..)| o == offset).map(|(_, f, k)| (f, k)))
    }
}

/// The entries of a journal file (none when it does not exist). A line that does not parse is
/// an error naming the file and line: the journal is written only by alertflow.
fn read(path: &Path) -> Result<Vec<(i64, u64, i64)>, String> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let mut it = line.split(' ');
            let parsed = (|| Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?, it.next()?.parse().ok()?)))();
            parsed.ok_or_else(|| format!("{}:{}: not an `offset F K` line: {line:?}", path.display(), i + 1))
        })
        .collect()
}

/// A group or topic name as one path component: `[A-Za-z0-9._-]` kept, anything else as `%XX`
/// per byte (so distinct names stay distinct), and a leading `.` escaped.
fn escape(name: &str) -> String {
    let mut s = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0) {
            s.push(b as char);
        } else {
            let _ = write!(s, "%{b:02X}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_found_by_exact_offset_and_the_oldest_fall_out() {
        let root = std::env::temp_dir().join(format!("af-journal-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let j = CommitJournal::new(&root, "group/with:odd chars");
        assert_eq!(j.lookup("t", 0, 5).unwrap(), None, "no file yet");
        for o in 0..(KEEP as i64 + 10) {
            j.record("t", 0, o * 10, (o as u64 * 1000, o * 1000 - 60_000)).unwrap();
        }
        j.record("t", 1, 7, (1, -2)).unwrap();
        assert_eq!(j.lookup("t", 0, 730).unwrap(), Some((73_000, 13_000)));
        assert_eq!(j.lookup("t", 0, 100).unwrap(), Some((10_000, -50_000)), "the last {KEEP} are kept");
        assert_eq!(j.lookup("t", 0, 90).unwrap(), None, "older ones fall out");
        assert_eq!(j.lookup("t", 0, 735).unwrap(), None, "only exact offsets");
        assert_eq!(j.lookup("t", 1, 7).unwrap(), Some((1, -2)), "partitions apart");
        assert_eq!(CommitJournal::new(&root, "other").lookup("t", 1, 7).unwrap(), None, "groups apart");
        let file = j.file("t", 1);
        assert!(file.starts_with(root.join("group%2Fwith%3Aodd%20chars")), "{}", file.display());
        fs::write(&file, "7 1\n").unwrap();
        let err = j.lookup("t", 1, 7).unwrap_err();
        assert!(err.ends_with(":1: not an `offset F K` line: \"7 1\""), "{err}");
        let _ = fs::remove_dir_all(&root);
    }
}
