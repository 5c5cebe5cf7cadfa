//! The handle of one host agent started by [`Ssh`](super::Ssh): its ssh
//! client, and what the remote script said about the agent. (A lost link
//! is reported to the launcher's host table by the link itself.)

use std::fmt;
use std::io;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::exit::describe_exit;
use super::remote_stderr::{LastWords, RemoteEnd};
use super::WorkerProcess;

/// How long after its client exits the worker's stderr may take to end
/// (it carries the worker's own status).
const STDERR_GRACE: Duration = Duration::from_millis(500);

/// An agent's ssh client; tells the link how the agent ended.
pub(crate) struct SshProcess {
    pub(crate) client: Box<dyn WorkerProcess>,
    /// The host's name.
    pub(crate) host_name: String,
    pub(crate) words: Arc<LastWords>,
    pub(crate) end: Arc<RemoteEnd>,
    /// Ended on purpose (kill, terminate): not the host's fault.
    pub(crate) killed: bool,
    /// The client's status and when it came, while its stderr drains.
    pub(crate) exited: Option<(ExitStatus, Instant)>,
}

impl fmt::Debug for SshProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshProcess")
            .field("client", &self.client)
            .field("host", &self.host_name)
            .finish_non_exhaustive()
    }
}

impl WorkerProcess for SshProcess {
    fn kill(&mut self) -> io::Result<()> {
        self.killed = true;
        self.client.kill()
    }

    fn terminate(&mut self) -> io::Result<()> {
        self.killed = true;
        self.client.terminate()
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            if let Some(status) = self.client.try_wait()? {
                self.exited = Some((status, Instant::now()));
            }
        }
        let Some((status, at)) = self.exited else {
            return Ok(None);
        };
        // The worker's own status travels on stderr: wait (a little) for
        // the rest of it before saying how the worker ended.
        if self.end.status().is_none() && !self.end.closed() && at.elapsed() < STDERR_GRACE {
            return Ok(None);
        }
        Ok(Some(self.end.status().unwrap_or(status)))
    }

    fn describe_exit(&self, status: ExitStatus) -> String {
        if self.end.status().is_some() {
            return describe_exit(status);
        }
        // No word from the remote script: the worker's status is unknown,
        // and the client's is about the connection, not the worker.
        if self.killed {
            return format!(
                "was stopped: the pool closed its connection to {}",
                self.host_name
            );
        }
        let words = self
            .words
            .last_line()
            .map(|w| format!(": {w}"))
            .unwrap_or_default();
        format!(
            "lost its connection to {} (its ssh client {}{words})",
            self.host_name,
            describe_exit(status)
        )
    }
}
