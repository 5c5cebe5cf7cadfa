//! Entry points for the agent's fuzz targets (`fuzz/`), the corpus test
//! (`tests/fuzz_corpus.rs`) and the agent's process tests
//! (`tests/process/agent.rs`): the agent's dispatch over arbitrary frames,
//! against a fake host that records what it was asked; the pool's link
//! reader over arbitrary agent output, against workers registered as a
//! link registers them; and the frames a test speaks to a real agent.
//! Hidden from the docs; not part of the API.

use std::collections::HashMap;
use std::io::{BufRead, Read};

use parking_lot::{Condvar, Mutex};

use super::frames::{data_header, FromAgent, Stream, ToAgent, MAX_DATA, SIGKILL, SIGTERM};
use super::link::{read_link, State};
use super::pipe::{pipe, PipeReader, PipeWriter};
use super::serve::{dispatch, Host};
use crate::process::frame::{read_frame, Frame, MAGIC};
use crate::process::handshake;
use crate::Error;

/// The slots of the fake host [`agent_side`] dispatches against.
const FAKE_SLOTS: usize = 2;

/// A worker of the fake host.
#[derive(Debug)]
struct FakeWorker {
    pid: u32,
    /// Its stdin is open.
    open: bool,
}

/// A host that starts no process: it records what it is asked, and a
/// worker it is asked to signal dies and is reaped at once.
#[derive(Debug, Default)]
pub(crate) struct Fake {
    workers: HashMap<u32, FakeWorker>,
    next_pid: u32,
    /// Every call, in order, for the tests to read.
    pub(crate) calls: Vec<String>,
}

impl Host for Fake {
    fn live(&self) -> usize {
        self.workers.len()
    }

    fn holds(&self, tag: u32) -> bool {
        self.workers.contains_key(&tag)
    }

    fn start(
        &mut self,
        tag: u32,
        args: Vec<Vec<u8>>,
        _env: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<u32, String> {
        self.calls.push(format!("start {tag}"));
        if args.iter().any(|a| a == b"fail") {
            return Err("the fake refuses `fail`".to_string());
        }
        self.next_pid += 1;
        let pid = 1000 + self.next_pid;
        self.workers.insert(tag, FakeWorker { pid, open: true });
        Ok(pid)
    }

    fn feed(&mut self, tag: u32, bytes: &[u8]) {
        match self.workers.get(&tag) {
            Some(w) if w.open => self.calls.push(format!("feed {tag} {}", bytes.len())),
            _ => self.calls.push(format!("drop {tag}")),
        }
    }

    fn close(&mut self, tag: u32) {
        if let Some(w) = self.workers.get_mut(&tag) {
            w.open = false;
            self.calls.push(format!("close {tag}"));
        }
    }

    fn signal(&mut self, tag: u32, signal: u8) {
        if let Some(w) = self.workers.remove(&tag) {
            self.calls.push(format!("signal {tag} {signal} {}", w.pid));
        }
    }
}

impl Fake {
    /// A worker that exits on its own (and is reaped).
    #[cfg(test)]
    pub(crate) fn exit(&mut self, tag: u32) {
        self.workers.remove(&tag);
    }
}

/// Runs the agent's dispatch over `data` as the pool's frames, against a
/// fake host of 2 slots, until the input ends or a frame is refused.
/// Returns how many answers it wrote.
///
/// # Errors
///
/// A broken invariant: more live workers than slots, a `Spawn` without
/// exactly one answer for its tag (or an answer to another frame), a
/// `Started` for a worker the host did not start, an answer the pool
/// would refuse, or a frame refused other than a `Spawn` of a live tag.
pub fn agent_side(data: &[u8]) -> Result<usize, String> {
    let mut host = Fake::default();
    let mut r = data;
    let mut answers = 0;
    while let Ok(Some(frame)) = read_frame(&mut r) {
        let Ok(message) = ToAgent::decode(&frame) else {
            break; // the agent exits
        };
        let spawn = match &message {
            ToAgent::Spawn { tag, .. } => Some((*tag, host.holds(*tag))),
            _ => None,
        };
        let started = host.next_pid;
        let answer = match dispatch(message, FAKE_SLOTS, &mut host) {
            Ok(answer) => answer,
            Err(_) if matches!(spawn, Some((_, true))) && host.next_pid == started => {
                break; // the agent exits
            }
            Err(e) => return Err(format!("refused a frame it must take: {e}")),
        };
        if host.live() > FAKE_SLOTS {
            return Err(format!(
                "{} workers live in {FAKE_SLOTS} slots",
                host.live()
            ));
        }
        let Some(answer) = answer else {
            if spawn.is_some() {
                return Err("a spawn without an answer".to_string());
            }
            continue;
        };
        let (Some((tag, _)), Some(answered)) = (spawn, answered_tag(&answer)) else {
            return Err(format!("an answer to no spawn: {answer:?}"));
        };
        if tag != answered {
            return Err(format!("a spawn of {tag} answered for {answered}"));
        }
        match answer {
            FromAgent::Started { pid, .. }
                if host.next_pid == started
                    || host.workers.get(&tag).map(|w| w.pid) != Some(pid) =>
            {
                return Err(format!(
                    "started {tag} as {pid}, which the host did not start"
                ));
            }
            FromAgent::SpawnFailed { .. } if host.next_pid != started => {
                return Err(format!("a spawn of {tag} failed after the host started it"));
            }
            _ => {}
        }
        let mut buf = Vec::new();
        answer.encode(&mut buf).map_err(|e| e.to_string())?;
        let read = read_frame(&mut &buf[..]).map_err(|e| e.to_string())?;
        let decoded = read.as_ref().map(FromAgent::decode);
        if !matches!(&decoded, Some(Ok(d)) if *d == answer) {
            return Err(format!("{answer:?} reads back as {decoded:?}"));
        }
        answers += 1;
    }
    Ok(answers)
}

/// The tag of a spawn's answer.
fn answered_tag(answer: &FromAgent<'_>) -> Option<u32> {
    match answer {
        FromAgent::Started { tag, .. } | FromAgent::SpawnFailed { tag, .. } => Some(*tag),
        _ => None,
    }
}

/// A frame to an agent, as a test writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentRequest {
    /// Start worker `tag` with these arguments and environment.
    Spawn {
        /// The worker's tag.
        tag: u32,
        /// Its arguments.
        args: Vec<String>,
        /// Its environment, on top of the agent's.
        env: Vec<(String, String)>,
    },
    /// Bytes for worker `tag`'s stdin.
    Data {
        /// The worker's tag.
        tag: u32,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Close worker `tag`'s stdin.
    Close {
        /// The worker's tag.
        tag: u32,
    },
    /// Send worker `tag` signal 9 (`true`) or 15.
    Signal {
        /// The worker's tag.
        tag: u32,
        /// `true` for SIGKILL, `false` for SIGTERM.
        kill: bool,
    },
    /// Keep the link alive.
    Ping,
}

impl AgentRequest {
    /// The request as one frame.
    pub fn encode(&self) -> Vec<u8> {
        let message = match self {
            AgentRequest::Spawn { tag, args, env } => ToAgent::Spawn {
                tag: *tag,
                args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
                env: env
                    .iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                    .collect(),
            },
            AgentRequest::Data { tag, bytes } if bytes.len() <= MAX_DATA => {
                // As the pool writes it: the header, then the bytes.
                let mut buf = Vec::with_capacity(9 + bytes.len());
                data_header(&mut buf, *tag, bytes.len());
                buf.extend_from_slice(bytes);
                return buf;
            }
            AgentRequest::Data { tag, bytes } => ToAgent::Data { tag: *tag, bytes },
            AgentRequest::Close { tag } => ToAgent::Close { tag: *tag },
            AgentRequest::Signal { tag, kill } => ToAgent::Signal {
                tag: *tag,
                signal: if *kill { SIGKILL } else { SIGTERM },
            },
            AgentRequest::Ping => ToAgent::Ping,
        };
        let mut buf = Vec::new();
        // Test frames are small; the limit is far away.
        let _ = message.encode(&mut buf);
        buf
    }
}

/// A frame from an agent, as a test reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentReply {
    /// Worker `tag` runs as `pid`.
    Started {
        /// The worker's tag.
        tag: u32,
        /// Its pid.
        pid: u32,
    },
    /// Worker `tag` could not start.
    SpawnFailed {
        /// The worker's tag.
        tag: u32,
        /// Why.
        error: String,
    },
    /// Output of worker `tag`; empty at the end of the stream.
    Output {
        /// The worker's tag.
        tag: u32,
        /// `true` for stderr, `false` for stdout.
        stderr: bool,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Worker `tag` exited with this raw wait status.
    Exited {
        /// The worker's tag.
        tag: u32,
        /// The raw wait status.
        status: i32,
    },
    /// The agent is alive.
    Pong,
}

/// Reads one frame from an agent; `Ok(None)` at the end of its output.
///
/// # Errors
///
/// A malformed frame, described.
pub fn read_agent_reply(r: &mut impl BufRead) -> Result<Option<AgentReply>, String> {
    let Some(frame): Option<Frame> = read_frame(r).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let reply = match FromAgent::decode(&frame).map_err(|e| e.to_string())? {
        FromAgent::Started { tag, pid } => AgentReply::Started { tag, pid },
        FromAgent::SpawnFailed { tag, error } => AgentReply::SpawnFailed { tag, error },
        FromAgent::Output { tag, stream, bytes } => AgentReply::Output {
            tag,
            stderr: stream == Stream::Stderr,
            bytes: bytes.to_vec(),
        },
        FromAgent::Exited { tag, status } => AgentReply::Exited { tag, status },
        FromAgent::Pong => AgentReply::Pong,
    };
    Ok(Some(reply))
}

/// Well-formed pool frames for the `agent_dispatch` fuzz target: starting
/// points for the fuzzer, replayed by the corpus test.
pub fn agent_seeds() -> Vec<Vec<u8>> {
    let spawn = |tag: u32, arg: &str| {
        AgentRequest::Spawn {
            tag,
            args: vec![arg.to_string(), "--exact".to_string()],
            env: vec![("CONCURRENT_FUTURES_WORKER".to_string(), "1".to_string())],
        }
        .encode()
    };
    let data = |tag: u32, bytes: &[u8]| {
        AgentRequest::Data {
            tag,
            bytes: bytes.to_vec(),
        }
        .encode()
    };
    let close = |tag| AgentRequest::Close { tag }.encode();
    let kill = |tag| AgentRequest::Signal { tag, kill: true }.encode();
    let term = |tag| AgentRequest::Signal { tag, kill: false }.encode();
    let ping = AgentRequest::Ping.encode();
    vec![
        // A worker's whole life.
        [
            spawn(1, "entry"),
            data(1, b"abc"),
            close(1),
            data(1, b"late"),
            ping.clone(),
        ]
        .concat(),
        // Two slots: the third spawn is refused until one is reaped.
        [
            spawn(1, "a"),
            spawn(2, "b"),
            spawn(3, "c"),
            kill(1),
            spawn(3, "c"),
            term(2),
            data(9, b"to nobody"),
        ]
        .concat(),
        // A failed start, then a spawn of a live tag (a protocol error).
        [
            spawn(1, "fail"),
            spawn(2, "ok"),
            spawn(2, "again"),
            ping.clone(),
        ]
        .concat(),
        // A signal nobody takes, and a bad one.
        [kill(5), ping, vec![6, 0, 0, 0, 0x13, 1, 0, 0, 0, 2]].concat(),
    ]
}

/// The tags [`link_side`] gives: workers `0..LINK_LISTENING` listen, and
/// the last one was let go (its handle dropped, its slot removed).
const LINK_GIVEN: u32 = 4;
/// See [`LINK_GIVEN`].
const LINK_LISTENING: u32 = 3;

/// What one worker got from a run of the link reader, or what it should
/// have got.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    /// Its pid, or why it could not start.
    started: Option<Result<u32, String>>,
    /// Its wait status.
    status: Option<i32>,
    /// Its stdout's and its stderr's bytes.
    output: [Vec<u8>; 2],
}

/// A run of the link reader over some agent output.
#[derive(Debug)]
struct LinkRun {
    outcome: Result<(), Error>,
    /// The agent's pid, if its handshake was read.
    agent_pid: Option<u32>,
    /// The slots left: the listening workers'.
    slots: usize,
    /// Workers `0..listening`, by tag.
    workers: Vec<Seen>,
}

/// Runs the pool's link reader ([`read_link`], the reader thread's code)
/// over `data`, with tags `0..given` registered as `spawn` registers them
/// and the workers from `listening` on let go; then ends every output as
/// a lost link does and reads what each listening worker got.
fn run_link(data: &[u8], given: u32, listening: u32) -> LinkRun {
    let state = Mutex::new(State::default());
    let changed = Condvar::new();
    let mut pipes: Vec<[(PipeWriter, PipeReader); 2]> = Vec::new();
    {
        let mut st = state.lock();
        for _ in 0..given {
            let (out_w, out_r) = pipe();
            let (err_w, err_r) = pipe();
            let _ = st.add_worker(out_w.clone(), err_w.clone());
            pipes.push([(out_w, out_r), (err_w, err_r)]);
        }
        for tag in listening..given {
            st.workers.remove(&tag);
        }
    }
    // A let-go worker's readers are gone with its handle.
    pipes.truncate(listening as usize);
    let mut r = data;
    let outcome = read_link(&mut r, "fuzz", &state, &changed);
    let st = state.lock();
    let workers = pipes
        .into_iter()
        .enumerate()
        .map(|(tag, streams)| {
            let slot = st.workers.get(&(tag as u32));
            let output = streams.map(|(w, mut r)| {
                // What `lose` does when the reader stops.
                w.close();
                let mut bytes = Vec::new();
                // An in-memory pipe, closed: it cannot fail or wait.
                let _ = r.read_to_end(&mut bytes);
                bytes
            });
            Seen {
                started: slot.and_then(|s| s.started.clone()),
                status: slot.and_then(|s| s.status),
                output,
            }
        })
        .collect();
    LinkRun {
        outcome,
        agent_pid: st.agent_pid(),
        slots: st.workers.len(),
        workers,
    }
}

/// What the link reader should do with some agent output.
#[derive(Debug, Default)]
struct Expected {
    /// The handshake passes.
    hello: bool,
    /// The output ends cleanly, every frame taken.
    clean: bool,
    /// How many frames after the handshake it takes.
    frames: usize,
    /// What each of the listening workers of [`link_side`] gets.
    workers: Vec<Seen>,
}

/// What the link reader should do with `data`, read independently of it.
fn expect_link(data: &[u8]) -> Expected {
    let mut x = Expected {
        workers: (0..LINK_LISTENING).map(|_| Seen::default()).collect(),
        ..Expected::default()
    };
    // Whether each stream's end came: later bytes are dropped.
    let mut ended = vec![[false; 2]; x.workers.len()];
    let mut r = data;
    x.hello = handshake(&mut r, "agent").is_ok();
    if !x.hello {
        return x;
    }
    loop {
        let frame = match read_frame(&mut r) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                x.clean = true;
                return x;
            }
            Err(_) => return x,
        };
        let Ok(message) = FromAgent::decode(&frame) else {
            return x;
        };
        let tag = match &message {
            FromAgent::Pong => {
                x.frames += 1;
                continue;
            }
            FromAgent::Started { tag, .. }
            | FromAgent::SpawnFailed { tag, .. }
            | FromAgent::Output { tag, .. }
            | FromAgent::Exited { tag, .. } => *tag,
        };
        if tag >= LINK_GIVEN {
            return x;
        }
        x.frames += 1;
        let Some(w) = x.workers.get_mut(tag as usize) else {
            continue; // let go
        };
        match message {
            FromAgent::Started { pid, .. } => w.started = Some(Ok(pid)),
            FromAgent::SpawnFailed { error, .. } => {
                // A worker that never started has no output to come.
                w.started = Some(Err(error));
                ended[tag as usize] = [true, true];
            }
            FromAgent::Exited { status, .. } => w.status = Some(status),
            FromAgent::Output { stream, bytes, .. } => {
                let i = usize::from(stream == Stream::Stderr);
                if bytes.is_empty() {
                    ended[tag as usize][i] = true;
                } else if !ended[tag as usize][i] {
                    w.output[i].extend_from_slice(bytes);
                }
            }
            FromAgent::Pong => {}
        }
    }
}

/// Runs the pool's link reader over `data` as an agent's output, with
/// tags 0 to 3 given and worker 3 let go, until the input ends or a frame
/// is refused. Returns how many frames after the handshake it took.
///
/// # Errors
///
/// A broken invariant: the reader ended with an error other than
/// [`Error::Protocol`] or [`Error::Io`], ended cleanly on input it should
/// refuse or the reverse, lost or kept a slot, or left a worker with a
/// start, an exit status, or stdout or stderr bytes other than the ones
/// the agent sent it (every `OUTPUT` payload for its tag and stream, in
/// order, until that stream's end or the frame the reader stopped at).
pub fn link_side(data: &[u8]) -> Result<usize, String> {
    let run = run_link(data, LINK_GIVEN, LINK_LISTENING);
    let x = expect_link(data);
    match (&run.outcome, x.clean) {
        (Ok(()), true) | (Err(Error::Protocol(_) | Error::Io(_)), false) => {}
        (Ok(()), false) => return Err("ended cleanly on input it must refuse".to_string()),
        (Err(e), _) => return Err(format!("ended with {e:?}")),
    }
    if run.agent_pid.is_some() != x.hello {
        return Err(format!(
            "the agent's pid is {:?} after a handshake that {}",
            run.agent_pid,
            if x.hello { "passes" } else { "fails" }
        ));
    }
    if run.slots != LINK_LISTENING as usize {
        return Err(format!(
            "{} slots after the run, {LINK_LISTENING} before",
            run.slots
        ));
    }
    for (tag, (got, want)) in run.workers.iter().zip(&x.workers).enumerate() {
        if got != want {
            return Err(format!("worker {tag} got {got:?}, the agent sent {want:?}"));
        }
    }
    Ok(x.frames)
}

/// The handshake an agent of this build writes, magic included, with a
/// fixed pid (so that the seeds do not change from run to run).
fn agent_hello() -> Vec<u8> {
    let mut buf = Vec::new();
    // A hello is small; the limit is far away.
    let _ = crate::process::hello(&mut buf);
    // The magic, the frame's length and kind, the protocol version: the pid.
    let at = MAGIC.len() + 4 + 1 + 4;
    buf[at..at + 4].copy_from_slice(&4242u32.to_le_bytes());
    buf
}

/// One frame from an agent, as the agent writes it.
fn from_agent(message: &FromAgent<'_>) -> Vec<u8> {
    let mut buf = Vec::new();
    // Seed frames are small; the limit is far away.
    let _ = message.encode(&mut buf);
    buf
}

/// Agent output for the `link_reader` fuzz target: starting points for the
/// fuzzer, replayed (with every prefix) by the corpus test.
pub fn link_seeds() -> Vec<Vec<u8>> {
    let started = |tag, pid| from_agent(&FromAgent::Started { tag, pid });
    let failed = |tag| {
        from_agent(&FromAgent::SpawnFailed {
            tag,
            error: "no such file".to_string(),
        })
    };
    let out = |tag, bytes: &[u8]| {
        from_agent(&FromAgent::Output {
            tag,
            stream: Stream::Stdout,
            bytes,
        })
    };
    let err = |tag, bytes: &[u8]| {
        from_agent(&FromAgent::Output {
            tag,
            stream: Stream::Stderr,
            bytes,
        })
    };
    let exited = |tag, status| from_agent(&FromAgent::Exited { tag, status });
    let pong = from_agent(&FromAgent::Pong);
    let cut = |mut frame: Vec<u8>| {
        frame.truncate(frame.len() - 2);
        frame
    };
    vec![
        // Every kind, for each of the workers, and for the one let go.
        [
            agent_hello(),
            started(0, 100),
            failed(1),
            started(2, 102),
            pong.clone(),
            out(0, b"abc"),
            err(2, b"warning\n"),
            out(2, b"x"),
            out(0, b"def"),
            started(3, 103),
            out(3, b"to nobody"),
            out(0, b""),
            out(0, b"after the end"),
            exited(0, 0),
            err(2, b""),
            exited(2, 9),
            exited(3, 0),
            pong.clone(),
        ]
        .concat(),
        // A frame for a tag never given.
        [
            agent_hello(),
            started(0, 100),
            out(0, b"ok"),
            started(7, 107),
        ]
        .concat(),
        // An OUTPUT whose stream byte is 3.
        [
            agent_hello(),
            out(1, b"before"),
            vec![7, 0, 0, 0, 0x92, 1, 0, 0, 0, 3, b'z'],
            out(1, b"after"),
        ]
        .concat(),
        // Truncated: a STARTED cut inside its body, a header cut short,
        // and a STARTED whose body has no pid.
        [agent_hello(), out(0, b"whole"), cut(started(0, 100))].concat(),
        [agent_hello(), out(2, b"cut"), vec![9, 0, 0]].concat(),
        [agent_hello(), vec![5, 0, 0, 0, 0x90, 0, 0, 0, 0]].concat(),
        // Noise before the handshake, then a status of -1 (none read).
        [b"ssh: warning\n".to_vec(), agent_hello(), exited(1, -1)].concat(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_dispatch_cleanly_and_answer_every_spawn() {
        let answers: Vec<usize> = agent_seeds()
            .iter()
            .map(|s| agent_side(s).unwrap())
            .collect();
        // 1; 3 + 1 after a kill; a failure, a start, then the agent exits; none.
        assert_eq!(answers, [1, 4, 2, 0]);
    }

    #[test]
    fn every_prefix_of_a_seed_is_handled() {
        for seed in agent_seeds() {
            for cut in 0..seed.len() {
                agent_side(&seed[..cut]).unwrap();
            }
        }
    }

    /// `agent_hello()` then these frames.
    fn after_hello(frames: &[FromAgent<'_>]) -> Vec<u8> {
        let mut data = agent_hello();
        for f in frames {
            data.extend(from_agent(f));
        }
        data
    }

    #[test]
    fn the_link_reader_records_a_workers_life() {
        let data = after_hello(&[
            FromAgent::Started { tag: 0, pid: 321 },
            FromAgent::Output {
                tag: 0,
                stream: Stream::Stdout,
                bytes: b"hello ",
            },
            FromAgent::Output {
                tag: 0,
                stream: Stream::Stdout,
                bytes: b"world",
            },
            FromAgent::Exited {
                tag: 0,
                status: 256,
            },
        ]);
        let run = run_link(&data, 3, 3);
        assert!(run.outcome.is_ok(), "{:?}", run.outcome);
        assert_eq!(run.agent_pid, Some(4242));
        assert_eq!(
            run.workers[0],
            Seen {
                started: Some(Ok(321)),
                status: Some(256),
                output: [b"hello world".to_vec(), Vec::new()],
            }
        );
        assert_eq!(run.workers[1], Seen::default());
        assert_eq!(run.workers[2], Seen::default());
        assert_eq!(link_side(&data), Ok(4));
    }

    #[test]
    fn a_frame_for_a_tag_never_given_is_a_protocol_error() {
        let data = after_hello(&[FromAgent::Exited { tag: 7, status: 0 }]);
        let run = run_link(&data, 3, 3);
        match run.outcome {
            Err(Error::Protocol(why)) => assert!(why.contains("never started"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            run.workers,
            [Seen::default(), Seen::default(), Seen::default()]
        );
    }

    #[test]
    fn a_frame_for_a_worker_let_go_is_ignored() {
        let data = after_hello(&[
            FromAgent::Output {
                tag: 3,
                stream: Stream::Stdout,
                bytes: b"to nobody",
            },
            FromAgent::Exited { tag: 3, status: 0 },
        ]);
        let run = run_link(&data, LINK_GIVEN, LINK_LISTENING);
        assert!(run.outcome.is_ok(), "{:?}", run.outcome);
        assert_eq!(run.slots, 3);
        // Tag 4 was never given, whoever was let go.
        let data = after_hello(&[FromAgent::Started { tag: 4, pid: 1 }]);
        let run = run_link(&data, LINK_GIVEN, LINK_LISTENING);
        assert!(
            matches!(run.outcome, Err(Error::Protocol(_))),
            "{:?}",
            run.outcome
        );
    }

    #[test]
    fn an_unknown_output_stream_is_a_protocol_error() {
        let mut data = after_hello(&[FromAgent::Output {
            tag: 0,
            stream: Stream::Stdout,
            bytes: b"ok",
        }]);
        // OUTPUT for tag 0 on stream 3.
        data.extend([7, 0, 0, 0, 0x92, 0, 0, 0, 0, 3, b'z']);
        let run = run_link(&data, 3, 3);
        match run.outcome {
            Err(Error::Protocol(why)) => assert!(why.contains("stream 3"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(run.workers[0].output, [b"ok".to_vec(), Vec::new()]);
    }

    #[test]
    fn a_streams_end_drops_what_follows_and_stderr_is_apart() {
        let data = after_hello(&[
            FromAgent::Output {
                tag: 1,
                stream: Stream::Stderr,
                bytes: b"err",
            },
            FromAgent::Output {
                tag: 1,
                stream: Stream::Stdout,
                bytes: b"out",
            },
            FromAgent::Output {
                tag: 1,
                stream: Stream::Stdout,
                bytes: b"",
            },
            FromAgent::Output {
                tag: 1,
                stream: Stream::Stdout,
                bytes: b"late",
            },
            FromAgent::SpawnFailed {
                tag: 2,
                error: "nope".to_string(),
            },
        ]);
        let run = run_link(&data, 3, 3);
        assert!(run.outcome.is_ok(), "{:?}", run.outcome);
        assert_eq!(run.workers[1].output, [b"out".to_vec(), b"err".to_vec()]);
        assert_eq!(run.workers[2].started, Some(Err("nope".to_string())));
    }

    #[test]
    fn a_bad_handshake_reads_no_frame() {
        let mut data = agent_hello();
        data.truncate(data.len() - 1);
        data.extend(from_agent(&FromAgent::Started { tag: 0, pid: 1 }));
        let run = run_link(&data, 3, 3);
        assert!(run.outcome.is_err());
        assert_eq!(run.agent_pid, None);
        assert_eq!(run.workers[0], Seen::default());
        assert_eq!(link_side(&data), Ok(0));
    }

    #[test]
    fn the_link_seeds_hold_every_invariant_and_every_prefix_too() {
        let taken: Vec<usize> = link_seeds().iter().map(|s| link_side(s).unwrap()).collect();
        // Frames taken before the end or the refused one: all 17; 2 before
        // tag 7; 1 before stream 3; 1, 1 and 0 before the truncated ones;
        // 1 after the noise.
        assert_eq!(taken, [17, 2, 1, 1, 1, 0, 1]);
        for seed in link_seeds() {
            for cut in 0..seed.len() {
                link_side(&seed[..cut]).unwrap();
            }
        }
    }

    #[test]
    fn replies_read_back_as_written() {
        let mut buf = Vec::new();
        FromAgent::Output {
            tag: 4,
            stream: Stream::Stderr,
            bytes: b"oops",
        }
        .encode(&mut buf)
        .unwrap();
        FromAgent::Exited { tag: 4, status: 9 }
            .encode(&mut buf)
            .unwrap();
        let mut r = &buf[..];
        assert_eq!(
            read_agent_reply(&mut r).unwrap(),
            Some(AgentReply::Output {
                tag: 4,
                stderr: true,
                bytes: b"oops".to_vec()
            })
        );
        assert_eq!(
            read_agent_reply(&mut r).unwrap(),
            Some(AgentReply::Exited { tag: 4, status: 9 })
        );
        assert_eq!(read_agent_reply(&mut r).unwrap(), None);
    }
}
