//! A worker behind a host agent, as the pool holds it: its stdin, whose
//! bytes become `DATA` frames on the link, and its process handle, which
//! signals it through the agent and reads the exit status the agent
//! reports (`link.rs` fills its stdout and stderr).

use std::fmt;
use std::io::{self, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Instant;

use super::driver::Rider;
use super::frames::{ToAgent, SIGKILL, SIGTERM};
use super::keeper;
use super::link::Link;
use crate::launch::WorkerProcess;
use crate::process::Bell;
use crate::Error;

/// The status reported for a worker whose link was lost (its own is
/// unknown): what a shell reports for SIGKILL, but never read as one.
const LOST_STATUS: i32 = 137 << 8;

/// The status reported for a worker the agent could not start: a shell's
/// "cannot execute", but never read as one.
const NOT_STARTED_STATUS: i32 = 127 << 8;

/// A worker's stdin: bytes become `Data` frames; dropping it closes the
/// worker's stdin on its host.
pub(super) struct AgentStdin {
    pub(super) link: Arc<Link>,
    pub(super) tag: u32,
}

impl Write for AgentStdin {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.link.send_data(self.tag, buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.link.send_data(self.tag, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for AgentStdin {
    fn drop(&mut self) {
        let _ = self.link.send(&ToAgent::Close { tag: self.tag });
    }
}

/// A worker's process handle: signals go through the agent, the status is
/// the one the agent reports.
pub(crate) struct AgentWorker {
    pub(super) link: Arc<Link>,
    pub(super) tag: u32,
    /// Its status is unknown: the link ended first.
    pub(super) lost: bool,
    /// The agent could not start it, and why.
    pub(super) not_started: Option<String>,
    pub(super) on_drop: Option<Box<dyn FnOnce() + Send>>,
}

impl fmt::Debug for AgentWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentWorker")
            .field("host", &self.link.host)
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

impl AgentWorker {
    /// The bell that wakes the link's driver thread, which serves this
    /// worker once it is attached.
    pub(crate) fn bell(&self) -> Arc<Bell> {
        Arc::clone(&self.link.bell)
    }

    /// Has the link's driver thread serve this worker through `rider`
    /// from now on: the worker's output goes to the rider, not to the
    /// pipes of its [`Spawned`](crate::launch::Spawned), which read
    /// nothing more.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the driver thread cannot start.
    pub(crate) fn attach(&self, rider: Box<dyn Rider>) -> Result<(), Error> {
        self.link.attach(self.tag, rider)
    }

    fn signal(&self, signal: u8) -> io::Result<()> {
        match self.link.send(&ToAgent::Signal {
            tag: self.tag,
            signal,
        }) {
            // The link is gone: the agent kills its workers itself.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }
}

impl WorkerProcess for AgentWorker {
    fn kill(&mut self) -> io::Result<()> {
        self.signal(SIGKILL)
    }

    fn terminate(&mut self) -> io::Result<()> {
        self.signal(SIGTERM)
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        let st = self.link.state.lock();
        let slot = st.workers.get(&self.tag);
        if let Some(status) = slot.and_then(|s| s.status) {
            return Ok(Some(ExitStatus::from_raw(status)));
        }
        if let Some(Some(Err(why))) = slot.map(|s| &s.started) {
            self.not_started = Some(why.clone());
            return Ok(Some(ExitStatus::from_raw(NOT_STARTED_STATUS)));
        }
        if st.lost.is_some() || st.closed {
            self.lost = true;
            return Ok(Some(ExitStatus::from_raw(LOST_STATUS)));
        }
        Ok(None)
    }

    fn describe_exit(&self, status: ExitStatus) -> String {
        if let Some(why) = &self.not_started {
            return format!(
                "could not be started by the agent on {}: {why}",
                self.link.host
            );
        }
        if !self.lost {
            return crate::launch::exit::describe_exit(status);
        }
        let why = self
            .link
            .why_gone(&self.link.state.lock())
            .unwrap_or_default();
        format!("was lost with its host ({why})")
    }

    fn host_lost(&self) -> Option<String> {
        self.lost.then(|| self.link.host.clone())
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }
}

impl Drop for AgentWorker {
    fn drop(&mut self) {
        let exited = {
            let mut st = self.link.state.lock();
            let mut slot = st.workers.remove(&self.tag);
            // Its readers end: a stderr whose end would have come after
            // the exit is not waited for by anyone now.
            if let Some(slot) = &mut slot {
                slot.close_pipes();
            }
            if st.workers.is_empty() {
                st.idle_since = Some(Instant::now());
            }
            slot.is_some_and(|s| s.status.is_some())
        };
        self.link.changed.notify_all();
        keeper::poke();
        if !exited {
            // A worker outlives no handle.
            let _ = self.signal(SIGKILL);
        }
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}
