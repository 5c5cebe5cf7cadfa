//! Issue 16, part 5: a terminal's Ctrl-C goes to its whole foreground
//! process group. A program that catches SIGINT to stop gracefully must
//! keep its running tasks: the workers may not get the signal.
//!
//! The program is this test binary run again as `ctrl_c_program`, under a
//! process group of its own as a shell would start it; the test sends
//! SIGINT to that group, as the terminal does.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::process_common::test_path;
use concurrent_futures::launch::{Slurm, Ssh};
use concurrent_futures::{task, ProcessPoolExecutor};

/// The upper bound for "did not hang".
const LONG: Duration = Duration::from_secs(20);

/// Set for the child process that plays the interrupted program.
const PROGRAM_ENV: &str = "CF_TEST_CTRL_C_PROGRAM";

/// How long each task runs: long enough that the signal surely arrives
/// while both run.
const TASK_MS: u64 = 1_500;

/// Task: sleeps [`TASK_MS`], then returns `x * x`.
fn slow_square(x: u64) -> u64 {
    thread::sleep(Duration::from_millis(TASK_MS));
    x * x
}

/// Where the program's workers run: `local` (the default), `ssh` or
/// `slurm`, whose clients are children of the program as local workers are.
const VIA_ENV: &str = "CF_TEST_CTRL_C_VIA";

/// The program's pool of 2 workers, started as [`VIA_ENV`] says.
fn program_pool() -> ProcessPoolExecutor {
    let builder = ProcessPoolExecutor::builder().max_workers(2);
    // Only a local re-run finds `test_worker!`'s entry by itself.
    let entry = [
        "concurrent_futures_worker",
        "--exact",
        "--nocapture",
        "--quiet",
    ];
    let builder = match std::env::var(VIA_ENV).as_deref() {
        Ok("ssh") => {
            let config = std::env::var_os("CF_SSH_CONFIG").expect("CF_SSH_CONFIG");
            let ssh = Ssh::new()
                .ssh_args([OsString::from("-F"), config])
                .host("node1", 1)
                .host("node2", 1);
            builder.launcher(ssh).worker_args(entry)
        }
        Ok("slurm") => builder.launcher(Slurm::new()).worker_args(entry),
        _ => builder,
    };
    builder.build().expect("build the pool")
}

/// The program under test, when [`PROGRAM_ENV`] is set (else it returns
/// at once). With `PROGRAM_ENV=graceful`, a graceful stop as the guide's
/// "Ctrl-C" section shows it: starts 2 tasks, reports `RUNNING 2` and the
/// workers' pids, and at SIGINT stops submitting, lets the running tasks
/// finish and prints their results; exits 0 only if both finished. With
/// any other value it catches nothing, so SIGINT ends it.
#[test]
fn ctrl_c_program() {
    let Some(mode) = std::env::var_os(PROGRAM_ENV) else {
        return;
    };
    // Without the handler, `tx` stays here and nothing ever arrives: the
    // program waits below until SIGINT kills it.
    let (tx, interrupted) = mpsc::channel();
    if mode == "graceful" {
        ctrlc::set_handler(move || {
            let _ = tx.send(());
        })
        .expect("install the SIGINT handler");
    }
    let pool = program_pool();
    let futures: Vec<_> = (3..5).map(|x| pool.submit(task!(slow_square), x)).collect();
    let deadline = Instant::now() + LONG;
    while !futures.iter().all(|f| f.running()) {
        assert!(Instant::now() < deadline, "the tasks never started");
        thread::sleep(Duration::from_millis(5));
    }
    let pids: Vec<String> = pool.worker_pids().iter().map(u32::to_string).collect();
    println!("PIDS {}", pids.join(" "));
    println!("RUNNING {}", futures.len());
    std::io::stdout().flush().expect("flush stdout");
    // A real program would go on submitting here; it stops at Ctrl-C.
    interrupted.recv_timeout(LONG).expect("no SIGINT arrived");
    println!("INTERRUPTED");
    let in_time = pool.shutdown_timeout(LONG);
    let mut all_ok = in_time;
    for (i, fut) in futures.into_iter().enumerate() {
        let result = fut.result();
        all_ok &= result.is_ok();
        println!("RESULT {i} {result:?}");
    }
    std::io::stdout().flush().expect("flush stdout");
    std::process::exit(if all_ok { 0 } else { 1 });
}

/// Kills the program's whole group if the test fails midway.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            signal_group(&self.0, libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// Sends `signal` to the process group `child` leads, as a terminal does.
fn signal_group(child: &Child, signal: i32) {
    let pgid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    // SAFETY: kill(2) takes plain integers; a group that is gone is ESRCH.
    let rc = unsafe { libc::kill(-pgid, signal) };
    assert_eq!(rc, 0, "kill(-{pgid}, {signal}) failed");
}

/// Waits for `child` to exit; fails the test after [`LONG`].
fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + LONG;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "the program did not exit");
        thread::sleep(Duration::from_millis(5));
    }
}

/// The program, started in `mode` with its workers `via` as a shell starts
/// a job (a process group of its own), once it runs 2 tasks; with its
/// stdout lines so far and the channel of the rest.
fn start_program(mode: &str, via: &str) -> (Group, Vec<String>, mpsc::Receiver<String>) {
    let exe = std::env::current_exe().expect("the test binary");
    let child = Command::new(exe)
        .args([
            test_path(module_path!(), "ctrl_c_program").as_str(),
            "--exact",
            "--nocapture",
            "--quiet",
        ])
        .env(PROGRAM_ENV, mode)
        .env(VIA_ENV, via)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the program");
    let mut program = Group(child);
    let stdout = program.0.stdout.take().expect("piped stdout");
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + LONG;
    while !seen.iter().any(|l: &String| l == "RUNNING 2") {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(e) => panic!("the program never ran 2 tasks ({e}); it printed {seen:?}"),
        }
    }
    (program, seen, lines)
}

/// The worker pids the program printed.
fn worker_pids(seen: &[String]) -> Vec<u32> {
    let line = seen
        .iter()
        .find_map(|l| l.strip_prefix("PIDS "))
        .expect("a PIDS line");
    line.split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect()
}

/// True while `pid` runs (a zombie has ended).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next());
        !matches!(state, Some('Z' | 'X') | None)
    })
}

#[test]
fn sigint_to_the_terminal_group_lets_running_tasks_finish() {
    graceful_stop("local");
}

/// The `ssh` clients are children of the program too: one that got the
/// terminal's SIGINT would drop its worker mid-task.
#[test]
fn sigint_to_the_terminal_group_spares_ssh_clients() {
    if daemons_missing("CF_SSH_CONFIG", "a test sshd") {
        return;
    }
    graceful_stop("ssh");
}

/// The same for `srun` clients.
#[test]
fn sigint_to_the_terminal_group_spares_srun_clients() {
    if daemons_missing("SLURM_JOB_ID", "a Slurm allocation (salloc -n 2)") {
        return;
    }
    graceful_stop("slurm");
}

/// True, after saying so, if `var` is not set (outside
/// `scripts/test-cluster`, which starts the daemons); fails under CI.
fn daemons_missing(var: &str, what: &str) -> bool {
    if std::env::var_os(var).is_some() {
        return false;
    }
    let ci = std::env::var_os("CI").is_some_and(|v| v == "true" || v == "1");
    assert!(!ci, "{var} is not set: CI must run {what}");
    eprintln!("skipped: {var} is not set (no {what}); run it with scripts/test");
    true
}

/// Interrupts the graceful program (workers `via`) while 2 tasks run:
/// both finish and it prints their results. Ctrl-C twice, as an impatient
/// user does: `srun` lets one pass and aborts its step at a second one
/// within a second.
fn graceful_stop(via: &str) {
    let (mut program, mut seen, lines) = start_program("graceful", via);
    signal_group(&program.0, libc::SIGINT);
    thread::sleep(Duration::from_millis(200));
    signal_group(&program.0, libc::SIGINT);
    let status = wait_exit(&mut program.0);
    // The reader ends at the program's end of output.
    while let Ok(line) = lines.recv_timeout(LONG) {
        seen.push(line);
    }
    let results: Vec<&String> = seen.iter().filter(|l| l.starts_with("RESULT ")).collect();
    assert_eq!(
        results,
        ["RESULT 0 Ok(9)", "RESULT 1 Ok(16)"],
        "the running tasks did not survive Ctrl-C; the program printed {seen:?}"
    );
    assert!(status.success(), "{status}; it printed {seen:?}");
}

/// A program that does not catch SIGINT dies of it, and its workers, which
/// did not get it, still end with it (they watch their parent).
#[test]
fn without_a_handler_ctrl_c_still_ends_program_and_workers() {
    let (mut program, seen, _lines) = start_program("default", "local");
    let pids = worker_pids(&seen);
    assert_eq!(pids.len(), 2, "{seen:?}");
    assert!(
        pids.iter().all(|&p| alive(p)),
        "the workers are not running"
    );
    signal_group(&program.0, libc::SIGINT);
    let status = wait_exit(&mut program.0);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGINT),
        "{status}"
    );
    let deadline = Instant::now() + Duration::from_secs(1);
    while pids.iter().any(|&p| alive(p)) {
        assert!(
            Instant::now() < deadline,
            "workers outlived their interrupted parent by 1 s"
        );
        thread::sleep(Duration::from_millis(5));
    }
}
