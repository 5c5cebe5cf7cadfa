//! Fault matrix, part 3: the parent dies, and tasks that abuse the worker's
//! standard streams.
//!
//! - The parent is SIGKILLed while its workers are busy: every worker must
//!   end within a second (they see their stdin close and their parent
//!   change). The parent is this test binary run again as `parent_entry`.
//! - A task floods stdout and stderr with 10 MB each, then returns: the
//!   value arrives intact and the pool goes on. This runs in a child
//!   process (`flood_entry`) so that the 20 MB the pool forwards to its
//!   stderr are counted here instead of filling the test log.
//! - A task reads stdin: it gets EOF at once, and the pool goes on.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::faults_common::*;
use concurrent_futures::task;
use serde_bytes::ByteBuf;

/// Set for the child that plays the parent.
const PARENT_ENV: &str = "CF_FAULTS_PARENT";
/// Set for the child that runs the flood.
const FLOOD_ENV: &str = "CF_FAULTS_FLOOD";

/// This test binary run again as the test `name` with `key=1`; stdout
/// piped, stderr piped or inherited.
fn child(name: &str, key: &str, stderr: Stdio) -> std::process::Child {
    Command::new(std::env::current_exe().expect("the test binary"))
        .args([name, "--exact", "--nocapture", "--quiet"])
        .env(key, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("run the test binary again")
}

/// Collects a stream in a thread: its lines on a channel (for `stdout`)
/// or its byte count at the end.
fn lines_of(r: impl Read + Send + 'static) -> crossbeam_channel::Receiver<String> {
    let (tx, rx) = crossbeam_channel::unbounded();
    thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The first line starting with `prefix`, without it; fails after [`LONG`].
#[track_caller]
fn line_after(lines: &crossbeam_channel::Receiver<String>, prefix: &str) -> String {
    let deadline = Instant::now() + LONG;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix(prefix) {
                    return rest.to_string();
                }
            }
            Err(e) => panic!("no line starting with {prefix:?}: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// The parent is SIGKILLed.

/// The parent of `parent_sigkilled_while_workers_are_busy...` when
/// [`PARENT_ENV`] is set (else it returns at once): two workers, each
/// running a blocked task with another in its pipe; prints their pids and
/// waits to be killed.
#[test]
fn parent_entry() {
    if std::env::var_os(PARENT_ENV).is_none() {
        return;
    }
    let s = Scratch::new("parent");
    let pool = builder().max_workers(2).build().expect("build a pool");
    let _busy: Vec<_> = (0..4).map(|_| pool.submit(task!(block), s.dir())).collect();
    let pids = s.wait_pids("started-", 2);
    println!("DIR {}", s.dir());
    println!("PIDS {} {}", pids[0], pids[1]);
    std::io::stdout().flush().expect("flush");
    thread::sleep(LONG);
    // Not killed: leave without waiting for the blocked tasks.
    std::process::exit(2);
}

#[test]
fn parent_sigkilled_while_workers_are_busy_leaves_no_worker_after_1_s() {
    let mut parent = child(
        &test_path(module_path!(), "parent_entry"),
        PARENT_ENV,
        Stdio::inherit(),
    );
    let lines = lines_of(parent.stdout.take().expect("piped stdout"));
    let dir = line_after(&lines, "DIR ");
    let pids: Vec<u32> = line_after(&lines, "PIDS ")
        .split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(
        pids.iter().all(|&p| !ended(p)),
        "the workers are not running"
    );
    parent.kill().expect("SIGKILL the parent");
    parent.wait().expect("reap the parent");
    // Their new parent (init or a subreaper) reaps them: a zombie has
    // ended too.
    let gone = within(Duration::from_secs(1), || pids.iter().all(|&p| ended(p)));
    let states: Vec<_> = pids.iter().map(|&p| (p, proc_state(p))).collect();
    let _ = std::fs::remove_dir_all(dir);
    assert!(gone, "workers outlived their parent by 1 s: {states:?}");
}

// ---------------------------------------------------------------------------
// Floods.

/// How many bytes the flood writes to each stream.
const FLOOD: usize = 10 << 20;

/// Task: writes `FLOOD` bytes of lines to stdout and as many to stderr,
/// then returns a 1 MiB value with a recognizable pattern.
fn flood() -> ByteBuf {
    let line = |tag: &str, i: usize| format!("{tag} {i:>10} {}\n", "x".repeat(80));
    let chunk =
        |tag: &str| -> Vec<u8> { (0..680).flat_map(|i| line(tag, i).into_bytes()).collect() };
    let (out_chunk, err_chunk) = (chunk("out"), chunk("err"));
    let (mut out, mut err) = (0, 0);
    while out < FLOOD || err < FLOOD {
        if out < FLOOD {
            std::io::stdout()
                .write_all(&out_chunk)
                .expect("write stdout");
            out += out_chunk.len();
        }
        if err < FLOOD {
            std::io::stderr()
                .write_all(&err_chunk)
                .expect("write stderr");
            err += err_chunk.len();
        }
    }
    std::io::stdout().flush().expect("flush stdout");
    ByteBuf::from(pattern(1 << 20))
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// The flood, as a child process (when [`FLOOD_ENV`] is set): runs the
/// task, checks its value and that the same worker serves the next task,
/// and prints `FLOOD OK`.
#[test]
fn flood_entry() {
    if std::env::var_os(FLOOD_ENV).is_none() {
        return;
    }
    let pool = builder().max_workers(1).build().expect("build a pool");
    let before = value(&mut pool.submit(task!(pid), ()));
    let got = value(&mut pool.submit(task!(flood), ()));
    assert!(
        got.as_slice() == pattern(1 << 20).as_slice(),
        "the value arrived damaged"
    );
    assert_eq!(value(&mut pool.submit(task!(square), 11)), 121);
    assert_eq!(value(&mut pool.submit(task!(pid), ())), before);
    assert_eq!(pool.worker_pids(), [before]);
    drop(pool);
    assert_reaped(&[before]);
    println!("FLOOD OK {before}");
}

#[test]
fn task_flooding_stdout_and_stderr_returns_its_value_and_the_pool_goes_on() {
    let mut run = child(
        &test_path(module_path!(), "flood_entry"),
        FLOOD_ENV,
        Stdio::piped(),
    );
    let lines = lines_of(run.stdout.take().expect("piped stdout"));
    let mut stderr = run.stderr.take().expect("piped stderr");
    let counter = thread::spawn(move || {
        let (mut total, mut buf) = (0usize, vec![0u8; 1 << 16]);
        loop {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    });
    let worker = line_after(&lines, "FLOOD OK ");
    let status = loop {
        if let Some(status) = run.try_wait().expect("wait for the child") {
            break status;
        }
        thread::sleep(Duration::from_millis(5));
    };
    assert!(status.success(), "the flood run failed: {status}");
    let forwarded = counter.join().expect("count stderr");
    // The worker's stdout goes to its stderr; the pool forwards both.
    assert!(forwarded >= 2 * FLOOD, "only {forwarded} bytes forwarded");
    assert!(reaped(worker.parse().expect("a pid")));
}

// ---------------------------------------------------------------------------
// stdin.

/// Task: reads stdin to its end; returns how many bytes it got.
fn read_stdin() -> usize {
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf).expect("read stdin");
    let mut line = String::new();
    let more = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .expect("read a line");
    buf.len() + more
}

#[test]
fn task_reading_stdin_gets_eof_and_the_pool_goes_on() {
    let pool = builder().max_workers(1).build().expect("build a pool");
    let mut futs: Vec<_> = (0..3).map(|_| pool.submit(task!(read_stdin), ())).collect();
    for f in &mut futs {
        assert_eq!(value(f), 0);
    }
    assert_eq!(value(&mut pool.submit(task!(square), 5)), 25);
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 1);
    drop(pool);
    assert_reaped(&pids);
}
