//! A remote worker's stderr as it comes through its client (`ssh`): the
//! remote login shell's noise before the worker starts is kept for error
//! messages only, and the lines the remote script writes about the worker
//! (it started; how it ended) are read and taken out of the stream.
//!
//! The remote script (`src/launch/ship.rs`) writes, on stderr:
//!
//! - `CFSHIP-start` just before it runs the worker: what came before is the
//!   login shell's and the script's own output;
//! - `CFSHIP-end exit N` or `CFSHIP-end signal N` once the worker (its
//!   child) has ended: the worker's real status, which the client's own
//!   exit status cannot carry (ssh exits with 255 for a killed command, as
//!   for a lost connection).

use std::io::{self, BufRead, BufReader, Read};
use std::process::ExitStatus;
use std::sync::Arc;

use parking_lot::Mutex;

/// The line the remote script writes just before the worker runs.
const START: &[u8] = b"CFSHIP-start";
/// The start of the line that tells how the worker ended.
const END: &[u8] = b"CFSHIP-end ";
/// The longest line looked at as a whole; longer ones pass in pieces.
const MAX_LINE: u64 = 64 * 1024;
/// How much of the output before the start is kept.
const MAX_HELD: usize = 16 * 1024;

/// Keeps the last lines a client wrote to stderr (ssh's own messages).
#[derive(Debug, Default)]
pub(crate) struct LastWords(Mutex<Vec<u8>>);

impl LastWords {
    const KEEP: usize = 4096;

    pub(crate) fn push(&self, bytes: &[u8]) {
        let mut kept = self.0.lock();
        kept.extend_from_slice(bytes);
        if kept.len() > Self::KEEP {
            let cut = kept.len() - Self::KEEP;
            kept.drain(..cut);
        }
    }

    /// The last non-empty line, if any.
    pub(crate) fn last_line(&self) -> Option<String> {
        let kept = self.0.lock();
        String::from_utf8_lossy(&kept)
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .map(str::to_string)
    }
}

/// What the remote script said about the worker, shared with its process
/// handle.
#[derive(Debug, Default)]
pub(crate) struct RemoteEnd(Mutex<EndState>);

#[derive(Debug, Default, Clone, Copy)]
struct EndState {
    /// The worker's own status, from its `CFSHIP-end` line.
    status: Option<ExitStatus>,
    /// The stream reached its end: nothing more will come.
    closed: bool,
}

impl RemoteEnd {
    /// The worker's own status, if the remote script reported it.
    pub(crate) fn status(&self) -> Option<ExitStatus> {
        self.0.lock().status
    }

    /// Whether the whole stream has been read.
    pub(crate) fn closed(&self) -> bool {
        self.0.lock().closed
    }

    fn set_status(&self, status: ExitStatus) {
        self.0.lock().status = Some(status);
    }

    fn close(&self) {
        self.0.lock().closed = true;
    }
}

/// Parses `exit N` / `signal N` into the status a local wait would give.
fn parse_end(words: &[u8]) -> Option<ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    let text = std::str::from_utf8(words).ok()?.trim();
    let (kind, n) = text.split_once(' ')?;
    let n: i32 = n.trim().parse().ok()?;
    match kind {
        "exit" if (0..=255).contains(&n) => Some(ExitStatus::from_raw(n << 8)),
        "signal" if (1..=127).contains(&n) => Some(ExitStatus::from_raw(n)),
        _ => None,
    }
}

/// The filtered stderr of one remote worker.
pub(crate) struct RemoteStderr<R> {
    inner: BufReader<R>,
    /// Bytes ready for the reader, from `at`.
    out: Vec<u8>,
    at: usize,
    /// `CFSHIP-start` came: lines pass through from now on.
    started: bool,
    /// What came before the start (the login shell's noise, the script's
    /// own messages); passed on only if the worker never starts.
    held: Vec<u8>,
    words: Arc<LastWords>,
    end: Arc<RemoteEnd>,
    eof: bool,
}

impl<R: Read> RemoteStderr<R> {
    pub(crate) fn new(inner: R, words: Arc<LastWords>, end: Arc<RemoteEnd>) -> Self {
        RemoteStderr {
            inner: BufReader::new(inner),
            out: Vec::new(),
            at: 0,
            started: false,
            held: Vec::new(),
            words,
            end,
            eof: false,
        }
    }

    /// Takes one line (or piece of a long one) in; leaves in `out` what
    /// passes on. False at the end of the stream.
    fn next_line(&mut self) -> io::Result<bool> {
        self.out.clear();
        self.at = 0;
        let mut line = Vec::new();
        let n = (&mut self.inner)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            if !self.started {
                // The worker never ran: what the shell said may explain why.
                self.out = std::mem::take(&mut self.held);
            }
            return Ok(false);
        }
        if line.trim_ascii_end() == START {
            self.started = true;
            return Ok(true);
        }
        if let Some(at) = find(&line, END) {
            if let Some(status) = parse_end(&line[at + END.len()..]) {
                self.end.set_status(status);
                // A last line of the worker's without its newline.
                line.truncate(at);
                if !line.is_empty() {
                    line.push(b'\n');
                }
            }
        }
        // The script's markers are not words of the client's.
        self.words.push(&line);
        if self.started {
            self.out = line;
        } else {
            self.held.extend_from_slice(&line);
            if self.held.len() > MAX_HELD {
                let cut = self.held.len() - MAX_HELD;
                self.held.drain(..cut);
            }
        }
        Ok(true)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl<R: Read> Read for RemoteStderr<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.at < self.out.len() {
                let n = buf.len().min(self.out.len() - self.at);
                buf[..n].copy_from_slice(&self.out[self.at..self.at + n]);
                self.at += n;
                return Ok(n);
            }
            if self.eof {
                return Ok(0);
            }
            match self.next_line() {
                Ok(true) => {}
                Ok(false) => {
                    self.eof = true;
                    self.end.close();
                }
                Err(e) => {
                    self.eof = true;
                    self.end.close();
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn filter(input: &[u8]) -> (String, Option<ExitStatus>, Option<String>) {
        let words = Arc::new(LastWords::default());
        let end = Arc::new(RemoteEnd::default());
        let mut f = RemoteStderr::new(input, Arc::clone(&words), Arc::clone(&end));
        let mut out = String::new();
        f.read_to_string(&mut out).expect("read");
        assert!(end.closed());
        (out, end.status(), words.last_line())
    }

    #[test]
    fn the_shell_s_noise_is_held_and_the_markers_are_taken_out() {
        let (out, status, _) = filter(
            b"pyenv: cannot rehash\nCFSHIP-start\npanicked at x\npartialCFSHIP-end signal 9\n",
        );
        assert_eq!(out, "panicked at x\npartial\n");
        assert_eq!(status.and_then(|s| s.signal()), Some(9));
    }

    #[test]
    fn exit_codes_come_through() {
        let (out, status, _) = filter(b"CFSHIP-start\nCFSHIP-end exit 7\n");
        assert_eq!(out, "");
        assert_eq!(status.and_then(|s| s.code()), Some(7));
    }

    #[test]
    fn without_a_start_the_held_lines_explain_the_failure() {
        let (out, status, last) = filter(b"pyenv: noise\ncannot store the worker program\n");
        assert_eq!(out, "pyenv: noise\ncannot store the worker program\n");
        assert_eq!(status, None);
        assert_eq!(last.as_deref(), Some("cannot store the worker program"));
    }
}
