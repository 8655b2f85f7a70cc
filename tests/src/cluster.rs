//! Running the binary as a cluster on loopback: a hostfile, its processes, and waiting for them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{bin, free_port};

/// A hostfile of `n` loopback addresses on free ports.
pub fn hostfile(dir: &Path, n: usize) -> PathBuf {
    let p = dir.join("hosts.txt");
    let lines: Vec<String> = (0..n).map(|i| format!("127.0.0.1:{}   # process {i}", free_port())).collect();
    std::fs::write(&p, format!("# the cluster\n\n{}\n", lines.join("\n"))).unwrap();
    p
}

/// Starts process `i` of `n` (one worker unless `workers` says otherwise).
pub fn start(pipeline: &Path, hosts: &Path, n: usize, i: usize, workers: usize) -> Child {
    Command::new(bin())
        .args(["run", &pipeline.to_string_lossy(), "--workers", &workers.to_string(), "--json"])
        .args(["--processes", &n.to_string(), "--process-id", &i.to_string(), "--hostfile", &hosts.to_string_lossy()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a child up to `limit`; kills it and panics past it. Returns (success, stdout, stderr).
pub fn finish(mut child: Child, limit: Duration, what: &str) -> (bool, String, String) {
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let (mut out, mut err) = (String::new(), String::new());
            child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return (status.success(), out, err);
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("{what}: still running after {limit:?} (a hang)\nstderr: {err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
