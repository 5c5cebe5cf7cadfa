//! Issue 14's launcher items, against the real daemons of
//! `scripts/test-cluster` (see `cluster_common`): the shipped program's
//! cache (SHA-256 key, private and trusted directories, pruning), the test
//! entry in remote workers, the remote worker's real status, its pid, its
//! name in `ps`, its environment, and the remote shell's noise.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::cluster_common::{
    assert_fails_naming, busy_worker, fresh_cache, one_slurm_worker, over_slurm, over_ssh,
    slurm_node, ssh, ssh_config, write_script,
};
use crate::process_common::*;
use concurrent_futures::launch::Slurm;
use concurrent_futures::{task, ProcessPoolExecutor};

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The error of `fut`, which must fail within [`LONG`].
#[track_caller]
fn failure<T: std::fmt::Debug>(mut fut: concurrent_futures::Future<T>) -> String {
    fut.result_timeout(LONG)
        .expect_err("the task cannot succeed")
        .to_string()
}

/// The SHA-256 of this test binary, as lowercase hex.
fn sha256_of_this_binary() -> String {
    use sha2::{Digest, Sha256};
    let bytes = fs::read(std::env::current_exe().expect("exe")).expect("read the exe");
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------
// The binary cache.

#[test]
fn the_cache_is_keyed_by_sha256_and_created_private() {
    over_ssh(move |config| {
        let cache = fresh_cache("key");
        let launcher = ssh(&config, &[("node1", 1)]).cache_dir(cache.to_string_lossy());
        let pool = builder().launcher(launcher).build().expect("pool");
        assert_eq!(pool.submit(task!(square), 3).result_timeout(LONG), Ok(9));
        assert_eq!(
            names(&cache),
            [format!("worker-{}", sha256_of_this_binary())]
        );
        let mode = fs::metadata(&cache).expect("the cache").mode() & 0o777;
        assert_eq!(mode, 0o700, "the cache directory is {mode:o}");
        let _ = fs::remove_dir_all(&cache);
    });
}

/// Task: marks `{dir}/ran-{pid}`; it must never run from an untrusted cache.
fn leave_mark(dir: String) -> u32 {
    let me = std::process::id();
    let _ = fs::write(format!("{dir}/ran-{me}"), b"");
    me
}

/// Ships this binary into `cache` (for `node1`), then lets `spoil` change
/// the cache, and expects the next pool to refuse with `refusal`.
fn refused_after(tag: &str, spoil: impl Fn(&Path, &Path), refusal: &str) {
    let config = ssh_config().expect("ssh config");
    let cache = fresh_cache(tag);
    let launcher = || ssh(&config, &[("node1", 1)]).cache_dir(cache.to_string_lossy());
    let pool = builder().launcher(launcher()).build().expect("pool");
    assert_eq!(pool.submit(task!(square), 2).result_timeout(LONG), Ok(4));
    drop(pool);
    let program = cache.join(format!("worker-{}", sha256_of_this_binary()));
    assert!(program.exists(), "{:?}", names(&cache));
    spoil(&cache, &program);
    let scratch = Scratch::new(tag);
    let pool = builder().launcher(launcher()).build().expect("pool");
    let err = failure(pool.submit(task!(leave_mark), scratch.dir()));
    assert!(err.contains(refusal), "{err}");
    assert!(err.contains("node1"), "{err}");
    assert_eq!(
        scratch.count("ran-"),
        0,
        "a task ran from an untrusted cache"
    );
    let _ = fs::set_permissions(&cache, fs::Permissions::from_mode(0o700));
    let _ = fs::remove_dir_all(&cache);
}

#[test]
fn an_untrusted_cache_is_refused_never_run() {
    over_ssh(move |_config| {
        let mode = |path: &Path, mode: u32| {
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
        };
        refused_after(
            "world-dir",
            |cache, _| mode(cache, 0o777),
            "the cache directory",
        );
        refused_after(
            "group-dir",
            |cache, _| mode(cache, 0o770),
            "others may write to it",
        );
        refused_after(
            "group-program",
            |_, program| mode(program, 0o770),
            "the cached program",
        );
        // Not owned by the user (the tests run as root, who can give it away).
        refused_after(
            "foreign-program",
            |_, program| {
                std::os::unix::fs::chown(program, Some(65534), Some(65534)).expect("chown");
            },
            "the cached program",
        );
    });
}

#[test]
fn a_copy_being_shipped_is_private() {
    over_ssh(move |config| {
        // A client that passes the first block of its input on, then
        // pauses a second: the temporary copy exists meanwhile.
        let dir = Scratch::new("slow-ship");
        let wrapper = dir.path().join("ssh");
        write_script(
            &wrapper,
            "#!/bin/sh\n{ dd bs=65536 count=1 2>/dev/null; sleep 1; cat; } | exec ssh \"$@\"\n",
        );
        let cache = fresh_cache("tmp-mode");
        let launcher = ssh(&config, &[("node1", 1)])
            .ssh_program(wrapper.as_os_str())
            .cache_dir(cache.to_string_lossy());
        let pool = builder().launcher(launcher).build().expect("pool");
        // The first task to a host waits for its link (the copy included):
        // submit it on a thread of its own, and look meanwhile.
        let submitter = thread::spawn(move || {
            let result = pool.submit(task!(square), 5).result_timeout(LONG);
            (pool, result)
        });
        let mut seen = None;
        let found = within(LONG, || {
            seen = fs::read_dir(&cache).ok().and_then(|d| {
                d.filter_map(Result::ok)
                    .find(|e| e.file_name().to_string_lossy().contains(".tmp."))
                    .and_then(|e| e.metadata().ok())
                    .map(|m| m.mode() & 0o777)
            });
            seen.is_some()
        });
        assert!(found, "no temporary copy seen in {}", cache.display());
        assert_eq!(
            seen,
            Some(0o600),
            "the copy is {seen:?} (mode) while written"
        );
        let (_pool, result) = submitter.join().expect("the submitter");
        assert_eq!(result, Ok(25));
        let _ = fs::remove_dir_all(&cache);
    });
}

/// Creates `path` with a modification time `days` ago.
fn plant(path: &Path, days: u64) {
    let file = fs::File::create(path).expect("plant a file");
    let then = SystemTime::now() - Duration::from_secs(days * 24 * 3600);
    file.set_modified(then).expect("set its time");
}

#[test]
fn builds_unused_for_a_month_are_pruned_when_another_ships() {
    over_ssh(move |config| {
        let cache = fresh_cache("prune");
        fs::create_dir_all(&cache).expect("the cache");
        fs::set_permissions(&cache, fs::Permissions::from_mode(0o700)).expect("chmod");
        plant(&cache.join("worker-old"), 40);
        plant(&cache.join("worker-recent"), 5);
        plant(&cache.join("worker-half.tmp.4242"), 2);
        plant(&cache.join("worker-writing.tmp.4343"), 0);
        plant(&cache.join("notes.txt"), 400);
        let launcher = ssh(&config, &[("node1", 1)]).cache_dir(cache.to_string_lossy());
        let pool = builder().launcher(launcher).build().expect("pool");
        assert_eq!(pool.submit(task!(square), 6).result_timeout(LONG), Ok(36));
        let current = format!("worker-{}", sha256_of_this_binary());
        let mut expected = vec![
            "notes.txt".to_string(),
            current,
            "worker-recent".to_string(),
            "worker-writing.tmp.4343".to_string(),
        ];
        expected.sort();
        assert_eq!(names(&cache), expected);
        let _ = fs::remove_dir_all(&cache);
    });
}

// ---------------------------------------------------------------------------
// The test entry travels with every launch.

/// Set (to a scratch directory) only in the workers of the tests below.
const PROBE: &str = "CF_LAUNCH_ENTRY_PROBE";

/// In a worker that ran the whole suite, this test would run too: it
/// leaves a mark there.
#[test]
fn probe_for_the_whole_suite() {
    if let Some(dir) = std::env::var_os(PROBE) {
        let mark = Path::new(&dir).join(format!("ran-{}", std::process::id()));
        let _ = fs::write(mark, b"");
    }
}

/// Task: the worker's arguments after the program.
fn my_args() -> Vec<String> {
    std::env::args().skip(1).collect()
}

/// A pool on `launcher` without `worker_args` runs only the entry test.
fn only_the_entry_runs(launcher: impl concurrent_futures::launch::Launcher) {
    let scratch = Scratch::new("entry");
    let pool = ProcessPoolExecutor::builder()
        .launcher(launcher)
        .max_workers(1)
        .env(PROBE, scratch.dir())
        .build()
        .expect("a pool in a test with test_worker!()");
    let mut args = pool.submit(task!(my_args), ());
    assert_eq!(
        args.result_timeout(LONG),
        Ok(vec![
            "concurrent_futures_worker".to_string(),
            "--exact".to_string(),
            "--nocapture".to_string(),
            "--quiet".to_string(),
        ])
    );
    drop(pool);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(scratch.count("ran-"), 0, "another test ran in a worker");
}

#[test]
fn ssh_workers_run_only_the_test_entry() {
    over_ssh(|config| only_the_entry_runs(ssh(&config, &[("node1", 1)])));
}

#[test]
fn slurm_workers_run_only_the_test_entry() {
    over_slurm(|| only_the_entry_runs(Slurm::new()));
}

// ---------------------------------------------------------------------------
// The worker's real status.

#[test]
fn a_remote_worker_killed_by_a_signal_says_so() {
    over_ssh(move |config| {
        let scratch = Scratch::new("signal");
        let (_pool, remote, running) = busy_worker(ssh(&config, &[("node2", 1)]), &scratch);
        send_signal(remote, libc::SIGKILL);
        let reason = assert_fails_naming(running, "node2");
        assert!(
            reason.contains(&format!(
                "worker process {remote} on node2 was killed by signal SIGKILL (9)"
            )),
            "{reason}"
        );
    });
}

#[test]
fn abort_in_a_remote_worker_is_not_a_lost_connection() {
    over_ssh(move |config| {
        let pool = builder()
            .launcher(ssh(&config, &[("node1", 1)]))
            .build()
            .expect("pool");
        let reason = failure(pool.submit(task!(abort_now), ()));
        assert!(
            reason.contains("was killed by signal SIGABRT (6"),
            "{reason}"
        );
        assert!(!reason.contains("connection"), "{reason}");
    });
}

#[test]
fn a_remote_exit_code_is_the_worker_s() {
    over_ssh(move |config| {
        let pool = builder()
            .launcher(ssh(&config, &[("node1", 1)]))
            .build()
            .expect("pool");
        let reason = failure(pool.submit(task!(exit_with), 255));
        assert!(reason.contains("exited with code 255"), "{reason}");
        assert!(!reason.contains("connection"), "{reason}");
    });
}

// ---------------------------------------------------------------------------
// Pids, names, every host down.

#[test]
fn worker_pids_are_the_remote_workers() {
    over_ssh(move |config| {
        let pool = builder()
            .launcher(ssh(&config, &[("node1", 1), ("node2", 1)]))
            .max_workers(2)
            .build()
            .expect("pool");
        assert_eq!(pool.worker_pids(), Vec::<u32>::new());
        let scratch = Scratch::new("pids-ssh");
        let running: Vec<_> = (0..2)
            .map(|_| pool.submit(task!(gate), scratch.dir()))
            .collect();
        scratch.wait_started(2);
        let mut pids = pool.worker_pids();
        pids.sort_unstable();
        assert_eq!(pids, scratch.pids("started-"));
        scratch.open();
        for mut f in running {
            f.result_timeout(LONG).expect("the gate");
        }
    });
}

#[test]
fn slurm_worker_pids_and_start_failures_name_the_workers() {
    over_slurm(|| {
        let (pool, worker) = one_slurm_worker();
        assert_eq!(pool.worker_pids(), [worker], "not srun's pid");
        drop(pool);
        // An srun that cannot start the step.
        let dir = Scratch::new("srun-fails");
        let srun = dir.path().join("srun");
        write_script(
            &srun,
            "#!/bin/sh\necho 'srun: error: Unable to create step for job: no room' >&2\nexit 1\n",
        );
        let pool = builder()
            .launcher(Slurm::new().srun_program(srun.as_os_str()))
            .max_workers(1)
            .build()
            .expect("pool");
        let err = failure(pool.submit(task!(square), 2));
        assert!(!err.contains("process ?"), "{err}");
        assert!(
            err.contains(&format!("the link to {}", slurm_node())),
            "{err}"
        );
        assert!(err.contains("Unable to create step"), "{err}");
    });
}

/// Task: this process's `argv[0]`.
fn my_arg0() -> String {
    std::env::args().next().unwrap_or_default()
}

#[test]
fn remote_workers_carry_the_label_in_ps() {
    over_ssh(move |config| {
        let pool = builder()
            .launcher(ssh(&config, &[("node1", 1)]))
            .build()
            .expect("pool");
        let arg0 = pool
            .submit(task!(my_arg0), ())
            .result_timeout(LONG)
            .expect("argv[0]");
        let ours = std::env::args().next().unwrap_or_default();
        assert_eq!(arg0, format!("{ours} (concurrent-futures worker)"));
    });
}

#[test]
fn every_host_down_says_what_happens() {
    over_ssh(move |config| {
        let pool = builder()
            .launcher(ssh(&config, &[("down", 1)]))
            .restart_workers(true)
            .build()
            .expect("pool");
        let err = failure(pool.submit(task!(square), 2));
        assert!(!err.contains("next try"), "{err}");
        assert!(err.contains("a submit after that checks it again"), "{err}");
        assert!(
            err.contains("the tasks waiting for a worker fail now"),
            "{err}"
        );
    });
}

// ---------------------------------------------------------------------------
// The environment, and the remote shell's noise.

/// Task: the worker's value of `key`.
fn env_var(key: String) -> Option<String> {
    std::env::var(key).ok()
}

/// A task that writes to stderr.
fn say(line: String) -> u32 {
    eprintln!("{line}");
    0
}

/// Run as a child process by the tests below: a pool over ssh whose client
/// first writes a login shell's noise; prints the workers' variables.
#[test]
fn child_pool_with_env() {
    let Some(dir) = std::env::var_os("CF_CHILD_ENV") else {
        return;
    };
    let config = ssh_config().expect("ssh config");
    let wrapper = Path::new(&dir).join("noisy-ssh");
    write_script(
        &wrapper,
        "#!/bin/sh\necho 'pyenv: cannot rehash: noise of the login shell' >&2\nexec ssh \"$@\"\n",
    );
    let pool = builder()
        .launcher(ssh(&config, &[("node1", 1)]).ssh_program(wrapper.as_os_str()))
        .build()
        .expect("pool");
    for key in ["RUST_BACKTRACE", "RUST_LOG"] {
        let value = pool
            .submit(task!(env_var), key.to_string())
            .result_timeout(LONG)
            .expect("the variable");
        println!("VAR {key}={}", value.unwrap_or_default());
    }
    let mut said = pool.submit(task!(say), "the worker speaks".to_string());
    assert_eq!(said.result_timeout(LONG), Ok(0));
    drop(pool);
    println!("DONE");
}

/// Runs `child_pool_with_env`; its stdout and stderr.
fn run_child_pool() -> (String, String) {
    let scratch = Scratch::new("child-env");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args([
            test_path(module_path!(), "child_pool_with_env").as_str(),
            "--exact",
            "--nocapture",
            "--quiet",
        ])
        .env("CF_CHILD_ENV", scratch.dir())
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LOG", "debug,cf=trace")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the child");
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read(Box::new(child.stdout.take().expect("stdout")));
    let err = read(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + LIMIT_CHILD;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the child pool did not finish within {LIMIT_CHILD:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
    (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

const LIMIT_CHILD: Duration = Duration::from_secs(40);

#[test]
fn rust_backtrace_and_rust_log_reach_ssh_workers_and_the_shell_s_noise_does_not() {
    over_ssh(|_config| {
        let (out, err) = run_child_pool();
        assert!(out.contains("DONE"), "{out}\n{err}");
        assert!(out.contains("VAR RUST_BACKTRACE=1"), "{out}");
        assert!(out.contains("VAR RUST_LOG=debug,cf=trace"), "{out}");
        assert!(err.contains("the worker speaks"), "{err}");
        assert!(!err.contains("pyenv"), "{err}");
        assert!(!err.contains("CFSHIP"), "{err}");
    });
}

/// The noise still explains a failure: a host whose login fails after it.
#[test]
fn the_shell_s_noise_is_kept_for_errors() {
    over_ssh(move |config| {
        let dir = Scratch::new("noise-error");
        let wrapper = dir.path().join("ssh");
        write_script(
            &wrapper,
            "#!/bin/sh\nfor a; do last=$a; done\n\
             case $last in 'exit 0') exec ssh \"$@\" ;; esac\n\
             echo 'pyenv: cannot rehash: the home directory is full' >&2; exit 1\n",
        );
        let pool = builder()
            .launcher(ssh(&config, &[("node1", 1)]).ssh_program(wrapper.as_os_str()))
            .build()
            .expect("pool");
        let err = failure(pool.submit(task!(square), 2));
        assert!(err.contains("the home directory is full"), "{err}");
    });
}
