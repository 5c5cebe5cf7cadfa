//! The library prints nothing of its own: it reports through `tracing`
//! (target `concurrent_futures`). A subscriber installed for the whole
//! test binary records every event; each test takes the binary's lock,
//! clears the record, and checks what its pool said, with fields.

mod common;
mod process_common;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use concurrent_futures::launch::{Launcher, Ssh, WorkerSpec};
use concurrent_futures::{task, Error, ThreadPoolExecutor};
use process_common::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

#[test]
fn worker_entry() {
    concurrent_futures::init();
}

/// One recorded event.
#[derive(Debug, Clone)]
struct Seen {
    level: Level,
    target: String,
    message: String,
    fields: BTreeMap<String, String>,
}

impl Visit for Seen {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

impl Seen {
    fn put(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = value;
        } else {
            self.fields.insert(field.name().to_string(), value);
        }
    }
}

/// Records every event, at every level.
struct Recorder;

fn record() -> &'static Mutex<Vec<Seen>> {
    static SEEN: OnceLock<Mutex<Vec<Seen>>> = OnceLock::new();
    SEEN.get_or_init(|| Mutex::new(Vec::new()))
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let mut seen = Seen {
            level: *meta.level(),
            target: meta.target().to_string(),
            message: String::new(),
            fields: BTreeMap::new(),
        };
        event.record(&mut seen);
        record()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(seen);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Installs the recorder (once), takes the binary's lock and clears the
/// record: the tests of this file run one at a time.
fn start() -> MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    static INSTALL: OnceLock<()> = OnceLock::new();
    common::arm_watchdog();
    INSTALL.get_or_init(|| {
        tracing::subscriber::set_global_default(Recorder).expect("the only subscriber");
    });
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    record().lock().unwrap_or_else(|e| e.into_inner()).clear();
    guard
}

/// The events recorded so far whose message starts with `message`.
fn events(message: &str) -> Vec<Seen> {
    let all = record().lock().unwrap_or_else(|e| e.into_inner()).clone();
    all.into_iter()
        .filter(|e| e.message.starts_with(message))
        .collect()
}

/// Waits until an event whose message starts with `message` is recorded.
#[track_caller]
fn wait_for(message: &str) -> Seen {
    eventually(&format!("an event {message:?}"), || {
        !events(message).is_empty()
    });
    events(message).remove(0)
}

#[test]
fn worker_start_replacement_and_time_limit_are_events_with_fields() {
    let _one = start();
    let pool = restarting_pool(1);
    let pid = pool
        .submit(task!(process_common::pid), ())
        .result_timeout(LONG);
    let pid = pid.expect("a worker");
    let started = wait_for("worker started");
    assert_eq!(started.target, "concurrent_futures");
    assert_eq!(started.level, Level::INFO);
    assert_eq!(started.fields["host"], "localhost");
    assert_eq!(started.fields["pid"], pid.to_string());

    let crash = pool.submit(task!(abort_now), ()).result_timeout(LONG);
    assert!(matches!(crash, Err(Error::WorkerDied(_))));
    let replaced = wait_for("worker replaced");
    assert_eq!(replaced.level, Level::WARN);
    assert_eq!(replaced.fields["pid"], pid.to_string());
    assert!(
        replaced.fields["status"].contains("SIGABRT"),
        "{replaced:?}"
    );

    let limited = task!(stuck).time_limit(Duration::from_millis(100));
    let late = pool.submit(limited, ()).result_timeout(LONG);
    assert_eq!(late, Err(Error::TimeLimit(Duration::from_millis(100))));
    let killed = wait_for("worker killed at a time limit");
    assert_eq!(killed.fields["limit_ms"], "100");
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn a_retried_task_is_an_event_naming_the_task_and_its_try() {
    let _one = start();
    let s = Scratch::new("trace-retry");
    let pool = pool(1);
    let _first = pool.submit(task!(square), 2).result_timeout(LONG);
    let mut fut = pool.submit(task!(abort_first).retries(1), s.dir());
    assert_eq!(fut.result_timeout(LONG), Ok(2));
    let retried = wait_for("task retried");
    assert_eq!(retried.level, Level::WARN);
    assert_eq!(retried.fields["task"], "submit #1");
    assert_eq!(retried.fields["attempt"], "2");
    assert!(retried.fields["reason"].contains("SIGABRT"), "{retried:?}");
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn a_broken_pool_is_an_error_event_with_its_reason() {
    let _one = start();
    let pool = pool(1);
    let crash = pool.submit(task!(abort_now), ()).result_timeout(LONG);
    assert!(matches!(crash, Err(Error::BrokenPool(_))));
    let died = wait_for("worker died");
    assert!(died.fields["reason"].contains("SIGABRT"), "{died:?}");
    let broken = wait_for("pool broken");
    assert_eq!(broken.level, Level::ERROR);
    assert!(broken.fields["reason"].contains("SIGABRT"), "{broken:?}");
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn a_worker_that_fails_to_start_is_a_backoff_event_with_its_delay() {
    let _one = start();
    let pool = concurrent_futures::ProcessPoolExecutor::builder()
        .max_workers(2)
        .restart_workers(true)
        .launcher(OneGoodHost::default())
        .build()
        .expect("pool");
    // Two tasks at once: the second worker's launch fails before its
    // handshake while the first lives.
    let s = Scratch::new("trace-backoff");
    let blocked = pool.submit(task!(gate), s.dir());
    let _second = pool.submit(task!(square), 3);
    let backoff = wait_for("a worker failed before it was ready");
    assert_eq!(backoff.level, Level::WARN);
    assert_eq!(backoff.fields["delay_ms"], "100");
    assert!(
        backoff.fields["reason"].contains("Connection refused"),
        "{backoff:?}"
    );
    s.open();
    let mut blocked = blocked;
    assert!(blocked.result_timeout(LONG).is_ok());
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn ssh_hosts_going_down_and_up_are_events() {
    let _one = start();
    // A client that fails as ssh does for an unreachable host.
    let down = Ssh::new()
        .host("nowhere", 1)
        .ssh_program("sh")
        .ssh_args([
            "-c",
            "echo 'ssh: connect to host nowhere: Connection refused' >&2; exit 255",
        ])
        .remote_program("/bin/true");
    assert!(down.launch(&WorkerSpec::new()).is_err());
    let event = wait_for("host down");
    assert_eq!(event.fields["host"], "nowhere");
    assert_eq!(event.fields["delay_ms"], "1000");
    assert!(
        event.fields["error"].contains("Connection refused"),
        "{event:?}"
    );
    let hosts = down.hosts();
    assert_eq!(hosts.len(), 1);
    assert!(!hosts[0].up);
    assert!(hosts[0]
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("refused")));

    // A client whose check succeeds: the host is up.
    let up = Ssh::new()
        .host("somewhere", 1)
        .ssh_program("sh")
        .ssh_args(["-c", "exit 0"])
        .remote_program("/bin/true");
    let _worker = up.launch(&WorkerSpec::new());
    let event = wait_for("host up");
    assert_eq!(event.fields["host"], "somewhere");
}

#[test]
fn nothing_above_trace_per_task_and_a_panicking_callback_is_an_error_event() {
    let _one = start();
    let pool = pool(2);
    // Warm: both workers are started.
    let s = Scratch::new("trace-warm");
    let warm: Vec<_> = (0..2).map(|_| pool.submit(task!(gate), s.dir())).collect();
    s.wait_started(2);
    s.open();
    for mut f in warm {
        assert!(f.result_timeout(LONG).is_ok());
    }
    record().lock().unwrap_or_else(|e| e.into_inner()).clear();
    let sum: u64 = pool
        .map(task!(square), 0..200u64)
        .chunksize(1)
        .map(|r| r.expect("square"))
        .sum();
    assert_eq!(sum, (0..200u64).map(|x| x * x).sum());
    let threads = ThreadPoolExecutor::new(2).expect("threads");
    let total: u64 = threads
        .map(|x: u64| x + 1, 0..200)
        .map(Result::unwrap)
        .sum();
    assert_eq!(total, 20_100);
    let loud: Vec<Seen> = record()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|e| e.level != Level::TRACE)
        .cloned()
        .collect();
    assert!(loud.is_empty(), "per-task events above trace: {loud:?}");

    let f = threads.submit(|| 1);
    f.add_done_callback(|_| panic!("callback bug"));
    let event = wait_for("a done callback panicked");
    assert_eq!(event.level, Level::ERROR);
    assert!(event.message.contains("callback bug"), "{event:?}");
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn a_slow_start_on_a_host_says_it_is_still_copying() {
    use std::os::unix::fs::PermissionsExt;
    let _one = start();
    // A host that passes its check but whose link takes 11 s to get
    // anywhere (as a big binary over a slow link would), then drops.
    let dir = Scratch::new("trace-slow-copy");
    let wrapper = dir.path().join("ssh");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\ncase \"$*\" in *'exit 0'*) exit 0;; esac\nsleep 11\nexit 255\n",
    )
    .expect("write the fake ssh");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
        .expect("make it executable");
    let slow = Ssh::new()
        .host("slow", 1)
        .ssh_program(wrapper.as_os_str())
        .remote_program("/bin/true");
    let started = std::time::Instant::now();
    assert!(slow.launch(&WorkerSpec::new()).is_err());
    assert!(started.elapsed() >= Duration::from_secs(10));
    let event = wait_for("the agent's program is still being copied");
    assert_eq!(event.level, Level::WARN);
    assert_eq!(event.fields["host"], "slow");
    assert_eq!(event.fields["waited_s"], "10");
}
