//! The state folder on disk:
//!
//! ```text
//! state_dir/
//!   CURRENT              the committed checkpoint's folder name ("chk-00000001767225600000")
//!   chk-<B>/manifest.json
//!   chk-<B>/<name>@<worker>.part   one participant's state (bincode, lz4); sinks have none
//!   chk-<B>/files.txt    the output files of the checkpoint's epoch, one per line
//!   files.log            "<B>\t<path>" per output file, appended before CURRENT moves on
//!   wal/<source>/w<worker>/<seq>.wal   a push source's write-ahead log (see
//!                        `alertflow_connectors::push::wal`): kept when nothing is committed
//! ```
//!
//! A checkpoint counts once `CURRENT` names it; lines of `files.log` after it (a commit cut
//! short) are ignored and cut off at the next start, as are `chk-*` folders other than the
//! current one.
//!
//! In a cluster every process has a state folder of its own, and a checkpoint is committed in
//! two phases: each process *prepares* it (writes `chk-<B>/` without moving `CURRENT`), then
//! process 0 moves its `CURRENT` — the cluster's commit point — and tells the others, which
//! move theirs. A process restarted between the two phases finds `chk-<B>/` prepared and
//! `CURRENT` behind it; it *adopts* `chk-<B>` when process 0 says the cluster resumes from it
//! (see [`adopt`]).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{CheckpointConfig, CheckpointError, Time};

/// The format version written (and the only one read). 2: correlate's episodes no longer
/// repeat their fingerprint, start and labels (they are their latest row's). 3: correlate
/// keeps a compact snapshot of an episode's latest row, not the row; dedup's entries keep
/// their flap history inline. 4: correlate's episodes hold their union-find parent and its
/// tables save episodes and dedup's entries without keys; suppress remembers the episode of
/// each recent opening. 5: dedup's entries hold their fingerprint and count occurrences in 32
/// bits. 6: a detector's calibrator saves its `age_cap` (the age correction). 7: the z-score
/// detector saves its mean absolute deviation (the floor of its deviation). 8: Holt-Winters
/// saves its unclipped mean absolute error (the floor of its error scale). 9: the random cut
/// forest's trees keep leaves (with their points) apart from inner nodes (with their boxes).
/// 10: suppress keeps a storm group off its tenant's correlate worker (`placement`), so a
/// group's saved state may belong to another worker than before.
pub const VERSION: u32 = 10;
const CURRENT: &str = "CURRENT";
const FILES_LOG: &str = "files.log";
const MANIFEST: &str = "manifest.json";
const EPOCH_FILES: &str = "files.txt";
/// The push sources' write-ahead logs.
pub(crate) const WAL: &str = "wal";

/// What a checkpoint holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// [`VERSION`].
    pub version: u32,
    /// The checkpoint's time: state of every epoch before it.
    pub at: Time,
    /// Worker threads (per process) of the run that wrote it.
    pub workers: usize,
    /// Processes of the cluster that wrote it (1 for a single process; absent before clusters).
    #[serde(default = "one")]
    pub processes: usize,
    /// The pipeline's digest (see [`CheckpointConfig::digest`]).
    pub digest: String,
    /// The parts.
    pub parts: Vec<PartEntry>,
    /// How many output files the checkpoint's epoch wrote.
    pub files: usize,
}

/// One participant's part.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartEntry {
    /// Participant name.
    pub name: String,
    /// Worker index.
    pub worker: usize,
    /// File in the checkpoint's folder.
    pub file: String,
    /// Its length.
    pub bytes: u64,
}

/// A checkpoint loaded at start.
#[derive(Debug)]
pub struct Resumed {
    /// Its manifest.
    pub manifest: Manifest,
    /// Parts by (participant name, worker).
    pub parts: HashMap<(String, usize), Vec<u8>>,
    /// Output files (relative to the output folder) of every committed epoch.
    pub files: HashSet<String>,
}

fn one() -> usize {
    1
}

fn io(dir: &Path) -> impl Fn(std::io::Error) -> CheckpointError + '_ {
    move |e| CheckpointError::Io(dir.display().to_string(), e)
}

fn folder(at: Time) -> String {
    format!("chk-{at:020}")
}

/// A participant's file name: its name with anything but `[A-Za-z0-9_-]` replaced.
fn part_file(name: &str, worker: usize) -> String {
    let clean: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("{clean}@{worker}.part")
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes a complete checkpoint and makes it the current one.
pub(crate) fn write(
    cfg: &CheckpointConfig,
    manifest: Manifest,
    parts: Vec<((String, usize), Vec<u8>)>,
    files: &[String],
) -> Result<(), CheckpointError> {
    let at = manifest.at;
    prepare(cfg, manifest, parts, files)?;
    make_current(cfg, at, files)
}

/// Writes a checkpoint's folder, `chk-<B>/` (through `chk-<B>.tmp/` and a rename), without
/// making it the current one.
pub(crate) fn prepare(
    cfg: &CheckpointConfig,
    mut manifest: Manifest,
    parts: Vec<((String, usize), Vec<u8>)>,
    files: &[String],
) -> Result<(), CheckpointError> {
    let dir = &cfg.dir;
    let err = io(dir);
    let name = folder(manifest.at);
    let tmp = dir.join(format!("{name}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(&err)?;
    }
    fs::create_dir_all(&tmp).map_err(&err)?;
    let mut seen = HashSet::new();
    for ((pname, worker), bytes) in parts {
        if bytes.is_empty() {
            continue; // a sink: nothing but its files
        }
        let mut file = part_file(&pname, worker);
        while !seen.insert(file.clone()) {
            file.insert(0, '_'); // two names that clean up alike
        }
        let mut f = File::create(tmp.join(&file)).map_err(&err)?;
        f.write_all(&bytes).map_err(&err)?;
        if cfg.fsync {
            f.sync_all().map_err(&err)?;
        }
        manifest.parts.push(PartEntry { name: pname, worker, file, bytes: bytes.len() as u64 });
    }
    // The epoch's files: `files.log` gets them at the commit, and a process that adopts a
    // prepared checkpoint (see [`adopt`]) takes them from here.
    let mut listing = String::new();
    for f in files {
        listing.push_str(f);
        listing.push('\n');
    }
    let mut f = File::create(tmp.join(EPOCH_FILES)).map_err(&err)?;
    f.write_all(listing.as_bytes()).map_err(&err)?;
    if cfg.fsync {
        f.sync_all().map_err(&err)?;
    }
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| CheckpointError::Corrupt(dir.display().to_string(), e.to_string()))?;
    let mut f = File::create(tmp.join(MANIFEST)).map_err(&err)?;
    f.write_all(&json).map_err(&err)?;
    if cfg.fsync {
        f.sync_all().map_err(&err)?;
        sync_dir(&tmp).map_err(&err)?;
    }
    let done = dir.join(&name);
    if done.exists() {
        fs::remove_dir_all(&done).map_err(&err)?;
    }
    fs::rename(&tmp, &done).map_err(&err)?;
    if cfg.fsync {
        sync_dir(dir).map_err(&err)?;
    }
    Ok(())
}

/// Commits the prepared checkpoint at `at`: appends its epoch's `files` to `files.log`, then
/// switches `CURRENT` to it (write, fsync, rename) and removes the older ones.
pub(crate) fn make_current(cfg: &CheckpointConfig, at: Time, files: &[String]) -> Result<(), CheckpointError> {
    let dir = &cfg.dir;
    let err = io(dir);
    let name = folder(at);
    // The epoch's output files, before CURRENT moves on: lines past CURRENT are ignored.
    if !files.is_empty() {
        let mut log = OpenOptions::new().create(true).append(true).open(dir.join(FILES_LOG)).map_err(&err)?;
        let mut text = String::new();
        for f in files {
            text.push_str(&format!("{at}\t{f}\n"));
        }
        log.write_all(text.as_bytes()).map_err(&err)?;
        if cfg.fsync {
            log.sync_all().map_err(&err)?;
        }
    }
    let cur_tmp = dir.join(format!(".{CURRENT}.tmp"));
    let mut f = File::create(&cur_tmp).map_err(&err)?;
    f.write_all(name.as_bytes()).map_err(&err)?;
    if cfg.fsync {
        f.sync_all().map_err(&err)?;
    }
    fs::rename(&cur_tmp, dir.join(CURRENT)).map_err(&err)?;
    if cfg.fsync {
        sync_dir(dir).map_err(&err)?;
    }
    // Older checkpoints are not needed any more (nor later prepared ones: one is prepared at
    // a time, and it is this one).
    remove_others(dir, &name).map_err(&err)?;
    Ok(())
}

/// A process of a cluster loads the checkpoint the cluster resumes from — the one process 0
/// committed last, `at` (0: none, start afresh). It is this folder's current one, or one
/// prepared here whose commit this process did not hear of before it stopped: that one is
/// committed here first.
pub(crate) fn adopt(cfg: &CheckpointConfig, at: Time) -> Result<Option<crate::Resumed>, CheckpointError> {
    let dir = &cfg.dir;
    let err = io(dir);
    let shown = dir.display().to_string();
    fs::create_dir_all(dir).map_err(&err)?;
    if at == 0 {
        clear(dir)?;
        return Ok(None);
    }
    let name = folder(at);
    let current = match fs::read_to_string(dir.join(CURRENT)) {
        Ok(s) => Some(s.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(err(e)),
    };
    if current.as_deref() != Some(name.as_str()) {
        let listing = fs::read_to_string(dir.join(&name).join(EPOCH_FILES)).map_err(|e| {
            CheckpointError::Mismatch(
                shown.clone(),
                format!(
                    "has no checkpoint at event time {at} ({name}: {e}), the one process 0 resumes the cluster from: \
                     was this state folder removed or replaced? Remove every process's state folder to start afresh"
                ),
            )
        })?;
        // `files.log` up to the current checkpoint (none: nothing), then this one's files.
        let current_at = current.as_deref().and_then(|c| c.strip_prefix("chk-")).and_then(|n| n.parse::<Time>().ok()).unwrap_or(0);
        let log_path = dir.join(FILES_LOG);
        let mut keep = String::new();
        if current_at > 0 && log_path.exists() {
            for line in BufReader::new(File::open(&log_path).map_err(&err)?).lines() {
                let line = line.map_err(&err)?;
                if line.split_once('\t').and_then(|(a, _)| a.parse::<Time>().ok()).is_some_and(|a| a <= current_at) {
                    keep.push_str(&line);
                    keep.push('\n');
                }
            }
        }
        let tmp = dir.join(format!(".{FILES_LOG}.tmp"));
        fs::write(&tmp, keep).map_err(&err)?;
        fs::rename(&tmp, &log_path).map_err(&err)?;
        let files: Vec<String> = listing.lines().filter(|l| !l.is_empty()).map(str::to_string).collect();
        make_current(cfg, at, &files)?;
    }
    load(cfg)
}

fn remove_others(dir: &Path, keep: &str) -> std::io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let n = e.file_name().to_string_lossy().to_string();
        if n.starts_with("chk-") && n != keep {
            fs::remove_dir_all(e.path())?;
        }
    }
    Ok(())
}

/// Loads the committed checkpoint, if any, and tidies what a cut-short commit left.
pub(crate) fn load(cfg: &CheckpointConfig) -> Result<Option<crate::Resumed>, CheckpointError> {
    let dir = &cfg.dir;
    let err = io(dir);
    let shown = dir.display().to_string();
    fs::create_dir_all(dir).map_err(&err)?;
    let current = match fs::read_to_string(dir.join(CURRENT)) {
        Ok(s) => s.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Nothing committed: whatever is here is from a run that never got that far.
            clear(dir)?;
            return Ok(None);
        }
        Err(e) => return Err(err(e)),
    };
    let chk: PathBuf = dir.join(&current);
    let text = fs::read(chk.join(MANIFEST)).map_err(|e| CheckpointError::Corrupt(shown.clone(), format!("{current}/{MANIFEST}: {e}")))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| CheckpointError::Corrupt(shown.clone(), format!("{current}/{MANIFEST}: {e}")))?;
    if manifest.version != VERSION {
        return Err(CheckpointError::Corrupt(
            shown,
            format!(
                "{current} has format version {} and this alertflow reads {VERSION}: remove the folder to start afresh",
                manifest.version
            ),
        ));
    }
    if manifest.digest != cfg.digest {
        return Err(CheckpointError::Mismatch(
            shown,
            "its checkpoint is of a different pipeline (sources, operators or output changed since): \
             remove the folder to start afresh, or point state_dir elsewhere"
                .into(),
        ));
    }
    if manifest.processes != cfg.processes {
        return Err(CheckpointError::Mismatch(
            shown,
            format!(
                "its checkpoint was taken by a cluster of {} process(es) and this run has {}: state is split by key over \
                 every process's workers, so resume with --processes {} (or remove the state folders to start afresh)",
                manifest.processes, cfg.processes, manifest.processes
            ),
        ));
    }
    if manifest.workers != cfg.workers {
        return Err(CheckpointError::Mismatch(
            shown,
            format!(
                "its checkpoint was taken with {} worker(s) and this run has {}: state is split by key over workers, \
                 so resume with --workers {} (or remove the folder to start afresh)",
                manifest.workers, cfg.workers, manifest.workers
            ),
        ));
    }
    let mut parts = HashMap::new();
    for p in &manifest.parts {
        let bytes =
            fs::read(chk.join(&p.file)).map_err(|e| CheckpointError::Corrupt(shown.clone(), format!("{current}/{}: {e}", p.file)))?;
        if bytes.len() as u64 != p.bytes {
            return Err(CheckpointError::Corrupt(
                shown,
                format!("{current}/{} is {} bytes, the manifest says {}", p.file, bytes.len(), p.bytes),
            ));
        }
        parts.insert((p.name.clone(), p.worker), bytes);
    }
    // Committed output files; cut the log after the current checkpoint's lines.
    let mut files = HashSet::new();
    let log_path = dir.join(FILES_LOG);
    if log_path.exists() {
        let mut keep = String::new();
        for line in BufReader::new(File::open(&log_path).map_err(&err)?).lines() {
            let line = line.map_err(&err)?;
            let Some((at, path)) = line.split_once('\t') else { continue };
            let Ok(at) = at.parse::<Time>() else { continue };
            if at <= manifest.at {
                files.insert(path.to_string());
                keep.push_str(&line);
                keep.push('\n');
            }
        }
        let tmp = dir.join(format!(".{FILES_LOG}.tmp"));
        fs::write(&tmp, keep).map_err(&err)?;
        fs::rename(&tmp, &log_path).map_err(&err)?;
    }
    remove_others(dir, &current).map_err(&err)?;
    Ok(Some(crate::Resumed { manifest, parts, files }))
}

/// Removes every checkpoint (a completed run, or nothing committed).
pub(crate) fn clear(dir: &Path) -> Result<(), CheckpointError> {
    let err = io(dir);
    if !dir.exists() {
        return Ok(());
    }
    // CURRENT first: from then on nothing counts as committed, whatever else a crash leaves.
    match fs::remove_file(dir.join(CURRENT)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    for e in fs::read_dir(dir).map_err(&err)? {
        let e = e.map_err(&err)?;
        let n = e.file_name().to_string_lossy().to_string();
        if n.starts_with("chk-") {
            fs::remove_dir_all(e.path()).map_err(&err)?;
        } else if n == FILES_LOG || n.starts_with('.') {
            fs::remove_file(e.path()).map_err(&err)?;
        }
    }
    Ok(())
}
