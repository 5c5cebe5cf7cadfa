//! Running a worker through a remote shell, and shipping its binary over
//! the same connection: the remote command, the cache key, and the reader
//! that performs the short exchange before the worker's own output.
//!
//! The remote side runs one `sh` script (see [`remote_command`]). It
//! answers on stdout with one status line:
//!
//! - `CFSHIP-have`: the binary is in place; the script `exec`s it at once.
//! - `CFSHIP-need`: send exactly the binary's size in bytes on stdin; the
//!   script stores them in a temporary file next to the cache path, checks
//!   the size, `fsync`s, renames it into place (atomic: two pools shipping
//!   at once each rename a complete copy) and `exec`s it.
//! - `CFSHIP-missing`: shipping is off and the program is not there.
//!
//! The worker is `exec`ed, not forked, so its parent is the remote session
//! (sshd's session process): when the connection drops, that process ends,
//! the worker is re-parented and its watcher ends it, even mid-task.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::hash::Hasher;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::Error;

/// Where the program comes from and where it goes.
#[derive(Debug, Clone)]
pub(crate) enum Program {
    /// Ship `local` (whose size and content key are known) into the cache
    /// directory, or into the default cache when `dir` is `None`.
    Ship {
        local: OsString,
        size: u64,
        key: String,
        dir: Option<String>,
    },
    /// Run the program already at this remote path (a shared filesystem).
    Remote(String),
}

/// The status line's prefix.
const STATUS: &[u8] = b"CFSHIP-";
/// How much output before the status line is skipped (a chatty login
/// shell); beyond it the connection is given up.
const MAX_NOISE: usize = 64 * 1024;

/// Reads `path` once: its size and a 64-bit content hash (SipHash-1-3, the
/// standard library's), as lowercase hex. Two builds of a program differ
/// in their bytes, so they get different cache paths.
pub(crate) fn content_key(path: &OsStr) -> Result<(u64, String), Error> {
    let cannot = |e: io::Error| {
        Error::Io(format!(
            "cannot read the worker program {} to ship it: {e}",
            path.to_string_lossy()
        ))
    };
    let mut file = File::open(path).map_err(cannot)?;
    // A fixed-key SipHash: the same bytes give the same key in every run.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(cannot)?;
        if n == 0 {
            break;
        }
        hasher.write(&buf[..n]);
        size += n as u64;
    }
    hasher.write_u64(size);
    Ok((size, format!("{:016x}", hasher.finish())))
}

/// Quotes `s` for a POSIX shell.
pub(crate) fn quote(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'\'');
    for &b in s {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// The script the remote shell runs. `$1` is the program path (empty: the
/// default cache path for key `$3`), `$2` its size (`-`: do not ship); then
/// come `NAME=value` words for the environment, `--`, and the worker's
/// arguments.
const SCRIPT: &str = r#"b=$1; n=$2; k=$3; shift 3
case $b in
  "") b="${XDG_CACHE_HOME:-$HOME/.cache}/concurrent-futures/worker-$k" ;;
  "~/"*) b="$HOME/${b#"~/"}" ;;
esac
if [ -x "$b" ]; then
  echo CFSHIP-have
elif [ "$n" = - ]; then
  echo CFSHIP-missing; exit 127
else
  mkdir -p "$(dirname "$b")" || exit 1
  t="$b.tmp.$$"
  echo CFSHIP-need
  head -c "$n" > "$t" && [ "$(wc -c < "$t")" -eq "$n" ] && chmod 700 "$t" &&
    { sync "$t" 2>/dev/null; mv -f "$t" "$b"; } ||
    { rm -f "$t"; echo "cannot store the worker program at $b" >&2; exit 1; }
fi
while [ "$1" != -- ]; do export "$1"; shift; done; shift
exec "$b" "$@""#;

/// The remote command line (one string for the remote login shell): runs
/// [`SCRIPT`] for `program` with the worker's environment and arguments.
pub(crate) fn remote_command<'a>(
    program: &Program,
    env: impl Iterator<Item = (&'a OsStr, &'a OsStr)>,
    args: impl Iterator<Item = &'a OsStr>,
) -> OsString {
    let mut cmd = b"exec sh -c ".to_vec();
    cmd.extend(quote(SCRIPT.as_bytes()));
    cmd.extend_from_slice(b" concurrent-futures-worker");
    let (path, size, key) = match program {
        Program::Ship { size, key, dir, .. } => (
            dir.as_ref()
                .map(|d| format!("{}/worker-{key}", d.trim_end_matches('/')))
                .unwrap_or_default(),
            size.to_string(),
            key.clone(),
        ),
        Program::Remote(path) => (path.clone(), "-".to_string(), String::new()),
    };
    let mut word = |w: &[u8]| {
        cmd.push(b' ');
        cmd.extend(quote(w));
    };
    word(path.as_bytes());
    word(size.as_bytes());
    word(key.as_bytes());
    for (k, v) in env {
        let mut pair = k.as_bytes().to_vec();
        pair.push(b'=');
        pair.extend_from_slice(v.as_bytes());
        word(&pair);
    }
    word(b"--");
    for a in args {
        word(a.as_bytes());
    }
    OsString::from_vec(cmd)
}

/// Shared between the reader that ships and the process handle.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// The status line came and the binary (if needed) went: the worker
    /// runs, whatever happens next is not the host's fault.
    pub(crate) started: AtomicBool,
}

/// The worker's stdin, shared with the [`ShipReader`] until the exchange is
/// over (the pool writes nothing before the worker's handshake, which
/// comes after it).
#[derive(Clone)]
pub(crate) struct SharedStdin(pub(crate) Arc<Mutex<Option<Box<dyn Write + Send>>>>);

impl std::fmt::Debug for SharedStdin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedStdin")
    }
}

impl Write for SharedStdin {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.lock().as_mut() {
            Some(w) => w.write(buf),
            None => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self.0.lock().as_mut() {
            Some(w) => w.write_all(buf),
            None => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.0.lock().as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

/// The worker's stdout: first the status exchange (shipping the binary if
/// asked), then the worker's own bytes, unchanged.
pub(crate) struct ShipReader<R> {
    inner: BufReader<R>,
    exchange: Option<Exchange>,
}

/// What the exchange needs; dropped when it is over.
struct Exchange {
    program: Program,
    host: String,
    stdin: SharedStdin,
    progress: Arc<Progress>,
}

impl<R: Read> ShipReader<R> {
    pub(crate) fn new(
        inner: R,
        program: Program,
        host: String,
        stdin: SharedStdin,
        progress: Arc<Progress>,
    ) -> Self {
        ShipReader {
            inner: BufReader::with_capacity(64 * 1024, inner),
            exchange: Some(Exchange {
                program,
                host,
                stdin,
                progress,
            }),
        }
    }

    fn exchange(&mut self, ex: Exchange) -> io::Result<()> {
        let mut skipped = 0usize;
        let mut line = Vec::new();
        let status = loop {
            line.clear();
            let n = (&mut self.inner)
                .take(MAX_NOISE as u64 + 1)
                .read_until(b'\n', &mut line)?;
            if n == 0 {
                return Err(io::Error::other(format!(
                    "the connection to {} closed before the worker started",
                    ex.host
                )));
            }
            if let Some(rest) = line.strip_prefix(STATUS) {
                break rest.trim_ascii_end().to_vec();
            }
            skipped += n;
            if skipped > MAX_NOISE {
                return Err(io::Error::other(format!(
                    "{} sent {skipped} bytes without starting the worker",
                    ex.host
                )));
            }
        };
        match (status.as_slice(), &ex.program) {
            (b"have", _) => {}
            (b"need", Program::Ship { local, size, .. }) => ship(&ex, local, *size)?,
            (b"missing", Program::Remote(path)) => {
                return Err(io::Error::other(format!(
                    "there is no worker program at {path} on {} (shipping is off: \
                     remote_program was given)",
                    ex.host
                )))
            }
            (other, _) => {
                return Err(io::Error::other(format!(
                    "{} answered {:?} when starting the worker",
                    ex.host,
                    String::from_utf8_lossy(other)
                )))
            }
        }
        ex.progress.started.store(true, Ordering::Release);
        Ok(())
    }
}

/// Sends the binary's bytes.
fn ship(ex: &Exchange, local: &OsStr, size: u64) -> io::Result<()> {
    let mut file = File::open(local)?;
    let mut stdin = ex.stdin.clone();
    let sent = io::copy(&mut (&mut file).take(size), &mut stdin)?;
    stdin.flush()?;
    if sent != size {
        return Err(io::Error::other(format!(
            "the worker program {} changed while shipping it to {}",
            local.to_string_lossy(),
            ex.host
        )));
    }
    Ok(())
}

impl<R: Read> Read for ShipReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(ex) = self.exchange.take() {
            self.exchange(ex)?;
        }
        self.inner.read(buf)
    }
}

/// Keeps the last lines a client wrote to stderr (ssh's own messages).
#[derive(Debug, Default)]
pub(crate) struct LastWords(Mutex<Vec<u8>>);

impl LastWords {
    const KEEP: usize = 4096;

    fn push(&self, bytes: &[u8]) {
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

/// A stderr stream that also feeds a [`LastWords`].
pub(crate) struct Tee<R> {
    pub(crate) inner: R,
    pub(crate) words: Arc<LastWords>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.words.push(&buf[..n]);
        Ok(n)
    }
}

/// "exited with code 255", "was killed by signal 9".
pub(crate) fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => format!("ended with {status}"),
    }
}
