//! The host agent (`src/agent/serve.rs`) as a process: this test binary run
//! as `worker_entry` with `CONCURRENT_FUTURES_WORKER=agent`, spoken to in
//! agent frames over its stdin and stdout. Its workers are this binary
//! again (`worker_entry`, `CONCURRENT_FUTURES_WORKER=1`).
//!
//! Every read has a timeout: the agent's output is read on a thread and
//! handed over through a channel.

use std::io::{BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::common;
use crate::process_common::*;
use concurrent_futures::__fuzz::{
    call_frames, read_agent_reply, read_call_result, read_hello, AgentReply, AgentRequest,
};
use concurrent_futures::task;

/// How long dead workers may take to disappear once the agent is gone.
const KILLED_WITHIN: Duration = Duration::from_secs(2);

/// A running agent and what it wrote.
struct AgentRun {
    child: Child,
    input: Option<ChildStdin>,
    /// The pid its handshake gave.
    hello_pid: u32,
    /// Its frames, `Pong`s included; `Err` for a bad frame.
    replies: Receiver<Result<AgentReply, String>>,
    stderr: Arc<Mutex<String>>,
    pongs: usize,
}

impl AgentRun {
    /// Starts an agent of 2 slots that pings every `ping_ms`, and reads
    /// its handshake.
    fn start(ping_ms: u64) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("the test binary"))
            .args(WORKER_ARGS)
            .env("CONCURRENT_FUTURES_WORKER", "agent")
            .env(
                "CONCURRENT_FUTURES_AGENT",
                format!("slots=2,ping_ms={ping_ms}"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the agent");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let collected = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr_pipe.read(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                collected.lock().unwrap().push_str(&text);
            }
        });
        let (hello_tx, hello_rx) = crossbeam_channel::bounded(1);
        let (tx, replies) = crossbeam_channel::unbounded();
        thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let hello = read_hello(&mut r);
            let ok = hello.is_ok();
            let _ = hello_tx.send(hello);
            if !ok {
                return;
            }
            loop {
                match read_agent_reply(&mut r) {
                    Ok(Some(reply)) => {
                        if tx.send(Ok(reply)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        let hello_pid = hello_rx
            .recv_timeout(LONG)
            .expect("the agent's handshake within LONG")
            .expect("a handshake the pool accepts");
        let input = child.stdin.take();
        AgentRun {
            child,
            input,
            hello_pid,
            replies,
            stderr,
            pongs: 0,
        }
    }

    fn send(&mut self, request: AgentRequest) {
        let input = self.input.as_mut().expect("the agent's stdin is open");
        input
            .write_all(&request.encode())
            .expect("write to the agent");
    }

    /// The next frame other than `Pong`; `None` once the agent's output
    /// ended. Fails the test after [`LONG`].
    fn next(&mut self) -> Option<AgentReply> {
        loop {
            match self.replies.recv_timeout(LONG) {
                Ok(Ok(AgentReply::Pong)) => self.pongs += 1,
                Ok(Ok(reply)) => return Some(reply),
                Ok(Err(e)) => panic!("the agent wrote a bad frame: {e}"),
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) => panic!("no frame from the agent in {LONG:?}"),
            }
        }
    }

    /// The next frame, which must exist.
    fn reply(&mut self) -> AgentReply {
        self.next().expect("the agent's output ended early")
    }

    /// Spawns worker `tag` as a real worker and returns the answer.
    fn spawn(&mut self, tag: u32) -> AgentReply {
        self.send(AgentRequest::Spawn {
            tag,
            args: WORKER_ARGS.iter().map(|a| a.to_string()).collect(),
            env: vec![("CONCURRENT_FUTURES_WORKER".into(), "1".into())],
        });
        // Other workers' output may come first.
        loop {
            match self.reply() {
                AgentReply::Output { tag: t, .. } if t != tag => {}
                reply => return reply,
            }
        }
    }

    /// Spawns worker `tag`, which must start; returns its pid.
    fn started(&mut self, tag: u32) -> u32 {
        match self.spawn(tag) {
            AgentReply::Started { tag: t, pid } if t == tag => pid,
            other => panic!("expected Started for {tag}, got {other:?}"),
        }
    }

    /// Waits for the agent to exit (at most [`LONG`]).
    fn exit_status(&mut self) -> ExitStatus {
        let deadline = Instant::now() + LONG;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the agent did not exit");
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for AgentRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment of process `pid`.
fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[test]
fn an_agent_starts_relays_signals_and_reaps_its_workers_within_its_slots() {
    common::arm_watchdog();
    let mut agent = AgentRun::start(200);
    assert_eq!(agent.hello_pid, agent.child.id());
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", agent.child.id())).unwrap();
    assert!(comm.trim_end().ends_with("-agent"), "{comm:?}");

    // A worker starts, with the pool's marker and without the agent's.
    let first = agent.started(1);
    assert!(alive(first));
    let env = environ(first);
    assert!(
        env.iter().any(|v| v == "CONCURRENT_FUTURES_WORKER=1"),
        "{env:?}"
    );
    assert!(
        !env.iter()
            .any(|v| v.starts_with("CONCURRENT_FUTURES_AGENT=")),
        "{env:?}"
    );

    // Its handshake comes through Output frames; so does the answer to a
    // call sent in Data frames.
    agent.send(AgentRequest::Data {
        tag: 1,
        bytes: call_frames(task!(square), &7u64).unwrap(),
    });
    let mut out = Vec::new();
    let answer: u64 = loop {
        match agent.reply() {
            AgentReply::Output {
                tag: 1,
                stderr: false,
                bytes,
            } if !bytes.is_empty() => out.extend(bytes),
            AgentReply::Output { stderr: true, .. } => {}
            other => panic!("expected worker 1's output, got {other:?}"),
        }
        let mut rest = &out[..];
        if let Ok(pid) = read_hello(&mut rest) {
            assert_eq!(pid, first, "the worker's handshake names its pid");
            if let Some(value) = read_call_result(rest).unwrap() {
                break value;
            }
        }
    };
    assert_eq!(answer, 49);

    // Two slots: a third worker is refused while two live.
    let second = agent.started(2);
    match agent.spawn(3) {
        AgentReply::SpawnFailed { tag: 3, error } => assert!(error.contains("2 slots"), "{error}"),
        other => panic!("expected SpawnFailed for 3, got {other:?}"),
    }

    // SIGKILL: the stdout ends, then the exit with signal 9.
    agent.send(AgentRequest::Signal { tag: 1, kill: true });
    let mut stdout_ended = false;
    let status = loop {
        match agent.reply() {
            AgentReply::Output {
                tag: 1,
                stderr: false,
                bytes,
            } => stdout_ended |= bytes.is_empty(),
            AgentReply::Exited { tag: 1, status } => break status,
            AgentReply::Output { .. } => {}
            other => panic!("expected worker 1's end, got {other:?}"),
        }
    };
    assert!(stdout_ended, "the empty Output comes before Exited");
    assert_eq!(ExitStatus::from_raw(status).signal(), Some(9));
    assert!(within(KILLED_WITHIN, || !alive(first)));

    // The reaped worker freed its slot; a closed stdin ends a worker
    // cleanly; data for it afterwards is dropped without a word.
    let third = agent.started(3);
    agent.send(AgentRequest::Close { tag: 3 });
    let status = loop {
        match agent.reply() {
            AgentReply::Exited { tag: 3, status } => break status,
            AgentReply::Output { .. } => {}
            other => panic!("expected worker 3's end, got {other:?}"),
        }
    };
    assert_eq!(ExitStatus::from_raw(status).code(), Some(0));
    assert!(within(KILLED_WITHIN, || !alive(third)));
    agent.send(AgentRequest::Data {
        tag: 3,
        bytes: b"late".to_vec(),
    });
    agent.send(AgentRequest::Ping);

    // The link closes: the live worker is killed at once, the agent exits 0.
    assert!(alive(second));
    agent.input = None;
    let status = agent.exit_status();
    assert_eq!(status.code(), Some(0), "{}", agent.stderr());
    assert!(
        within(KILLED_WITHIN, || !alive(second)),
        "worker 2 outlived the agent"
    );
}

#[test]
fn a_silent_pool_makes_the_agent_kill_its_workers_and_exit() {
    common::arm_watchdog();
    let mut agent = AgentRun::start(100);
    let worker = agent.started(1);
    let began = Instant::now();
    // Nothing more is sent: after 6 pings (600 ms) the agent gives up.
    let status = agent.exit_status();
    assert!(
        began.elapsed() >= Duration::from_millis(400),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(status.code(), Some(1));
    assert!(
        within(KILLED_WITHIN, || !alive(worker)),
        "the worker outlived the agent"
    );
    while agent.next().is_some() {}
    assert!(agent.pongs >= 3, "{} pongs", agent.pongs);
    let stderr = agent.stderr();
    assert!(stderr.contains("no frame from the pool"), "{stderr}");
}

#[test]
fn a_malformed_frame_ends_the_agent_with_code_3() {
    common::arm_watchdog();
    let mut agent = AgentRun::start(1000);
    let worker = agent.started(1);
    // A SIGNAL frame asking for signal 2.
    let input = agent.input.as_mut().unwrap();
    input.write_all(&[6, 0, 0, 0, 0x13, 1, 0, 0, 0, 2]).unwrap();
    assert_eq!(agent.exit_status().code(), Some(3));
    assert!(within(KILLED_WITHIN, || !alive(worker)));
    let stderr = agent.stderr();
    assert!(stderr.contains("signal 2"), "{stderr}");
}

#[test]
fn bad_settings_are_refused_with_code_3() {
    common::arm_watchdog();
    let out = Command::new(std::env::current_exe().expect("the test binary"))
        .args(WORKER_ARGS)
        .env("CONCURRENT_FUTURES_WORKER", "agent")
        .env("CONCURRENT_FUTURES_AGENT", "slots=2")
        .stdin(Stdio::null())
        .output()
        .expect("run the agent");
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`ping_ms` is missing"), "{stderr}");
}
