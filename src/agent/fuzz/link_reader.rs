//! The `link_reader` fuzz target: the pool's link reader over arbitrary
//! agent output, against workers registered as a link registers them,
//! checked against an independent reading of the same output; and the
//! seeds that start the fuzzer.

use std::io::Read;

use parking_lot::{Condvar, Mutex};

use crate::agent::frames::{FromAgent, Stream};
use crate::agent::pipe::{pipe, PipeReader, PipeWriter};
use crate::agent::slots::{read_link, State};
use crate::process::frame::{read_frame, MAGIC};
use crate::process::handshake;
use crate::process::Bell;
use crate::Error;

/// The tags [`link_side`] gives: workers `0..LINK_LISTENING` listen, and
/// the last one was let go (its handle dropped, its slot removed).
const LINK_GIVEN: u32 = 4;
/// See [`LINK_GIVEN`].
const LINK_LISTENING: u32 = 3;
/// The listening worker whose output goes to a rider (as the pool's
/// driver takes it) rather than to pipes: it must get the same bytes.
const DRIVEN_TAG: u32 = 1;

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
        if let Some(slot) = st.workers.get_mut(&DRIVEN_TAG) {
            slot.drive();
        }
    }
    // A let-go worker's readers are gone with its handle.
    pipes.truncate(listening as usize);
    let mut r = data;
    let outcome = read_link(&mut r, "fuzz", &state, &changed, &Bell::default());
    let mut st = state.lock();
    let workers = pipes
        .into_iter()
        .enumerate()
        .map(|(tag, streams)| {
            let mut output = streams.map(|(w, mut r)| {
                // What `lose` does when the reader stops.
                w.close();
                let mut bytes = Vec::new();
                // An in-memory pipe, closed: it cannot fail or wait.
                let _ = r.read_to_end(&mut bytes);
                bytes
            });
            if tag as u32 == DRIVEN_TAG {
                if let Some(slot) = st.workers.get_mut(&DRIVEN_TAG) {
                    let out = slot.take_output();
                    output = [out.stdout, out.stderr];
                }
            }
            let slot = st.workers.get(&(tag as u32));
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
}
