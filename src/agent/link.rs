//! The pool's side of one host link: the connection to a host agent,
//! which carries the frames of all the host's workers. Each worker looks
//! to the pool like any other started worker ([`Spawned`]): its stdin is
//! cut into `Data` frames, its stdout and stderr are pipes the link's
//! reader thread fills (`pipe.rs`), and its process handle signals it
//! through the agent and reads the exit status the agent reports.
//!
//! A worker the pool attaches to the link ([`AgentWorker::attach`]) is
//! served by the link's driver thread instead (`driver.rs`): its output
//! goes to the driver rather than to pipes. A link spends three threads
//! here, whatever its number of workers: the reader, the driver and the
//! agent's stderr. Pings, silence and idle close are the business of one
//! thread for all links (`keeper.rs`). What the link knows of each
//! worker, and the reader that applies the agent's frames to it, are
//! `slots.rs`.
//!
//! [`AgentWorker::attach`]: super::worker::AgentWorker::attach

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::driver::{self, Rider};
use super::frames::{data_header, ToAgent, MAX_DATA};
use super::keeper;
use super::pipe::pipe;
use super::serve::SILENT_PINGS;
use super::slots::{read_link, State};
use super::worker::{AgentStdin, AgentWorker};
use crate::launch::{Spawned, WorkerProcess};
use crate::process::Bell;
use crate::Error;

/// How a link behaves; the launcher chooses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkOptions {
    /// A ping goes each way this often; a link silent for 6 times as long
    /// is lost (and the agent exits).
    pub(crate) ping: Duration,
    /// How long the agent may take to answer the handshake once its
    /// program runs (a copy of the binary does not count).
    pub(crate) handshake: Duration,
    /// How long a link without workers stays open for the next one.
    pub(crate) linger: Duration,
}

/// After this long connecting or copying, the link says it is still at it.
const SLOW_START: Duration = Duration::from_secs(10);

/// One link to a host agent. Dropping it closes the link: the agent kills
/// what still runs there and exits.
pub(crate) struct AgentLink {
    link: Arc<Link>,
}

impl fmt::Debug for AgentLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentLink")
            .field("host", &self.link.host)
            .finish_non_exhaustive()
    }
}

/// What the link's threads, its handle and its workers share.
pub(super) struct Link {
    pub(super) host: String,
    options: LinkOptions,
    /// The agent's stdin; `None` once the link is closed.
    out: Mutex<Option<BufWriter<Box<dyn Write + Send>>>>,
    pub(super) state: Mutex<State>,
    pub(super) changed: Condvar,
    /// The client that runs the agent (`ssh`, `srun`).
    client: Mutex<Box<dyn WorkerProcess>>,
    /// The last lines the agent (or its client) wrote to stderr, and
    /// whether that stream ended: quoted when the link fails.
    stderr: Mutex<(VecDeque<String>, bool)>,
    /// Signalled when the agent's stderr ends (a condvar of its own: one
    /// condvar serves one mutex).
    stderr_ended: Condvar,
    /// Told once when the link is lost after the agent answered (not when
    /// it is closed): the launcher checks the host again.
    on_lost: Box<dyn Fn() + Send + Sync>,
    /// Wakes the driver thread (`driver.rs`).
    pub(super) bell: Arc<Bell>,
}

/// How many lines of the agent's stderr a link failure quotes.
const STDERR_LINES: usize = 6;

impl AgentLink {
    /// Takes a started agent (`spawned`, on `host`), starts the link's
    /// threads and waits for the agent's handshake: at most
    /// `options.handshake` once `running()` says its program runs.
    /// `on_lost` is told when the link is lost after that.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] or [`Error::Protocol`] naming the host when the agent
    /// does not answer; the client is then killed and reaped.
    pub(crate) fn open(
        spawned: Spawned,
        host: String,
        options: LinkOptions,
        on_lost: Box<dyn Fn() + Send + Sync>,
        running: &dyn Fn() -> bool,
    ) -> Result<AgentLink, Error> {
        let Spawned {
            stdin,
            stdout,
            stderr,
            process,
            ..
        } = spawned;
        let link = Arc::new(Link {
            host,
            options,
            out: Mutex::new(Some(BufWriter::with_capacity(64 * 1024, stdin))),
            state: Mutex::new(State {
                idle_since: Some(Instant::now()),
                ..State::default()
            }),
            changed: Condvar::new(),
            client: Mutex::new(process),
            stderr: Mutex::new((VecDeque::new(), stderr.is_none())),
            stderr_ended: Condvar::new(),
            on_lost,
            bell: Arc::default(),
        });
        let start = |name: &str, f: Box<dyn FnOnce() + Send>| {
            thread::Builder::new()
                .name(format!("concurrent-futures-{name}"))
                .stack_size(256 * 1024)
                .spawn(f)
                .map(drop)
                .map_err(|e| Error::Io(format!("cannot start a link thread: {e}")))
        };
        let reader = Arc::clone(&link);
        let started = start("link", Box::new(move || reader.read_loop(stdout)))
            .and_then(|()| match stderr {
                Some(stderr) => {
                    let forwarder = Arc::clone(&link);
                    start("agent-stderr", Box::new(move || forwarder.forward(stderr)))
                }
                None => Ok(()),
            })
            .and_then(|()| keeper::keep(&link));
        if let Err(e) = started {
            link.fail(e.to_string());
            return Err(e);
        }
        link.await_hello(running)?;
        Ok(AgentLink { link })
    }

    /// Why the link ended, if it did (lost, or closed when idle).
    pub(crate) fn ended(&self) -> Option<String> {
        self.link.why_gone(&self.link.state.lock())
    }

    /// Starts a worker on the agent's host: this executable with `args`
    /// and `env` (on top of the agent's environment). `on_drop` (taken
    /// only when a worker starts) runs when the pool drops the worker's
    /// handle: the launcher frees its slot.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the host when the link is gone; `on_drop` is
    /// then left where it was. A worker the agent cannot start is a
    /// `Spawned` whose output ends at once and whose process says why.
    pub(crate) fn spawn(
        &self,
        args: &[Vec<u8>],
        env: &[(Vec<u8>, Vec<u8>)],
        on_drop: &mut Option<Box<dyn FnOnce() + Send>>,
    ) -> Result<Spawned, Error> {
        let link = &self.link;
        let (stdout_w, stdout_r) = pipe();
        let (stderr_w, stderr_r) = pipe();
        let tag = {
            let mut st = link.state.lock();
            if let Some(why) = link.why_gone(&st) {
                return Err(Error::Io(why));
            }
            st.add_worker(stdout_w, stderr_w).ok_or_else(|| {
                Error::Io(format!(
                    "the link to {} has started as many workers as it can tag",
                    link.host
                ))
            })?
        };
        let spawn = ToAgent::Spawn {
            tag,
            args: args.to_vec(),
            env: env.to_vec(),
        };
        if let Err(e) = link.send(&spawn) {
            link.state.lock().workers.remove(&tag);
            return Err(Error::Io(format!("the link to {} failed: {e}", link.host)));
        }
        // Not waited for: the worker's handshake comes through its stdout
        // like a local worker's (the pool's `handshake_timeout` covers the
        // start), and a start the agent refuses ends that stdout, which the
        // pool reads as a worker that died before it was ready. So a start
        // never blocks on the link's reader, which may itself be the
        // thread that asks for it (a done-callback that submits).
        Ok(Spawned {
            stdin: Box::new(AgentStdin {
                link: Arc::clone(link),
                tag,
            }),
            stdout: Box::new(stdout_r),
            stderr: Some(Box::new(stderr_r)),
            process: Box::new(AgentWorker {
                link: Arc::clone(link),
                tag,
                lost: false,
                not_started: None,
                on_drop: on_drop.take(),
            }),
            label: Some(link.host.clone()),
        })
    }
}

impl Drop for AgentLink {
    fn drop(&mut self) {
        self.link.close();
    }
}

impl Link {
    /// Writes one frame to the agent.
    pub(super) fn send(&self, msg: &ToAgent<'_>) -> io::Result<()> {
        write_frame(&mut self.out.lock(), msg)
    }

    /// Writes one frame to the agent if no other write is under way
    /// (`Ok` without writing if one is).
    fn try_send(&self, msg: &ToAgent<'_>) -> io::Result<()> {
        match self.out.try_lock() {
            Some(mut out) => write_frame(&mut out, msg),
            None => Ok(()),
        }
    }

    /// Writes bytes for worker `tag`'s stdin as `Data` frames.
    pub(super) fn send_data(&self, tag: u32, bytes: &[u8]) -> io::Result<()> {
        let mut out = self.out.lock();
        let w = out
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::BrokenPipe))?;
        let mut header = Vec::with_capacity(9);
        for piece in bytes.chunks(MAX_DATA) {
            header.clear();
            data_header(&mut header, tag, piece.len());
            w.write_all(&header)?;
            w.write_all(piece)?;
        }
        w.flush()
    }

    /// The reason nothing more can start here, if so.
    pub(super) fn why_gone(&self, st: &State) -> Option<String> {
        match (&st.lost, st.closed) {
            (Some(why), _) => Some(why.clone()),
            (None, true) => Some(format!("the link to {} was closed", self.host)),
            (None, false) => None,
        }
    }

    /// Waits for the agent's handshake.
    fn await_hello(&self, running: &dyn Fn() -> bool) -> Result<(), Error> {
        let mut deadline: Option<Instant> = None;
        let began = Instant::now();
        let mut said_slow = false;
        let mut st = self.state.lock();
        loop {
            if st.agent_pid.is_some() {
                return Ok(());
            }
            if let Some(why) = &st.lost {
                return Err(Error::Io(why.clone()));
            }
            let now = Instant::now();
            if deadline.is_none() {
                if running() {
                    deadline = now.checked_add(self.options.handshake);
                } else if !said_slow && now >= began + SLOW_START {
                    // Connecting and copying the program have no deadline
                    // of ours (a big binary on a slow link is not a dead
                    // host); a start this slow says why it waits.
                    said_slow = true;
                    let waited_s = SLOW_START.as_secs();
                    tracing::warn!(target: "concurrent_futures", host = %self.host, waited_s, "the agent's program is still being copied to the host (or the connection is still being made); its handshake deadline starts once it runs");
                }
            }
            match deadline {
                Some(d) if now >= d => {
                    drop(st);
                    let why = format!(
                        "the agent on {} did not answer the handshake within {:?}: {}",
                        self.host,
                        self.options.handshake,
                        crate::process::INIT_HINT
                    );
                    self.fail(why.clone());
                    return Err(Error::Protocol(why));
                }
                // The copy's progress is polled: it has no wake-up of its own.
                _ => {
                    let next = deadline.map_or(now + Duration::from_millis(50), |d| {
                        d.min(now + Duration::from_millis(50))
                    });
                    self.changed.wait_until(&mut st, next);
                }
            }
        }
    }

    /// The reader thread: the agent's handshake, then its frames, until
    /// the link ends.
    fn read_loop(self: Arc<Self>, stdout: Box<dyn Read + Send>) {
        let mut r = BufReader::with_capacity(256 * 1024, stdout);
        let why = match read_link(&mut r, &self.host, &self.state, &self.changed, &self.bell) {
            Ok(()) => format!("the link to {} closed", self.host),
            Err(e) => format!("the link to {} failed: {e}", self.host),
        };
        drop(r);
        let why = self.reap_client(why);
        self.lose(why);
    }

    /// Waits (a little) for the agent's client to exit and reaps it; the
    /// reason the link ended, with how the client ended.
    fn reap_client(&self, why: String) -> String {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut killed = false;
        let mut client = self.client.lock();
        loop {
            match client.try_wait() {
                Ok(Some(status)) => {
                    let how = client.describe_exit(status);
                    drop(client);
                    return format!("{why} (its agent {how}){}", self.stderr_tail());
                }
                Ok(None) => {
                    if !killed && Instant::now() >= deadline {
                        // Past the grace: end it, then wait for it to go.
                        killed = true;
                        let _ = client.kill();
                    }
                    drop(client);
                    thread::sleep(Duration::from_millis(10));
                    client = self.client.lock();
                }
                Err(_) => return why,
            }
        }
    }

    /// The link ended: every worker's output ends, and every wait wakes.
    fn lose(&self, why: String) {
        let mut st = self.state.lock();
        let mut tell = false;
        if st.lost.is_none() {
            if !st.closed {
                tracing::warn!(target: "concurrent_futures", host = %self.host, reason = %why, "host link lost");
                tell = st.agent_pid.is_some();
            }
            st.lost = Some(why);
        }
        for slot in st.workers.values_mut() {
            slot.close_pipes();
        }
        drop(st);
        // Every caller killed the client or saw it end.
        self.drop_writer();
        self.changed.notify_all();
        self.bell.ring();
        if tell {
            (self.on_lost)();
        }
    }

    /// Closes the agent's stdin, unless a write is blocked on it (false):
    /// the caller then ends the client, the write fails, and the next one
    /// finds the link gone.
    fn drop_writer(&self) -> bool {
        match self.out.try_lock() {
            Some(mut out) => {
                *out = None;
                true
            }
            None => false,
        }
    }

    /// The stderr thread: copies the agent's own stderr (its complaints,
    /// its client's; the workers' stderr comes in frames) to ours, keeping
    /// the last lines.
    fn forward(&self, stderr: Box<dyn Read + Send>) {
        let mut r = BufReader::new(stderr);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let _ = io::stderr().write_all(&line);
                    let text = String::from_utf8_lossy(&line).trim_end().to_string();
                    let mut tail = self.stderr.lock();
                    if tail.0.len() == STDERR_LINES {
                        tail.0.pop_front();
                    }
                    tail.0.push_back(text);
                }
            }
        }
        self.stderr.lock().1 = true;
        self.stderr_ended.notify_all();
    }

    /// The agent's last stderr lines, quoted, once its stderr ended (or
    /// after a short wait): empty if it wrote nothing.
    fn stderr_tail(&self) -> String {
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut tail = self.stderr.lock();
        while !tail.1
            && !self
                .stderr_ended
                .wait_until(&mut tail, deadline)
                .timed_out()
        {}
        if tail.0.is_empty() {
            return String::new();
        }
        let mut out = String::from("; its last stderr lines:");
        for l in &tail.0 {
            out.push_str("\n    ");
            out.push_str(l);
        }
        out
    }

    fn kill_client(&self) {
        let _ = self.client.lock().kill();
    }

    /// Ends a link that failed on this side: the client first (a write
    /// blocked on the link then fails and gives the writer lock back), then
    /// the link is lost.
    fn fail(&self, why: String) {
        self.kill_client();
        self.lose(why);
    }

    /// Closes the link from this side: the agent hears the end of its
    /// input, kills what runs there and exits; the reader reaps it.
    fn close(&self) {
        self.state.lock().closed = true;
        if !self.drop_writer() {
            // A write is blocked on the link: it will not carry the end of
            // input through; ending the client does.
            self.kill_client();
        }
        self.changed.notify_all();
        self.bell.ring();
    }

    /// The keepalive's look at the link (`keeper.rs`): a ping every
    /// interval; a link silent for [`SILENT_PINGS`] intervals is lost; a
    /// link without workers for its linger time is closed. Returns when to
    /// look again, or `None` once the link has ended.
    pub(super) fn tend(&self) -> Option<Instant> {
        let ping = self.options.ping;
        let silence = ping.saturating_mul(SILENT_PINGS);
        let mut st = self.state.lock();
        if st.lost.is_some() || st.closed {
            return None;
        }
        let now = Instant::now();
        if let Some(since) = st.idle_since {
            if st.agent_pid.is_some() && now >= since + self.options.linger {
                drop(st);
                tracing::debug!(target: "concurrent_futures", host = %self.host, "idle host link closed");
                self.close();
                return None;
            }
        }
        if st.last_heard.is_some_and(|t| now >= t + silence) {
            drop(st);
            self.fail(format!(
                "the link to {} was silent for {silence:?}",
                self.host
            ));
            return None;
        }
        let mut next_ping = *st.next_ping.get_or_insert(now + ping);
        // Nothing is written before the agent's handshake: until then the
        // agent's stdin may be carrying the copy of its binary. And a ping
        // never waits for a writer (one blocked on a frozen link would
        // stop the silence check): a busy link is alive enough to the
        // agent, which counts every frame.
        if now >= next_ping && st.agent_pid.is_some() {
            next_ping = now + ping;
            st.next_ping = Some(next_ping);
            // A failed ping: the reader sees the end.
            let _ = MutexGuard::unlocked(&mut st, || self.try_send(&ToAgent::Ping));
        }
        let mut wake = next_ping;
        if let Some(since) = st.idle_since {
            wake = wake.min(since + self.options.linger);
        }
        if let Some(heard) = st.last_heard {
            wake = wake.min(heard + silence);
        }
        Some(wake)
    }

    /// Hands worker `tag`'s output to `rider`, which the driver thread
    /// polls from now on (the thread starts with the first rider).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the driver thread cannot start.
    pub(super) fn attach(self: &Arc<Self>, tag: u32, rider: Box<dyn Rider>) -> Result<(), Error> {
        let mut st = self.state.lock();
        if let Some(slot) = st.workers.get_mut(&tag) {
            slot.drive();
        }
        if !st.driving {
            let link = Arc::clone(self);
            thread::Builder::new()
                .name("concurrent-futures-driver".to_string())
                .stack_size(1 << 20)
                .spawn(move || driver::drive(link))
                .map_err(|e| Error::Io(format!("cannot start a link thread: {e}")))?;
            st.driving = true;
        }
        st.arriving.push((tag, rider));
        drop(st);
        self.bell.ring();
        Ok(())
    }
}

/// Writes one frame to the agent's stdin `out` (`None` once closed).
fn write_frame(
    out: &mut Option<BufWriter<Box<dyn Write + Send>>>,
    msg: &ToAgent<'_>,
) -> io::Result<()> {
    let w = out
        .as_mut()
        .ok_or_else(|| io::Error::from(io::ErrorKind::BrokenPipe))?;
    let mut buf = Vec::with_capacity(32);
    msg.encode(&mut buf)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    w.write_all(&buf)?;
    w.flush()
}
