//! The agent process: what [`init`](crate::init) runs when
//! `CONCURRENT_FUTURES_WORKER=agent`. It answers the pool's handshake like
//! a worker, then serves [`ToAgent`] frames from its link (its stdin):
//! starts workers (this executable again), queues their input, signals
//! them, and relays their output and exit statuses as [`FromAgent`]
//! frames. `docs/design.md` gives the rules ("The host agent").
//!
//! What a decoded frame does is [`dispatch`], over the [`Host`] trait: the
//! real host here, a recording fake in the tests and the fuzz target.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use parking_lot::Mutex;
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, WaitOptions};

use super::frames::{FromAgent, Stream, ToAgent, MAX_DATA, SIGKILL};
use crate::process::frame::read_frame;
use crate::process::{hello, take_stdio, WORKER_ENV};
use crate::Error;

/// The value of `CONCURRENT_FUTURES_WORKER` that makes a process an agent.
pub(crate) const AGENT_MARK: &str = "agent";

/// The environment variable with an agent's settings:
/// `slots=K,ping_ms=P[,chunk=C]`.
pub(crate) const AGENT_ENV: &str = "CONCURRENT_FUTURES_AGENT";

/// The setting for how many workers may live at once.
pub(crate) const SLOTS_KEY: &str = "slots";

/// The setting for how often (in milliseconds) the agent writes a `Pong`.
pub(crate) const PING_KEY: &str = "ping_ms";

/// How many ping intervals of silence from the pool end the agent.
pub(crate) const SILENT_PINGS: u32 = 6;

/// The exit code after the link closed (or a write to it failed).
const EXIT_LINK_CLOSED: i32 = 0;

/// The exit code after [`SILENT_PINGS`] intervals without a frame.
const EXIT_SILENCE: i32 = 1;

/// The exit code after a protocol error or bad settings (a worker's too).
const EXIT_FAILED: i32 = 3;

/// The setting for the most bytes of a worker's output one `Output`
/// frame carries (optional).
pub(crate) const CHUNK_KEY: &str = "chunk";

/// The most bytes one `Output` frame carries unless the settings say
/// fewer.
const RELAY_CHUNK: usize = 64 * 1024;
const _: () = assert!(RELAY_CHUNK <= MAX_DATA);

/// The stack of the threads that relay a worker's input and output; small,
/// since a host of 64 slots has 192 of them.
const RELAY_STACK: usize = 128 * 1024;

/// The buffer the link is read through.
const LINK_BUFFER: usize = 256 * 1024;

/// An agent's settings, from [`AGENT_ENV`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    /// The most workers alive (started and not yet reaped) at once.
    pub(crate) slots: usize,
    /// How often the agent writes a `Pong`; six of these without a frame
    /// from the pool end it.
    pub(crate) ping: Duration,
    /// The most bytes of a worker's output in one `Output` frame (at most
    /// 64 KiB). `srun` forwards a message over about 2.5 KB in two pieces,
    /// and Nagle's algorithm holds the second for 40 ms: the Slurm
    /// launcher asks for less.
    pub(crate) chunk: usize,
}

impl Settings {
    /// Parses `slots=K,ping_ms=P[,chunk=C]`: each key at most once, in
    /// any order, the first two required, positive decimal integers,
    /// nothing else.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming what is wrong.
    pub(crate) fn parse(text: &str) -> Result<Settings, Error> {
        let bad = |why: String| {
            Error::InvalidArgument(format!("bad agent settings {AGENT_ENV}={text:?}: {why}"))
        };
        let (mut slots, mut ping, mut chunk) = (None, None, None);
        for part in text.split(',') {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("`{part}` is not key=value")))?;
            let setting = match key {
                SLOTS_KEY => &mut slots,
                PING_KEY => &mut ping,
                CHUNK_KEY => &mut chunk,
                _ => return Err(bad(format!("unknown setting `{key}`"))),
            };
            if setting.is_some() {
                return Err(bad(format!("`{key}` is given twice")));
            }
            let number = value
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| value.parse::<u64>().ok())
                .flatten()
                .filter(|&n| n > 0)
                .ok_or_else(|| bad(format!("`{key}` must be a positive integer, not `{value}`")))?;
            *setting = Some(number);
        }
        let slots = slots.ok_or_else(|| bad(format!("`{SLOTS_KEY}` is missing")))?;
        let ping = ping.ok_or_else(|| bad(format!("`{PING_KEY}` is missing")))?;
        Ok(Settings {
            slots: usize::try_from(slots).map_err(|_| bad(format!("{slots} slots")))?,
            ping: Duration::from_millis(ping),
            chunk: chunk.map_or(RELAY_CHUNK, |c| {
                usize::try_from(c).map_or(RELAY_CHUNK, |c| c.min(RELAY_CHUNK))
            }),
        })
    }
}

/// What [`dispatch`] asks of the host: the live workers (started, not yet
/// reaped) and what can be done to them. Workers leave on their own when
/// they are reaped; only `start` adds one.
pub(crate) trait Host {
    /// How many workers are alive.
    fn live(&self) -> usize;
    /// Whether worker `tag` is alive.
    fn holds(&self, tag: u32) -> bool;
    /// Starts worker `tag`; returns its pid, or why it could not start.
    fn start(
        &mut self,
        tag: u32,
        args: Vec<Vec<u8>>,
        env: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<u32, String>;
    /// Queues `bytes` for worker `tag`'s stdin; dropped if it is not alive
    /// or its stdin was closed.
    fn feed(&mut self, tag: u32, bytes: &[u8]);
    /// Closes worker `tag`'s stdin once what is queued is written.
    fn close(&mut self, tag: u32);
    /// Sends worker `tag` a signal ([`SIGKILL`] or `SIGTERM`), if alive.
    fn signal(&mut self, tag: u32, signal: u8);
}

/// Does what `message` asks of `host`, a host of `slots` slots; returns
/// the answer to write, if any (a `Spawn` has one).
///
/// # Errors
///
/// [`Error::Protocol`] for a `Spawn` of a tag that is alive: the agent
/// then exits.
pub(crate) fn dispatch(
    message: ToAgent<'_>,
    slots: usize,
    host: &mut impl Host,
) -> Result<Option<FromAgent<'static>>, Error> {
    match message {
        ToAgent::Spawn { tag, args, env } => {
            if host.holds(tag) {
                return Err(Error::Protocol(format!(
                    "a spawn of worker {tag}, which is still alive"
                )));
            }
            let live = host.live();
            if live >= slots {
                return Ok(Some(FromAgent::SpawnFailed {
                    tag,
                    error: format!(
                        "all {slots} slots of this host's agent are taken ({live} workers alive)"
                    ),
                }));
            }
            Ok(Some(match host.start(tag, args, env) {
                Ok(pid) => FromAgent::Started { tag, pid },
                Err(error) => FromAgent::SpawnFailed { tag, error },
            }))
        }
        ToAgent::Data { tag, bytes } => {
            if !bytes.is_empty() {
                host.feed(tag, bytes);
            }
            Ok(None)
        }
        ToAgent::Close { tag } => {
            host.close(tag);
            Ok(None)
        }
        ToAgent::Signal { tag, signal } => {
            host.signal(tag, signal);
            Ok(None)
        }
        ToAgent::Ping => Ok(None),
    }
}

/// Serves as an agent and exits the process: never returns.
pub(crate) fn run() -> ! {
    let failed = |e: Error| -> ! {
        eprintln!("concurrent-futures agent {}: {e}", std::process::id());
        std::process::exit(EXIT_FAILED)
    };
    let settings = std::env::var(AGENT_ENV)
        .map_err(|e| Error::InvalidArgument(format!("{AGENT_ENV}: {e}")))
        .and_then(|text| Settings::parse(&text))
        .unwrap_or_else(|e| failed(e));
    let (input, output) = take_stdio().unwrap_or_else(|e| failed(e));
    let shared = Arc::new(Shared {
        workers: Mutex::new(HashMap::new()),
        link: Mutex::new(File::from(output)),
        born: Instant::now(),
        heard_ms: AtomicU64::new(0),
        chunk: settings.chunk,
    });
    let mut buf = Vec::new();
    hello(&mut buf).unwrap_or_else(|e| failed(e));
    shared.write(&buf);
    let keeper = Arc::clone(&shared);
    let keeping = thread::Builder::new()
        .name("concurrent-futures-agent-ping".into())
        .stack_size(RELAY_STACK)
        .spawn(move || keep_alive(&keeper, settings.ping));
    if let Err(e) = keeping {
        failed(Error::Io(format!("cannot start the keepalive thread: {e}")));
    }
    let mut agent = Agent {
        shared: Arc::clone(&shared),
    };
    let mut link = BufReader::with_capacity(LINK_BUFFER, File::from(input));
    loop {
        let frame = match read_frame(&mut link) {
            Ok(Some(frame)) => frame,
            Ok(None) => shared.end(EXIT_LINK_CLOSED, None),
            Err(e @ Error::Protocol(_)) => shared.end(EXIT_FAILED, Some(&e.to_string())),
            Err(_) => shared.end(EXIT_LINK_CLOSED, None), // the link broke
        };
        shared.heard();
        match ToAgent::decode(&frame).and_then(|m| dispatch(m, settings.slots, &mut agent)) {
            Ok(Some(answer)) => shared.send(&answer, &mut buf),
            Ok(None) => {}
            Err(e) => shared.end(EXIT_FAILED, Some(&e.to_string())),
        }
    }
}

/// A live worker as the agent holds it.
#[derive(Debug)]
struct Live {
    pid: Pid,
    /// Its stdin's queue; `None` once closed.
    input: Option<crossbeam_channel::Sender<Vec<u8>>>,
}

/// What the agent's threads share.
#[derive(Debug)]
struct Shared {
    /// The live workers by tag. A worker leaves it when it is reaped, under
    /// this lock, and signals are sent under it: a signal never reaches a
    /// pid that was reaped (and maybe reused).
    workers: Mutex<HashMap<u32, Live>>,
    /// The link's output: every frame is written whole under this lock.
    link: Mutex<File>,
    /// When the agent started.
    born: Instant,
    /// When the last frame arrived, in milliseconds after `born`.
    heard_ms: AtomicU64,
    /// The most bytes of output in one `Output` frame.
    chunk: usize,
}

impl Shared {
    /// Milliseconds since `born`.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Notes that a frame arrived.
    fn heard(&self) {
        self.heard_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// How long the pool has been silent.
    fn silent_for(&self) -> Duration {
        let heard = self.heard_ms.load(Ordering::Relaxed);
        Duration::from_millis(self.now_ms().saturating_sub(heard))
    }

    /// Writes `message` as one frame, encoded in `buf`; ends the agent if
    /// the link is gone.
    fn send(&self, message: &FromAgent<'_>, buf: &mut Vec<u8>) {
        buf.clear();
        // Only an oversized frame fails, and ours are small.
        if message.encode(buf).is_ok() {
            self.write(buf);
        }
    }

    /// Writes whole frames unless another write is under way; ends the
    /// agent if the link is gone.
    fn try_write(&self, frames: &[u8]) {
        let Some(mut link) = self.link.try_lock() else {
            return;
        };
        if link.write_all(frames).is_err() {
            drop(link);
            self.end(EXIT_LINK_CLOSED, None);
        }
    }

    /// Writes whole frames; ends the agent if the link is gone.
    fn write(&self, frames: &[u8]) {
        let written = self.link.lock().write_all(frames);
        if written.is_err() {
            self.end(EXIT_LINK_CLOSED, None);
        }
    }

    /// Kills every live worker and exits with `code`, after saying `why`
    /// on stderr. The workers' lock is held to the end: the agent exits
    /// once, and no worker starts or is reaped meanwhile.
    fn end(&self, code: i32, why: Option<&str>) -> ! {
        let workers = self.workers.lock();
        for live in workers.values() {
            let _ = rustix::process::kill_process(live.pid, Signal::KILL);
        }
        if let Some(why) = why {
            eprintln!(
                "concurrent-futures agent {}: {why}; killed its {} workers",
                std::process::id(),
                workers.len()
            );
        }
        std::process::exit(code)
    }
}

/// The real host: worker processes on this machine.
#[derive(Debug)]
struct Agent {
    shared: Arc<Shared>,
}

impl Host for Agent {
    fn live(&self) -> usize {
        self.shared.workers.lock().len()
    }

    fn holds(&self, tag: u32) -> bool {
        self.shared.workers.lock().contains_key(&tag)
    }

    fn start(
        &mut self,
        tag: u32,
        args: Vec<Vec<u8>>,
        env: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<u32, String> {
        let mut command =
            Command::new(crate::launch::local::this_executable().map_err(|e| e.to_string())?);
        command
            .arg0(crate::launch::local::worker_arg0())
            .args(args.into_iter().map(OsString::from_vec))
            // The agent's own marks must not make the worker an agent.
            .env_remove(WORKER_ENV)
            .env_remove(AGENT_ENV)
            .envs(
                env.into_iter()
                    .map(|(k, v)| (OsString::from_vec(k), OsString::from_vec(v))),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        let pid = Pid::from_child(&child);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("a worker started without its pipes".to_string());
        };
        let (queue, queued) = crossbeam_channel::unbounded();
        self.shared.workers.lock().insert(
            tag,
            Live {
                pid,
                input: Some(queue),
            },
        );
        let (err_shared, out_shared) = (Arc::clone(&self.shared), Arc::clone(&self.shared));
        let started = small_thread(format!("cf-agent-in-{tag}"), move || {
            feed_stdin(stdin, &queued);
        })
        .and_then(|()| {
            small_thread(format!("cf-agent-err-{tag}"), move || {
                relay(&err_shared, tag, Stream::Stderr, stderr);
            })
        })
        .and_then(|()| {
            small_thread(format!("cf-agent-out-{tag}"), move || {
                relay(&out_shared, tag, Stream::Stdout, stdout);
                reap(&out_shared, tag, child);
            })
        });
        if let Err(e) = started {
            // Not reaped by a relay: reaped here, before anyone else could.
            self.shared.workers.lock().remove(&tag);
            let _ = rustix::process::kill_process(pid, Signal::KILL);
            let _ = rustix::process::waitpid(Some(pid), WaitOptions::empty());
            return Err(format!("cannot start the threads of a worker: {e}"));
        }
        u32::try_from(pid.as_raw_pid()).map_err(|e| format!("pid {pid:?}: {e}"))
    }

    fn feed(&mut self, tag: u32, bytes: &[u8]) {
        let workers = self.shared.workers.lock();
        if let Some(Live {
            input: Some(queue), ..
        }) = workers.get(&tag)
        {
            // Fails only if the worker's stdin broke: it is exiting.
            let _ = queue.send(bytes.to_vec());
        }
    }

    fn close(&mut self, tag: u32) {
        if let Some(live) = self.shared.workers.lock().get_mut(&tag) {
            live.input = None;
        }
    }

    fn signal(&mut self, tag: u32, signal: u8) {
        let signal = if signal == SIGKILL {
            Signal::KILL
        } else {
            Signal::TERM
        };
        if let Some(live) = self.shared.workers.lock().get(&tag) {
            let _ = rustix::process::kill_process(live.pid, signal);
        }
    }
}

/// Starts a relay thread with a small stack.
fn small_thread(name: String, f: impl FnOnce() + Send + 'static) -> Result<(), String> {
    thread::Builder::new()
        .name(name)
        .stack_size(RELAY_STACK)
        .spawn(f)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Writes what is queued for a worker to its stdin, in order, until the
/// queue closes (the stdin is then closed) or the stdin breaks.
fn feed_stdin(mut stdin: ChildStdin, queued: &Receiver<Vec<u8>>) {
    for bytes in queued {
        if stdin.write_all(&bytes).is_err() {
            return;
        }
    }
}

/// Relays one output stream of worker `tag` as `Output` frames until it
/// ends, then writes an empty one.
fn relay(shared: &Shared, tag: u32, stream: Stream, mut from: impl Read) {
    // The frame is built in place: the header once, each read right
    // behind it, then the frame's length (its first 4 bytes) patched.
    let chunk = shared.chunk;
    let mut frame = Vec::with_capacity(chunk + 16);
    let header = FromAgent::Output {
        tag,
        stream,
        bytes: &[],
    };
    if header.encode(&mut frame).is_err() || frame.len() < 4 {
        return; // a frame of a few bytes always encodes
    }
    let head = frame.len();
    loop {
        frame.resize(head + chunk, 0);
        let n = match from.read(&mut frame[head..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        frame.truncate(head + n);
        let len = u32::try_from(frame.len() - 4).unwrap_or(u32::MAX);
        frame[..4].copy_from_slice(&len.to_le_bytes());
        shared.write(&frame);
    }
    frame.truncate(head);
    let len = u32::try_from(head - 4).unwrap_or(u32::MAX);
    frame[..4].copy_from_slice(&len.to_le_bytes());
    shared.write(&frame);
}

/// Waits for worker `tag` to exit, reaps it (it stops counting against
/// the slots) and writes its `Exited`.
fn reap(shared: &Shared, tag: u32, mut child: Child) {
    let pid = Pid::from_child(&child);
    // Waited for without reaping, so that its pid stays its own until it
    // leaves the table, under the lock that signals are sent under.
    let exited = loop {
        match rustix::process::waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {
            Err(rustix::io::Errno::INTR) => {}
            outcome => break outcome.is_ok(),
        }
    };
    let status = if exited {
        let mut workers = shared.workers.lock();
        workers.remove(&tag);
        child.wait()
    } else {
        let status = child.wait();
        shared.workers.lock().remove(&tag);
        status
    };
    // -1: the status could not be read.
    let status = status.map_or(-1, ExitStatusExt::into_raw);
    shared.send(&FromAgent::Exited { tag, status }, &mut Vec::new());
}

/// Writes a `Pong` every `ping`; ends the agent after [`SILENT_PINGS`]
/// pings without a frame from the pool.
fn keep_alive(shared: &Shared, ping: Duration) {
    let silence = ping.saturating_mul(SILENT_PINGS);
    let mut buf = Vec::new();
    loop {
        thread::sleep(ping);
        if shared.silent_for() >= silence {
            let why = format!("no frame from the pool in {} ms", silence.as_millis());
            shared.end(EXIT_SILENCE, Some(&why));
        }
        // Never behind a relay's write: one blocked on a frozen link would
        // stop the silence check above. A link that is being written to
        // tells the pool the agent is alive anyway.
        buf.clear();
        if FromAgent::Pong.encode(&mut buf).is_ok() {
            shared.try_write(&buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fuzz::Fake;
    use super::*;

    #[test]
    fn settings_parse_strictly() {
        let ok = Settings::parse("slots=64,ping_ms=500").unwrap();
        assert_eq!(ok.slots, 64);
        assert_eq!(ok.ping, Duration::from_millis(500));
        assert_eq!(Settings::parse("ping_ms=1,slots=2").unwrap().slots, 2);
        assert_eq!(
            Settings::parse("ping_ms=1,slots=2").unwrap().chunk,
            64 * 1024
        );
        let small = Settings::parse("slots=2,chunk=2000,ping_ms=1").unwrap();
        assert_eq!(small.chunk, 2000);
        let big = Settings::parse("slots=2,ping_ms=1,chunk=99999999").unwrap();
        assert_eq!(big.chunk, 64 * 1024);
        assert!(Settings::parse("slots=2,ping_ms=1,chunk=0").is_err());
        assert!(Settings::parse("slots=2,ping_ms=1,chunk=1,chunk=2").is_err());
        for bad in [
            "",
            "slots=2",
            "ping_ms=5",
            "slots=0,ping_ms=5",
            "slots=2,ping_ms=0",
            "slots=+2,ping_ms=5",
            "slots=2,ping_ms=5ms",
            "slots=2,ping_ms=5,",
            "slots=2,slots=3,ping_ms=5",
            "slots=2,ping_ms=5,extra=1",
            "slots=2;ping_ms=5",
            " slots=2,ping_ms=5",
            "slots=99999999999999999999,ping_ms=5",
        ] {
            let e = Settings::parse(bad).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidArgument(m) if m.contains(AGENT_ENV)),
                "{bad}: {e:?}"
            );
        }
    }

    fn spawn(tag: u32) -> ToAgent<'static> {
        ToAgent::Spawn {
            tag,
            args: vec![b"entry".to_vec()],
            env: Vec::new(),
        }
    }

    #[test]
    fn spawns_fill_the_slots_and_a_reaped_worker_frees_one() {
        let mut host = Fake::default();
        let started = |a: Option<FromAgent<'_>>| matches!(a, Some(FromAgent::Started { .. }));
        assert!(started(dispatch(spawn(1), 2, &mut host).unwrap()));
        assert!(started(dispatch(spawn(2), 2, &mut host).unwrap()));
        let full = dispatch(spawn(3), 2, &mut host).unwrap();
        assert!(
            matches!(&full, Some(FromAgent::SpawnFailed { tag: 3, error }) if error.contains("all 2 slots")),
            "{full:?}"
        );
        host.exit(1);
        assert!(started(dispatch(spawn(3), 2, &mut host).unwrap()));
        assert_eq!(host.calls, ["start 1", "start 2", "start 3"]);
    }

    #[test]
    fn a_spawn_of_a_live_tag_is_a_protocol_error_and_starts_nothing() {
        let mut host = Fake::default();
        dispatch(spawn(1), 4, &mut host).unwrap();
        let e = dispatch(spawn(1), 4, &mut host).unwrap_err();
        assert!(matches!(e, Error::Protocol(_)), "{e:?}");
        assert_eq!(host.calls, ["start 1"]);
        // Once reaped, the tag may be used again.
        host.exit(1);
        assert!(dispatch(spawn(1), 4, &mut host).unwrap().is_some());
    }

    #[test]
    fn a_failed_start_is_answered_with_its_reason() {
        let mut host = Fake::default();
        let failed = ToAgent::Spawn {
            tag: 7,
            args: vec![b"fail".to_vec()],
            env: Vec::new(),
        };
        assert_eq!(
            dispatch(failed, 1, &mut host).unwrap(),
            Some(FromAgent::SpawnFailed {
                tag: 7,
                error: "the fake refuses `fail`".to_string()
            })
        );
        assert_eq!(host.live(), 0);
    }

    #[test]
    fn data_close_and_signals_reach_their_worker_and_nothing_else() {
        let mut host = Fake::default();
        dispatch(spawn(1), 2, &mut host).unwrap();
        let frames = [
            ToAgent::Data {
                tag: 1,
                bytes: b"abc",
            },
            ToAgent::Data { tag: 1, bytes: b"" },
            ToAgent::Data {
                tag: 9,
                bytes: b"x",
            },
            ToAgent::Ping,
            ToAgent::Close { tag: 1 },
            ToAgent::Data {
                tag: 1,
                bytes: b"late",
            },
            ToAgent::Signal {
                tag: 9,
                signal: SIGKILL,
            },
            ToAgent::Signal {
                tag: 1,
                signal: SIGKILL,
            },
            ToAgent::Data {
                tag: 1,
                bytes: b"gone",
            },
        ];
        for f in frames {
            assert_eq!(dispatch(f, 2, &mut host).unwrap(), None);
        }
        assert_eq!(
            host.calls,
            [
                "start 1",
                "feed 1 3",
                "drop 9",
                "close 1",
                "drop 1",
                "signal 1 9 1001",
                "drop 1"
            ]
        );
    }
}
