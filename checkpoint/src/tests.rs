use std::time::Duration;

use super::*;

fn cfg(dir: &std::path::Path, workers: usize) -> CheckpointConfig {
    CheckpointConfig {
        dir: dir.to_path_buf(),
        interval: 10,
        min_wall: Duration::ZERO,
        digest: "d1".into(),
        workers,
        processes: 1,
        fsync: true,
    }
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("alertflow-ckpt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Waits for the committer.
fn wait_committed(c: &Checkpoints, at: Time) {
    for _ in 0..500 {
        if c.committed() >= at {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("checkpoint {at} not committed: {:?}", c.error());
}

#[test]
fn a_checkpoint_is_decided_at_or_after_every_source_capability_and_resumes_with_its_parts() {
    let dir = tmpdir("roundtrip");
    let c = Checkpoints::open(cfg(&dir, 2)).unwrap();
    assert_eq!(c.resumed_at(), 0);
    let s0 = c.source("source:a", 0);
    let s1 = c.source("source:a", 1);
    let mut op0 = c.participant("dedup", 0);
    let mut op1 = c.participant("dedup", 1);
    let mut sink = c.participant("sink:t", 0);
    let mut other = c.source("source:other", 0);
    // Nothing is decided before every worker has built its dataflow.
    s0.advance(15);
    other.advance(25);
    assert_eq!(op0.pending(), None);
    c.built();
    c.built();
    s1.advance(7);
    // Source `a` on two workers: operators downstream of it have frontiers at most the least
    // of its capabilities (15 and 7); but those downstream of `other` alone may have handled
    // epochs up to 25. At or after the greater bound: the next multiple of 10 from 25.
    assert_eq!(op0.pending(), Some(30));
    assert_eq!(s0.pending(), Some(30));
    // Only one in flight: advancing further decides nothing new.
    s1.advance(40);
    assert_eq!(op1.pending(), Some(30));
    op0.save(30, &vec![1u64, 2, 3]);
    op1.save(30, &"state of worker 1".to_string());
    let (mut s0, mut s1) = (s0, s1);
    s0.save(30, &(3u32, 99u64));
    s1.save(30, &(4u32, 100u64));
    other.save(30, &());
    assert_eq!(c.committed(), 0, "a sink has not acknowledged yet");
    sink.ack(30, vec!["t/part-0000-0-30.parquet".into()]);
    wait_committed(&c, 30);
    assert_eq!(op0.pending(), None);
    c.finish(false).unwrap();

    let c = Checkpoints::open(cfg(&dir, 2)).unwrap();
    assert_eq!(c.resumed_at(), 30);
    assert!(c.committed_files().unwrap().contains("t/part-0000-0-30.parquet"));
    let mut op0 = c.participant("dedup", 0);
    let mut op1 = c.participant("dedup", 1);
    let mut sink = c.participant("sink:t", 0);
    assert_eq!(op0.restore::<Vec<u64>>().unwrap(), Some(vec![1, 2, 3]));
    assert_eq!(op1.restore::<String>().unwrap().as_deref(), Some("state of worker 1"));
    assert_eq!(sink.restore::<u8>().unwrap(), None);
    // The next checkpoint comes after the one resumed from even when a source is behind it.
    let s = c.source("source:a", 0);
    c.built();
    c.built();
    s.advance(3);
    assert_eq!(op0.pending(), Some(40));
    c.finish(true).unwrap();
    let c = Checkpoints::open(cfg(&dir, 2)).unwrap();
    assert_eq!(c.resumed_at(), 0, "a completed run leaves nothing to resume");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn min_wall_interval_spaces_checkpoints_and_hurry_overrides_it() {
    let dir = tmpdir("wall");
    let mut cfg = cfg(&dir, 1);
    cfg.min_wall = Duration::from_secs(3600);
    let c = Checkpoints::open(cfg).unwrap();
    let mut s = c.source("source:a", 0);
    c.built();
    s.advance(100);
    assert_eq!(s.pending(), None, "an hour has not passed since the start");
    assert_eq!(c.hurry(), 0);
    s.advance(101);
    assert_eq!(s.pending(), Some(110));
    s.save(110, &());
    wait_committed(&c, 110);
    s.advance(500);
    assert_eq!(s.pending(), None, "hurry is for one checkpoint");
    c.finish(false).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_checkpoint_of_another_pipeline_or_worker_count_is_refused_with_the_fix() {
    let dir = tmpdir("mismatch");
    let c = Checkpoints::open(cfg(&dir, 1)).unwrap();
    let mut s = c.source("source:a", 0);
    c.built();
    s.advance(1);
    s.save(10, &());
    wait_committed(&c, 10);
    c.finish(false).unwrap();
    let e = Checkpoints::open(cfg(&dir, 2)).err().unwrap().to_string();
    assert!(e.contains("taken with 1 worker(s) and this run has 2") && e.contains("--workers 1"), "{e}");
    let mut other = cfg(&dir, 1);
    other.digest = "d2".into();
    let e = Checkpoints::open(other).err().unwrap().to_string();
    assert!(e.contains("different pipeline") && e.contains("remove the folder"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn what_a_cut_short_commit_left_is_ignored() {
    let dir = tmpdir("cut");
    let c = Checkpoints::open(cfg(&dir, 1)).unwrap();
    let mut s = c.source("source:a", 0);
    let mut sink = c.participant("sink:t", 0);
    c.built();
    s.advance(1);
    s.save(10, &5u8);
    sink.ack(10, vec!["t/a.parquet".into()]);
    wait_committed(&c, 10);
    c.finish(false).unwrap();
    // A later commit that got as far as its folder and its files but not CURRENT.
    std::fs::create_dir_all(dir.join("chk-00000000000000000020.tmp")).unwrap();
    std::fs::create_dir_all(dir.join("chk-00000000000000000020")).unwrap();
    let mut log = std::fs::OpenOptions::new().append(true).open(dir.join("files.log")).unwrap();
    std::io::Write::write_all(&mut log, b"20\tt/b.parquet\n").unwrap();
    drop(log);
    let c = Checkpoints::open(cfg(&dir, 1)).unwrap();
    assert_eq!(c.resumed_at(), 10);
    let files = c.committed_files().unwrap();
    assert!(files.contains("t/a.parquet") && !files.contains("t/b.parquet"), "{files:?}");
    assert!(!dir.join("chk-00000000000000000020").exists() && !dir.join("chk-00000000000000000020.tmp").exists());
    let log = std::fs::read_to_string(dir.join("files.log")).unwrap();
    assert_eq!(log, "10\tt/a.parquet\n");
    let mut s = c.participant("source:a", 0);
    assert_eq!(s.restore::<u8>().unwrap(), Some(5));
    c.finish(false).unwrap();
    // A damaged part is an error naming it, never a panic.
    let chk = dir.join("chk-00000000000000000010");
    let part = std::fs::read_dir(&chk).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "part")).unwrap();
    let len = std::fs::metadata(&part).unwrap().len() as usize;
    std::fs::write(&part, vec![0xffu8; len]).unwrap();
    let c = Checkpoints::open(cfg(&dir, 1)).unwrap();
    let e = c.participant("source:a", 0).restore::<u8>().err().unwrap();
    assert!(e.contains("source:a"), "{e}");
    c.finish(false).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_finished_participant_counts_for_every_later_checkpoint() {
    let dir = tmpdir("finished");
    let c = Checkpoints::open(cfg(&dir, 1)).unwrap();
    let mut a = c.source("source:a", 0);
    let b = c.source("source:b", 0);
    let mut op = c.participant("op", 0);
    let mut sink = c.participant("sink:t", 0);
    c.built();
    // Source `a` is done after emitting up to 44, with a replay log: from position "p20" for
    // checkpoints up to 20, "p50" up to 50; the end after that.
    a.source_done(44);
    a.finish(&[(20u64, "p20".to_string()), (50, "p50".to_string())], &"end".to_string());
    op.finish::<(), _>(&[], &7u32);
    let finisher = sink.finisher();
    finisher.finish(vec!["t/last.parquet".into()]);
    // `a` published 45: the checkpoint comes after everything its operators handled.
    b.advance(12);
    assert_eq!(b.pending(), Some(50));
    let mut b = b;
    b.save(50, &"b at 50".to_string());
    wait_committed(&c, 50);
    c.finish(false).unwrap();
    let c = Checkpoints::open(cfg(&dir, 1)).unwrap();
    assert_eq!(c.participant("source:a", 0).restore::<String>().unwrap().as_deref(), Some("p50"));
    assert_eq!(c.participant("op", 0).restore::<u32>().unwrap(), Some(7));
    assert!(c.committed_files().unwrap().contains("t/last.parquet"), "a finished sink's last files are committed");
    let _ = (&mut sink, &mut a);
    c.finish(false).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A sink that finishes after acknowledging a checkpoint the committer has in hand (complete,
/// not committed yet) counts once: its last files go into the next checkpoint. It used to be
/// counted again, which underflowed the count of missing parts.
#[test]
fn a_sink_finishing_while_its_acknowledged_checkpoint_commits_counts_once() {
    let dir = tmpdir("finish-race");
    let c = Checkpoints::open(cfg(&dir, 1)).unwrap();
    let mut src = c.source("source:a", 0);
    let mut sink = c.participant("sink:t", 0);
    let mut other = c.participant("sink:u", 0);
    c.built();
    src.advance(5);
    assert_eq!(src.pending(), Some(10));
    // Holding the error slot stops the committer before it writes: checkpoint 10 stays in
    // flight, complete and handed over.
    let held = lock(&c.error);
    src.save(10, &1u8);
    sink.ack(10, vec!["t/a.parquet".into()]);
    other.ack(10, Vec::new());
    assert!(lock(&c.state).in_flight.as_ref().is_some_and(|f| f.sent && f.missing == 0));
    sink.finisher().finish(vec!["t/b.parquet".into()]);
    assert_eq!(lock(&c.state).in_flight.as_ref().map(|f| f.missing), Some(0));
    drop(held);
    wait_committed(&c, 10);
    // The next checkpoint takes the finished sink as acknowledged, with its last file.
    src.advance(15);
    assert_eq!(src.pending(), Some(20));
    src.save(20, &2u8);
    other.ack(20, Vec::new());
    wait_committed(&c, 20);
    c.finish(false).unwrap();
    let c = Checkpoints::open(cfg(&dir, 1)).unwrap();
    let files = c.committed_files().unwrap();
    assert!(files.contains("t/a.parquet") && files.contains("t/b.parquet"), "{files:?}");
    c.finish(false).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An idle source's poll decides beyond every source's capability (no frontier change follows
/// a polled decision, so each source must move past it); a handed-off part counts once its
/// `Deferred` is delivered; `is_current` says when a stop need not wait; a completed run
/// removes the push logs with the checkpoints.
#[test]
fn polled_decisions_lie_beyond_every_source_and_deferred_parts_commit_when_delivered() {
    let dir = tmpdir("poll");
    let c = Checkpoints::open(cfg(&dir, 1)).unwrap();
    let mut push = c.source("source:push", 0);
    let mut sink = c.participant("sink:t", 0);
    c.built();
    push.poll();
    // Nothing published yet (capability 0): the first multiple of 10 after it.
    assert_eq!(push.pending(), Some(10));
    let mark = push.hand_off_state(10, &(7u64, 3i64)).unwrap();
    assert!(push.hand_off_state(10, &0u8).is_none(), "handed over once");
    push.advance(20);
    sink.ack(10, Vec::new());
    assert_eq!(c.committed(), 0, "the source's part is not delivered yet");
    assert!(!c.is_current());
    mark.ack(Vec::new());
    wait_committed(&c, 10);
    assert!(!c.is_current(), "the source is at 20, past the checkpoint at 10");
    // The source sits exactly on an interval: a decision as it advances would be at 20, but a
    // polled one must lie beyond it.
    push.poll();
    assert_eq!(push.pending(), Some(30));
    push.save(30, &(0u64, 0i64));
    push.advance(30);
    sink.ack(30, Vec::new());
    wait_committed(&c, 30);
    assert!(c.is_current(), "every source is at the latest checkpoint");
    assert_eq!(push.committed(), 30);
    std::fs::create_dir_all(c.wal_dir().join("push/w0")).unwrap();
    c.finish(true).unwrap();
    assert!(!c.wal_dir().exists(), "a completed run leaves no log to replay");
    let c = Checkpoints::open(cfg(&dir, 1)).unwrap();
    let mut p = c.source("source:push", 0);
    assert_eq!(p.restore::<(u64, i64)>().unwrap(), None, "nothing to resume");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A connected pair of loopback sockets: (process 0's end, process 1's end).
fn socket_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (a, _) = l.accept().unwrap();
    (a, b)
}

fn cluster_cfg(dir: &std::path::Path) -> CheckpointConfig {
    CheckpointConfig { processes: 2, ..cfg(dir, 1) }
}

/// Opens a two-process cluster's checkpoints (one worker each), as the two processes do.
fn open_pair(d0: &std::path::Path, d1: &std::path::Path) -> (Result<Arc<Checkpoints>, String>, Result<Arc<Checkpoints>, String>) {
    let (a, b) = socket_pair();
    let d1 = d1.to_path_buf();
    let follower = std::thread::spawn(move || {
        Checkpoints::open_cluster(cluster_cfg(&d1), ClusterLink::Follower { process: 1, coordinator: b }).map_err(|e| e.to_string())
    });
    let c0 = Checkpoints::open_cluster(cluster_cfg(d0), ClusterLink::Coordinator { followers: vec![(1, a)] }).map_err(|e| e.to_string());
    (c0, follower.join().unwrap())
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(10), "{what}: not within 10 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_cluster_checkpoint_is_known_everywhere_before_any_source_passes_it_and_commits_in_two_phases() {
    let (d0, d1) = (tmpdir("cluster-0"), tmpdir("cluster-1"));
    let (c0, c1) = open_pair(&d0, &d1);
    let (c0, c1) = (c0.unwrap(), c1.unwrap());
    let (mut s0, mut s1) = (c0.source("source:a", 0), c1.source("source:a", 1));
    let (mut op0, mut op1) = (c0.participant("op", 0), c1.participant("op", 1));
    // Held at the horizon (nothing committed: 0) until process 0 moves it on their asking.
    assert_eq!(s1.advance(25), 0);
    eventually("the horizon passes 25", || s1.advance(25) == 25);
    assert_eq!(op1.pending(), None, "nothing is decided before every worker has built");
    c1.built();
    c0.built();
    eventually("a checkpoint is decided", || op0.pending().is_some());
    let at = op0.pending().unwrap();
    assert!(at >= 30 && at % 10 == 0, "decided at {at}: at or after every source's capability (25)");
    // Whatever a source is granted past `at`, every process knew of `at` first.
    eventually("the horizon moves past the checkpoint", || {
        let t = s0.advance(at + 500);
        if t > at {
            assert_eq!(op1.pending(), Some(at), "a source passed {at} before process 1 knew of it");
        }
        assert!(t <= at || op0.pending() == Some(at));
        t > at
    });
    op0.save(at, &7u32);
    op1.save(at, &"worker 1".to_string());
    s0.save(at, &(1u32, 2u64));
    assert_eq!(c0.committed(), 0);
    s1.save(at, &(3u32, 4u64));
    eventually("both processes commit", || c0.committed() == at && c1.committed() == at);
    let name = format!("chk-{at:020}");
    assert_eq!(std::fs::read_to_string(d0.join("CURRENT")).unwrap(), name);
    assert_eq!(std::fs::read_to_string(d1.join("CURRENT")).unwrap(), name);
    assert!(d0.join(&name).join("op@0.part").exists() && !d0.join(&name).join("op@1.part").exists());
    assert!(d1.join(&name).join("op@1.part").exists(), "each process writes its own workers' parts");
    c1.finish(false).unwrap();
    c0.finish(false).unwrap();
    assert!(c0.error().is_none() && c1.error().is_none(), "{:?} {:?}", c0.error(), c1.error());

    // Both resume from it, each with its own parts.
    let (c0, c1) = open_pair(&d0, &d1);
    let (c0, c1) = (c0.unwrap(), c1.unwrap());
    assert_eq!((c0.resumed_at(), c1.resumed_at()), (at, at));
    assert_eq!(c1.participant("op", 1).restore::<String>().unwrap().as_deref(), Some("worker 1"));
    assert_eq!(c0.participant("op", 0).restore::<u32>().unwrap(), Some(7));
    c1.finish(true).unwrap();
    c0.finish(true).unwrap();
    assert!(!d0.join("CURRENT").exists() && !d1.join("CURRENT").exists(), "a completed run leaves nothing");

    // A process whose state folder lacks the cluster's checkpoint fails every start, named.
    let manifest = Manifest { version: store::VERSION, at: 50, workers: 1, processes: 2, digest: "d1".into(), parts: vec![], files: 0 };
    store::write(&cluster_cfg(&d0), manifest, vec![], &[]).unwrap();
    let (e0, e1) = open_pair(&d0, &d1);
    let (e0, e1) = (e0.err().unwrap(), e1.err().unwrap());
    assert!(e1.contains("has no checkpoint at event time 50"), "{e1}");
    assert!(e0.contains("the cluster cannot resume: process 1:") && e0.contains("has no checkpoint at event time 50"), "{e0}");
    std::fs::remove_dir_all(&d0).unwrap();
    std::fs::remove_dir_all(&d1).unwrap();
}

#[test]
fn a_process_adopts_the_checkpoint_it_prepared_when_process_0_committed_it() {
    let dir = tmpdir("adopt");
    let c = cluster_cfg(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let m = |at| Manifest { version: store::VERSION, at, workers: 1, processes: 2, digest: "d1".into(), parts: vec![], files: 0 };
    store::write(&c, m(40), vec![(("op".into(), 1), b"forty".to_vec())], &["t/a.parquet".into()]).unwrap();
    // Prepared, but stopped before process 0's commit reached it.
    store::prepare(&c, m(80), vec![(("op".into(), 1), b"eighty".to_vec())], &["t/b.parquet".into()]).unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("CURRENT")).unwrap(), format!("chk-{:020}", 40));
    let r = store::adopt(&c, 80).unwrap().unwrap();
    assert_eq!(r.manifest.at, 80);
    assert_eq!(r.parts[&("op".to_string(), 1)], b"eighty");
    let files: std::collections::BTreeSet<_> = r.files.iter().cloned().collect();
    assert_eq!(files.into_iter().collect::<Vec<_>>(), vec!["t/a.parquet", "t/b.parquet"]);
    assert!(!dir.join(format!("chk-{:020}", 40)).exists());
    // Process 0 committed 80 and this folder has it current: loaded as is.
    assert_eq!(store::adopt(&c, 80).unwrap().unwrap().files.len(), 2);
    // One it never had is named; 0 starts afresh.
    let e = store::adopt(&c, 120).unwrap_err().to_string();
    assert!(e.contains("has no checkpoint at event time 120") && e.contains("Remove every process's state folder"), "{e}");
    assert!(store::adopt(&c, 0).unwrap().is_none());
    assert!(!dir.join("CURRENT").exists());
    // A checkpoint of a cluster of another size is refused.
    store::write(&c, m(40), vec![], &[]).unwrap();
    let e = store::load(&cfg(&dir, 1)).unwrap_err().to_string();
    assert!(e.contains("taken by a cluster of 2 process(es) and this run has 1"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
