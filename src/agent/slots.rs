//! What a host link knows of its workers and where their output goes
//! (`Slot`, `Sink`), and the link's reader, which applies the agent's
//! frames to them ([`read_link`], apart from the thread that runs it so
//! that the `link_reader` fuzz target runs it over bytes). A worker's
//! output goes to pipes until the pool attaches it to the link's driver;
//! then it waits for the driver's rider.

use std::collections::HashMap;
use std::io::BufRead;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use super::driver::{Output, Rider};
use super::frames::{FromAgent, Stream};
use super::pipe::PipeWriter;
use crate::process::frame::read_frame;
use crate::process::Bell;
use crate::Error;

/// What the link's threads, its handle and its workers share under the
/// link's lock.
#[derive(Default)]
pub(super) struct State {
    /// The agent's pid, once it answered.
    pub(super) agent_pid: Option<u32>,
    /// Why the link ended, once it did.
    pub(super) lost: Option<String>,
    /// Closed by the pool side (not lost).
    pub(super) closed: bool,
    pub(super) workers: HashMap<u32, Slot>,
    pub(super) next_tag: u32,
    /// Since when no worker runs on the link.
    pub(super) idle_since: Option<Instant>,
    pub(super) last_heard: Option<Instant>,
    /// When the next ping goes.
    pub(super) next_ping: Option<Instant>,
    /// Riders attached and not yet taken by the driver.
    pub(super) arriving: Vec<(u32, Box<dyn Rider>)>,
    /// The driver thread runs.
    pub(super) driving: bool,
}

/// One worker as the link knows it.
pub(super) struct Slot {
    sink: Sink,
    /// Its pid there, or why it could not start.
    pub(super) started: Option<Result<u32, String>>,
    /// Its wait status, once reaped there.
    pub(super) status: Option<i32>,
}

/// Where a worker's output goes.
enum Sink {
    /// To pipes that whoever holds its [`Spawned`](crate::launch::Spawned) reads.
    Pipes {
        stdout: PipeWriter,
        stderr: PipeWriter,
    },
    /// To the rider the link's driver polls, which takes it from here.
    Driven(Output),
}

impl Slot {
    /// Ends both of the worker's output streams for their readers.
    pub(super) fn close_pipes(&mut self) {
        match &mut self.sink {
            Sink::Pipes { stdout, stderr } => {
                stdout.close();
                stderr.close();
            }
            Sink::Driven(out) => {
                out.stdout_end = true;
                out.stderr_end = true;
            }
        }
    }

    /// From now on the output goes to a rider: what the pipes hold moves
    /// over.
    pub(super) fn drive(&mut self) {
        if let Sink::Pipes { stdout, stderr } = &self.sink {
            let (stdout, stdout_end) = stdout.take_all();
            let (stderr, stderr_end) = stderr.take_all();
            self.sink = Sink::Driven(Output {
                stdout,
                stdout_end,
                stderr,
                stderr_end,
            });
        }
    }

    /// What came for the rider since it last looked.
    pub(super) fn take_output(&mut self) -> Output {
        match &mut self.sink {
            Sink::Driven(out) => Output {
                stdout: std::mem::take(&mut out.stdout),
                stdout_end: out.stdout_end,
                stderr: std::mem::take(&mut out.stderr),
                stderr_end: out.stderr_end,
            },
            Sink::Pipes { .. } => Output::default(),
        }
    }
}

impl State {
    /// Registers a new worker whose output goes to `stdout` and `stderr`;
    /// returns its tag (`None` after 2^32 - 1 of them: tags are never
    /// reused). The link is no longer idle.
    pub(super) fn add_worker(&mut self, stdout: PipeWriter, stderr: PipeWriter) -> Option<u32> {
        let tag = self.next_tag;
        self.next_tag = tag.checked_add(1)?;
        self.idle_since = None;
        self.workers.insert(
            tag,
            Slot {
                sink: Sink::Pipes { stdout, stderr },
                started: None,
                status: None,
            },
        );
        Some(tag)
    }

    /// The agent's pid, once its handshake was read.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(super) fn agent_pid(&self) -> Option<u32> {
        self.agent_pid
    }
}

/// What the reader thread does with the agent's output `r`: its handshake,
/// then its frames, each applied to the workers in `state` (waking
/// `changed`), until the stream ends (`Ok`) or a frame is refused. Apart
/// from [`Link`] so that the fuzz target (`fuzz.rs`) runs it over bytes,
/// without a process or a thread.
///
/// # Errors
///
/// [`Error::Io`] or [`Error::Protocol`]: the handshake failed, a frame is
/// malformed, or it is for a tag the pool never gave.
pub(super) fn read_link(
    r: &mut impl BufRead,
    host: &str,
    state: &Mutex<State>,
    changed: &Condvar,
    bell: &Bell,
) -> Result<(), Error> {
    let pid = crate::process::handshake(r, &format!("agent on {host}"))?;
    {
        let mut st = state.lock();
        let now = Instant::now();
        st.agent_pid = Some(pid);
        st.last_heard = Some(now);
        // Idle from now: the copy of the binary may have taken longer
        // than the linger, and the first worker is about to start.
        if st.workers.is_empty() {
            st.idle_since = Some(now);
        }
    }
    changed.notify_all();
    tracing::info!(target: "concurrent_futures", host = %host, pid, "agent started");
    while let Some(frame) = read_frame(r)? {
        let msg = FromAgent::decode(&frame)?;
        let mut st = state.lock();
        st.last_heard = Some(Instant::now());
        let tag = match &msg {
            FromAgent::Pong => continue,
            FromAgent::Started { tag, .. }
            | FromAgent::SpawnFailed { tag, .. }
            | FromAgent::Output { tag, .. }
            | FromAgent::Exited { tag, .. } => *tag,
        };
        if tag >= st.next_tag {
            return Err(Error::Protocol(format!(
                "a frame for worker {tag}, which was never started"
            )));
        }
        // A worker whose handle was dropped: nobody listens.
        let Some(slot) = st.workers.get_mut(&tag) else {
            continue;
        };
        match msg {
            FromAgent::Started { pid, .. } => slot.started = Some(Ok(pid)),
            FromAgent::SpawnFailed { error, .. } => {
                // It never ran: its output ends now, and its handle says why.
                slot.started = Some(Err(error));
                slot.close_pipes();
            }
            FromAgent::Exited { status, .. } => slot.status = Some(status),
            FromAgent::Output { stream, bytes, .. } => {
                let end = bytes.is_empty();
                match &mut slot.sink {
                    Sink::Pipes { stdout, stderr } => {
                        let to = match stream {
                            Stream::Stdout => stdout,
                            Stream::Stderr => stderr,
                        };
                        if end {
                            to.close();
                        } else {
                            let to = to.clone();
                            drop(st);
                            // The frame body is the tag, the stream, the bytes.
                            to.push(frame.body, 5);
                            continue;
                        }
                    }
                    Sink::Driven(out) => {
                        let (to, ended) = match stream {
                            Stream::Stdout => (&mut out.stdout, &mut out.stdout_end),
                            Stream::Stderr => (&mut out.stderr, &mut out.stderr_end),
                        };
                        if end {
                            *ended = true;
                        } else if !*ended {
                            to.extend_from_slice(bytes);
                        }
                    }
                }
            }
            FromAgent::Pong => {}
        }
        drop(st);
        changed.notify_all();
        bell.ring();
    }
    Ok(())
}
