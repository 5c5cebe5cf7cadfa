//! Helpers shared by the process pool tests: the pool builder that turns the
//! re-run test binary into a worker, tasks, a gate that works across
//! processes, values that count their drops per process, and checks on
//! process ids through `/proc`.
//!
//! Each test file uses only some of them.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use concurrent_futures::launch::{Launcher, Local, Spawned, WorkerSpec};
use concurrent_futures::{Error, ProcessPoolBuilder, ProcessPoolExecutor};
use serde::de::{self, Deserializer, Visitor};
use serde::ser::{self, SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

/// The upper bound for "did not hang".
pub const LONG: Duration = Duration::from_secs(10);

/// Arguments that make the re-run test binary run only `worker_entry`,
/// which calls `concurrent_futures::init()` and so becomes the worker.
pub const WORKER_ARGS: [&str; 4] = ["worker_entry", "--exact", "--nocapture", "--quiet"];

/// libtest's name of the test `name` declared in module `module` (pass
/// `module_path!()`): the module path without the crate's name. Each test
/// family is one crate (`tests/process/main.rs` is the crate `process`), so
/// `child_entry` in `tests/process/shutdown.rs` is `shutdown::child_entry`.
pub fn test_path(module: &str, name: &str) -> String {
    match module.split_once("::") {
        Some((_crate, rest)) => format!("{rest}::{name}"),
        None => name.to_string(),
    }
}

/// A pool builder whose workers are this test binary.
pub fn builder() -> ProcessPoolBuilder {
    ProcessPoolExecutor::builder().worker_args(WORKER_ARGS)
}

/// A pool of `n` workers that are this test binary.
pub fn pool(n: usize) -> ProcessPoolExecutor {
    builder()
        .max_workers(n)
        .build()
        .expect("build a process pool")
}

/// A pool of `n` workers that are this test binary, under
/// `restart_workers(true)`.
pub fn restarting_pool(n: usize) -> ProcessPoolExecutor {
    builder()
        .max_workers(n)
        .restart_workers(true)
        .build()
        .expect("build a process pool")
}

/// A launcher whose first launch is a real worker (this test binary), and
/// every later one a process that exits before its handshake, as `ssh`
/// does for a host that is down. `launches` counts them all.
#[derive(Debug, Default)]
pub struct OneGoodHost {
    pub launches: Arc<AtomicUsize>,
}

impl Launcher for OneGoodHost {
    fn launch(&self, spec: &WorkerSpec) -> Result<Spawned, Error> {
        if self.launches.fetch_add(1, Ordering::SeqCst) == 0 {
            return Local::new().launch(&spec.clone().with_args(WORKER_ARGS));
        }
        let mut down = Command::new("sh");
        down.args([
            "-c",
            "echo 'ssh: connect to host down: Connection refused' >&2; exit 255",
        ]);
        Spawned::spawn(down, Some("down".to_string()))
    }
}

// ---------------------------------------------------------------------------
// Tasks (run in the worker processes; name them with `task!` at the call).

/// The worker's process id.
pub fn pid() -> u32 {
    std::process::id()
}

/// Sleeps `ms` milliseconds; returns the worker's pid.
pub fn sleep_ms(ms: u64) -> u32 {
    thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// `x * x`.
pub fn square(x: u64) -> u64 {
    x * x
}

/// `a` to the power `b`, wrapping.
pub fn pow(a: u64, b: u32) -> u64 {
    a.wrapping_pow(b)
}

/// Aborts its worker.
pub fn abort_now() -> u32 {
    std::process::abort()
}

/// Aborts its worker on its first try (counted in `{dir}/tries`), then
/// returns the number of its try.
pub fn abort_first(dir: String) -> usize {
    let path = Path::new(&dir).join("tries");
    let n = fs::read_to_string(&path).map_or(0, |t| t.len()) + 1;
    fs::write(&path, "x".repeat(n)).expect("count the try");
    if n == 1 {
        std::process::abort();
    }
    n
}

/// Never returns on its own.
pub fn stuck() -> u32 {
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

/// Ends the worker process with `code` in the middle of a task.
pub fn exit_with(code: i32) -> u32 {
    std::process::exit(code)
}

/// Marks `{dir}/started-{pid}-{n}`, then blocks until `{dir}/open` exists
/// (see [`Scratch::open`]); returns the worker's pid. Gives up with a panic
/// after [`LONG`] so that a forgotten gate fails instead of hanging.
pub fn gate(dir: String) -> u32 {
    static N: AtomicU64 = AtomicU64::new(0);
    let me = std::process::id();
    let n = N.fetch_add(1, Ordering::Relaxed);
    touch(&Path::new(&dir).join(format!("started-{me}-{n}")));
    let open = Path::new(&dir).join("open");
    let deadline = Instant::now() + LONG;
    // A removed directory counts as open: its test is over.
    while !open.exists() && Path::new(&dir).exists() {
        assert!(Instant::now() < deadline, "the gate in {dir} never opened");
        thread::sleep(Duration::from_millis(2));
    }
    me
}

/// Marks `{dir}/ran-{id}`, then sleeps `ms` milliseconds; returns `id`.
pub fn mark(dir: String, id: u32, ms: u64) -> u32 {
    touch(&Path::new(&dir).join(format!("ran-{id}")));
    thread::sleep(Duration::from_millis(ms));
    id
}

/// Creates an empty file; best effort (the test may be over).
fn touch(path: &Path) {
    let _ = fs::write(path, b"");
}

// ---------------------------------------------------------------------------
// A scratch directory: the test's side of `gate` and `mark`.

/// A fresh directory under the system's temporary directory, removed on
/// drop, which also opens its gate (tasks of a failed test then finish).
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("cf-ptest-{}-{tag}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create a scratch directory");
        Scratch { path }
    }

    /// The directory, as the `String` the tasks take.
    pub fn dir(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the gate: every `gate` task on this directory returns.
    pub fn open(&self) {
        fs::write(self.path.join("open"), b"").expect("open the gate");
    }

    /// How many files whose names start with `prefix` exist.
    pub fn count(&self, prefix: &str) -> usize {
        fs::read_dir(&self.path)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                    .count()
            })
            .unwrap_or(0)
    }

    /// How many `gate` tasks have started.
    pub fn started(&self) -> usize {
        self.count("started-")
    }

    /// Waits until `n` `gate` tasks have started.
    #[track_caller]
    pub fn wait_started(&self, n: usize) {
        eventually(&format!("{n} gate tasks started"), || self.started() >= n);
    }

    /// The pids of the markers named `<prefix><pid>[-n]` (as `gate` marks
    /// `started-<pid>-<n>`), sorted, each once.
    pub fn pids(&self, prefix: &str) -> Vec<u32> {
        let mut pids: Vec<u32> = fs::read_dir(&self.path)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let rest = name.strip_prefix(prefix)?;
                rest.split('-').next()?.parse().ok()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Whether `mark` ran for `id`.
    pub fn ran(&self, id: u32) -> bool {
        self.path.join(format!("ran-{id}")).exists()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Gate tasks still waiting take the missing directory as open.
        let _ = fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------
// Values that count themselves per process.

fn live_table() -> &'static Mutex<HashMap<u64, i64>> {
    static LIVE: OnceLock<Mutex<HashMap<u64, i64>>> = OnceLock::new();
    LIVE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// A fresh key for [`Tracked`] values, unique in this process.
pub fn fresh_key() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed) << 20
}

/// How many [`Tracked`] values with `key` are alive in this process. Also a
/// task: asks a worker about its own values.
pub fn live(key: u64) -> i64 {
    *live_table().lock().unwrap().get(&key).unwrap_or(&0)
}

/// A value that counts itself while alive, per process and key: creating
/// one (also by deserializing) adds 1 to `live(key)`, dropping it subtracts
/// 1. It travels as its key.
#[derive(Debug)]
pub struct Tracked {
    pub key: u64,
}

impl Tracked {
    pub fn new(key: u64) -> Self {
        *live_table().lock().unwrap().entry(key).or_insert(0) += 1;
        Tracked { key }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        *live_table().lock().unwrap().entry(self.key).or_insert(0) -= 1;
    }
}

impl Serialize for Tracked {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.key.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Tracked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u64::deserialize(d).map(Tracked::new)
    }
}

/// Task: holds `t` while running; returns how many values with its key
/// are alive in the worker meanwhile.
pub fn hold(t: Tracked) -> i64 {
    live(t.key)
}

/// Task: makes a tracked value in the worker and returns it.
pub fn make_tracked(key: u64) -> Tracked {
    Tracked::new(key)
}

// ---------------------------------------------------------------------------
// Values that refuse to be serialized.

/// Serializes like a plain struct unless `fail` is set, in which case
/// serialization fails with a custom error.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Picky {
    pub fail: bool,
    pub value: u32,
}

impl Serialize for Picky {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.fail {
            return Err(ser::Error::custom("picky refuses to be serialized"));
        }
        let mut st = s.serialize_struct("Picky", 2)?;
        st.serialize_field("fail", &self.fail)?;
        st.serialize_field("value", &self.value)?;
        st.end()
    }
}

/// Task: the value inside.
pub fn picky_value(p: Picky) -> u32 {
    p.value
}

/// Task: a result that fails to serialize in the worker if `fail`.
pub fn picky_result(fail: bool) -> Picky {
    Picky { fail, value: 7 }
}

/// A byte buffer that travels as one byte string (like `serde_bytes`), so
/// that 100 MB encode at memcpy speed even in a debug build.
#[derive(Debug, Clone, PartialEq)]
pub struct Bytes(pub Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl Visitor<'_> for BytesVisitor {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
        }
        d.deserialize_byte_buf(BytesVisitor)
    }
}

/// Task: the length of the buffer.
pub fn bytes_len(b: Bytes) -> usize {
    b.0.len()
}

/// Task: reads the buffer, then ends the worker at once.
pub fn bytes_then_exit(b: Bytes) -> usize {
    std::process::exit(if b.0.is_empty() { 1 } else { 9 })
}

// ---------------------------------------------------------------------------
// Process checks through /proc.

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `Z`, ...), or `None`
/// if there is no such process (it exited and was reaped).
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": comm may hold spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// True if `pid` is a running (or sleeping) process, not a zombie.
pub fn alive(pid: u32) -> bool {
    matches!(proc_state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// True if `pid` no longer exists at all: it exited and was reaped.
pub fn reaped(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Polls `cond` until it holds; false after `limit`.
pub fn within(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Polls `cond` until it holds, failing the test after [`LONG`].
#[track_caller]
pub fn eventually(what: &str, cond: impl FnMut() -> bool) {
    assert!(within(LONG, cond), "never happened within {LONG:?}: {what}");
}

/// Sends `signal` to `pid`.
pub fn send_signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) only takes plain integers; a stale pid at worst
    // signals nothing (ESRCH).
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
}

// ---------------------------------------------------------------------------
// Child processes that run one test of this binary as a program.

/// This test binary run again to execute only the test `name`, with `env`
/// added to its environment (such a test returns at once without it). Its
/// stdout lines arrive on a channel; the child is killed and reaped when
/// this is dropped.
#[derive(Debug)]
pub struct ChildRun {
    pub child: Child,
    lines: crossbeam_channel::Receiver<String>,
}

impl ChildRun {
    pub fn start(name: &str, env: &[(&str, &str)]) -> Self {
        let exe = std::env::current_exe().expect("the test binary");
        let mut child = Command::new(exe)
            .args([name, "--exact", "--nocapture", "--quiet"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the test binary again");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = crossbeam_channel::unbounded();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        ChildRun { child, lines }
    }

    /// The first stdout line starting with `prefix`, without the prefix;
    /// fails the test after [`LONG`].
    #[track_caller]
    pub fn line_after(&self, prefix: &str) -> String {
        let deadline = Instant::now() + LONG;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(e) => panic!("no line starting with {prefix:?} within {LONG:?}: {e}"),
            }
        }
    }

    /// Waits for the child to exit; fails the test after [`LONG`].
    #[track_caller]
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + LONG;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the child process did not exit within {LONG:?}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for ChildRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses space-separated pids.
pub fn parse_pids(s: &str) -> Vec<u32> {
    s.split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect()
}

// ---------------------------------------------------------------------------
// Mixed work.

/// On `pool` of two workers: after a burst of no-ops, [3 s, 4 x 0.5 s]
/// takes the long one's 3 s: the short ones run on the other worker (2 s of
/// them, so it never has to take one after the long one), not stranded
/// behind the long one in the pipe they were sent to (4 s, as before
/// recalls).
pub fn short_tasks_after_a_burst_run_beside_a_long_one(pool: &ProcessPoolExecutor) {
    let noops: Vec<_> = (0..50u64)
        .map(|x| pool.submit(concurrent_futures::task!(square), x))
        .collect();
    for (x, mut f) in (0..50u64).zip(noops) {
        assert_eq!(f.result_timeout(LONG), Ok(x * x));
    }
    let started = Instant::now();
    let mut long = pool.submit(concurrent_futures::task!(sleep_ms), 3000);
    let shorts: Vec<_> = (0..4)
        .map(|_| pool.submit(concurrent_futures::task!(sleep_ms), 500))
        .collect();
    let long_pid = long.result_timeout(LONG).expect("the long task");
    for mut f in shorts {
        let pid = f.result_timeout(LONG).expect("a short task");
        assert_ne!(pid, long_pid, "a short task waited behind the long one");
    }
    let makespan = started.elapsed();
    assert!(makespan < Duration::from_millis(3700), "took {makespan:?}");
}
