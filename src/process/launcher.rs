//! Starting a worker through its launcher, and keeping its stderr.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use parking_lot::{Condvar, Mutex};

use super::bell::Bell;
use crate::agent::AgentWorker;
use crate::launch::{Launcher, Spawned, WorkerProcess, WorkerSpec};
use crate::Error;

/// How many lines of a worker's stderr an error quotes.
const STDERR_TAIL_LINES: usize = 12;
/// How long a quoted stderr line may be.
const STDERR_LINE_MAX: usize = 400;

/// The last lines a worker wrote to stderr (which is also forwarded to ours).
#[derive(Debug, Default)]
pub(crate) struct StderrTail {
    lines: Mutex<VecDeque<String>>,
    /// Set when the worker's stderr reached its end.
    closed: Mutex<bool>,
    closed_cond: Condvar,
}

impl StderrTail {
    pub(crate) fn close(&self) {
        *self.closed.lock() = true;
        self.closed_cond.notify_all();
    }

    /// Waits (at most `timeout`) until the forwarder has read everything.
    /// Returns true if it has (false: something, such as a grandchild
    /// process of the worker, still holds the pipe open).
    pub(crate) fn wait_closed(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut closed = self.closed.lock();
        while !*closed {
            if self
                .closed_cond
                .wait_until(&mut closed, deadline)
                .timed_out()
            {
                return *closed;
            }
        }
        true
    }

    fn push(&self, line: &[u8]) {
        let mut text = String::from_utf8_lossy(line).trim_end().to_string();
        if text.len() > STDERR_LINE_MAX {
            let mut cut = STDERR_LINE_MAX;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("...");
        }
        let mut lines = self.lines.lock();
        if lines.len() == STDERR_TAIL_LINES {
            // Backtrace frames go first: the line that explains the death
            // ("memory allocation of .. bytes failed", a panic message)
            // usually comes before a long backtrace.
            let frame = lines.iter().position(|l| Self::is_frame(l));
            lines.remove(frame.unwrap_or(0));
        }
        lines.push_back(text);
    }

    /// A backtrace frame line (`  12: path::to::fn`, `at src/x.rs:3:5`) or
    /// the note after one.
    fn is_frame(line: &str) -> bool {
        let t = line.trim_start();
        let numbered = t
            .split_once(':')
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        numbered || t.starts_with("at ") || t.starts_with("note: Some details are omitted")
    }

    /// The quoted tail, or an empty string when the worker wrote nothing.
    pub(crate) fn quote(&self) -> String {
        let lines = self.lines.lock();
        if lines.is_empty() {
            return String::new();
        }
        let mut out = String::from("; its last stderr lines:");
        for l in lines.iter() {
            out.push_str("\n    ");
            out.push_str(l);
        }
        out
    }
}

/// A started worker: its streams, its control, its stderr forwarder.
pub(crate) struct Launched {
    pub(crate) process: Box<dyn WorkerProcess>,
    pub(crate) stdin: Box<dyn Write + Send>,
    pub(crate) stdout: Box<dyn Read + Send>,
    pub(crate) label: Option<String>,
    pub(crate) tail: Arc<StderrTail>,
    pub(crate) stderr_thread: Option<JoinHandle<()>>,
    /// For a worker on a host link, which the link's driver thread serves
    /// (`driven.rs`): the link's bell, and its stderr pipe, which must
    /// stay open until the driver takes over its output.
    pub(crate) linked: Option<Linked>,
}

/// A worker on a host link: the link's bell, and the worker's stderr
/// pipe (kept open until the driver takes over its output).
pub(crate) type Linked = (Arc<Bell>, Option<Box<dyn Read + Send>>);

/// The host-link worker behind `process`, if it is one.
pub(crate) fn agent_worker(process: &mut dyn WorkerProcess) -> Option<&mut AgentWorker> {
    process.as_any_mut()?.downcast_mut::<AgentWorker>()
}

/// Starts one worker through `launcher` and forwards its stderr.
pub(crate) fn launch(launcher: &dyn Launcher, spec: &WorkerSpec) -> Result<Launched, Error> {
    let Spawned {
        stdin,
        stdout,
        stderr,
        mut process,
        label,
    } = launcher.launch(spec)?;
    let tail = Arc::new(StderrTail::default());
    if let Some(bell) = agent_worker(process.as_mut()).map(|w| w.bell()) {
        return Ok(Launched {
            process,
            stdin,
            stdout,
            label,
            tail,
            stderr_thread: None,
            linked: Some((bell, stderr)),
        });
    }
    let stderr_thread = match stderr {
        None => {
            tail.close();
            None
        }
        Some(stderr) => match spawn_stderr_forwarder(stderr, Arc::clone(&tail)) {
            Ok(t) => Some(t),
            Err(e) => {
                let _ = process.kill();
                return Err(e);
            }
        },
    };
    Ok(Launched {
        process,
        stdin,
        stdout,
        label,
        tail,
        stderr_thread,
        linked: None,
    })
}

/// One line of a worker's stderr: copied to ours, and kept in its tail.
pub(crate) fn relay_stderr_line(tail: &StderrTail, line: &[u8]) {
    let _ = std::io::stderr().write_all(line);
    tail.push(line);
}

/// Copies the worker's stderr to ours, line by line, keeping the tail.
fn spawn_stderr_forwarder(
    stderr: Box<dyn Read + Send>,
    tail: Arc<StderrTail>,
) -> Result<JoinHandle<()>, Error> {
    thread::Builder::new()
        .name("concurrent-futures-stderr".to_string())
        .spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => {
                        tail.close();
                        return;
                    }
                    Ok(_) => relay_stderr_line(&tail, &line),
                }
            }
        })
        .map_err(|e| Error::Io(format!("cannot start a stderr thread: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_tail_keeps_the_explaining_lines_over_backtrace_frames() {
        let tail = StderrTail::default();
        tail.push(b"memory allocation of 524288000 bytes failed\n");
        tail.push(b"stack backtrace:\n");
        for i in 0..40 {
            tail.push(format!("  {i}: std::frame_{i}\n").as_bytes());
            tail.push(format!("             at src/lib.rs:{i}:5\n").as_bytes());
        }
        let quoted = tail.quote();
        let lines: Vec<&str> = quoted.lines().skip(1).map(str::trim).collect();
        assert_eq!(lines.len(), STDERR_TAIL_LINES);
        assert_eq!(lines[0], "memory allocation of 524288000 bytes failed");
        assert_eq!(lines[1], "stack backtrace:");
        assert_eq!(lines[STDERR_TAIL_LINES - 1], "at src/lib.rs:39:5");
        assert_eq!(lines[STDERR_TAIL_LINES - 2], "39: std::frame_39");
    }

    #[test]
    fn stderr_tail_without_frames_keeps_the_last_lines() {
        let tail = StderrTail::default();
        for i in 0..20 {
            tail.push(format!("line {i}\n").as_bytes());
        }
        let quoted = tail.quote();
        let lines: Vec<&str> = quoted.lines().skip(1).map(str::trim).collect();
        assert_eq!(lines.first(), Some(&"line 8"));
        assert_eq!(lines.last(), Some(&"line 19"));
    }
}
