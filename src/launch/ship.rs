//! Running a worker through a remote shell, and shipping its binary over
//! the same connection: the remote command, the cache key, and the reader
//! that performs the short exchange before the worker's own output.
//!
//! The remote side runs one `sh` script (see [`remote_command`]). It
//! answers on stdout with one status line:
//!
//! - `CFSHIP-have`: the binary is in place; the script runs it at once.
//! - `CFSHIP-need`: send exactly the binary's size in bytes on stdin; the
//!   script stores them in a temporary file (mode 0600) next to the cache
//!   path, checks the size, `fsync`s, renames it into place (atomic: two
//!   pools shipping at once each rename a complete copy), removes the
//!   builds nobody used for [`PRUNE_DAYS`] days, and runs it.
//! - `CFSHIP-missing`: shipping is off and the program is not there.
//! - `CFSHIP-unsafe <why>`: the cache directory or the cached program is
//!   not the user's own, or others may write to it; nothing runs.
//!
//! The cache directory is created 0700; a cached program or directory
//! that is not owned by the user, or is group- or world-writable, is
//! refused (anyone who can write there could run code as the user).
//!
//! Where util-linux `setpriv` is there, the script runs under `setpriv
//! --pdeathsig KILL` and runs the worker as its child: when the connection
//! drops, the remote session (sshd's session process) ends, the kernel
//! kills the script, the worker is re-parented and its watcher ends it,
//! even mid-task. The script waits for the worker and writes its real
//! status on stderr (`CFSHIP-end exit N`, `CFSHIP-end signal N`; see
//! `src/launch/remote_stderr.rs`). Without `setpriv` the worker is
//! `exec`ed, as its parent must then be the session itself, and its
//! status is lost.

use std::ffi::{OsStr, OsString};
use std::fs::File;
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

/// Reads `path` once: its size and the SHA-256 of its bytes, as lowercase
/// hex. Two builds of a program differ in their bytes, so they get
/// different cache paths; nobody can make a program that takes another's
/// place in the cache.
pub(crate) fn content_key(path: &OsStr) -> Result<(u64, String), Error> {
    use sha2::{Digest, Sha256};
    let cannot = |e: io::Error| {
        Error::Io(format!(
            "cannot read the worker program {} to ship it: {e}",
            path.to_string_lossy()
        ))
    };
    let mut file = File::open(path).map_err(cannot)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(cannot)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let key = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    Ok((size, key))
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

/// How many days a cached build may go unused before a later shipment
/// removes it. A build's file is touched at most once a day when it runs.
pub(crate) const PRUNE_DAYS: u32 = 30;

/// The first script: runs [`SCRIPT`] (its `$0`) under `setpriv --pdeathsig
/// KILL` when the host has it (`wait`: the worker runs as its child and
/// its status is reported), else as is (`exec`: the worker replaces it).
const OUTER: &str = r#"if command -v setpriv >/dev/null 2>&1; then
  exec setpriv --pdeathsig KILL -- sh -c "$0" concurrent-futures-worker wait "$@"
fi
exec sh -c "$0" concurrent-futures-worker exec "$@""#;

/// The script that ships and runs the worker. `$1`: `wait` or `exec` (see
/// [`OUTER`]); `$2`: `ship` (then `$3` is the cache directory, empty for
/// the default, `$4` the key, `$5` the size) or `run` (`$3` is the
/// program); `$6`: the worker's `argv[0]`, or empty; then `NAME=value`
/// words for the environment, `--`, and the worker's arguments.
///
/// While it waits for the worker, the script's own stderr is `/dev/null`
/// (a shell reports a child killed by a signal with a "Killed" line of its
/// own); the worker gets the real one through fd 3, which it closes.
const SCRIPT: &str = r#"w=$1; m=$2; p=$3; k=$4; n=$5; a=$6; shift 6
u=$(id -u)
mine() { [ -n "$(find -H "$1" -prune -user "$u" ! -perm -020 ! -perm -002 2>/dev/null)" ]; }
refuse() { echo "$*" >&2; echo "CFSHIP-unsafe $*"; exit 1; }
case $p in "~/"*) p="$HOME/${p#"~/"}" ;; esac
if [ "$m" = ship ]; then
  [ -n "$p" ] || p="${XDG_CACHE_HOME:-$HOME/.cache}/concurrent-futures"
  [ -d "$p" ] || mkdir -p -m 700 "$p" || refuse "cannot create the cache directory $p"
  mine "$p" || refuse "the cache directory $p is not owned by $(id -un) or others may write to it: refusing to run programs from it"
  b="$p/worker-$k"
  if [ -e "$b" ]; then
    mine "$b" || refuse "the cached program $b is not owned by $(id -un) or others may write to it: refusing to run it"
    [ -z "$(find "$b" -prune -mtime +0 2>/dev/null)" ] || touch "$b" 2>/dev/null
    echo CFSHIP-have
  else
    t="$b.tmp.$$"
    echo CFSHIP-need
    (umask 077 && head -c "$n" > "$t") && [ "$(wc -c < "$t")" -eq "$n" ] && chmod 700 "$t" &&
      { sync "$t" 2>/dev/null; mv -f "$t" "$b"; } ||
      { rm -f "$t"; echo "cannot store the worker program at $b" >&2; exit 1; }
    find "$p/." ! -name . -prune -type f \( -name 'worker-*.tmp.*' -mtime +0 -o \
      -name 'worker-*' ! -name "worker-$k" -mtime +PRUNE_DAYS \) -exec rm -f {} + 2>/dev/null
  fi
else
  b=$p
  if [ -x "$b" ]; then echo CFSHIP-have; else echo CFSHIP-missing; exit 127; fi
fi
while [ "$1" != -- ]; do export "$1"; shift; done; shift
echo CFSHIP-start >&2
if [ -n "$a" ] && command -v bash >/dev/null 2>&1; then
  set -- bash -c 'exec 2>&3 3>&-; exec -a "$0" "$@"' "$a" "$b" "$@"
else set -- sh -c 'exec 2>&3 3>&-; exec "$@"' sh "$b" "$@"; fi
if [ "$w" = exec ]; then exec 3>&2; exec "$@"; fi
exec 3>&2 2>/dev/null
"$@"
s=$?
if [ "$s" -gt 128 ] && [ "$s" -lt 160 ]; then echo "CFSHIP-end signal $((s - 128))" >&3
else echo "CFSHIP-end exit $s" >&3; fi
exit "$s""#;

/// The remote command line (one string for the remote login shell): runs
/// [`SCRIPT`] for `program` with the worker's `argv[0]` (if given),
/// environment and arguments.
pub(crate) fn remote_command<'a>(
    program: &Program,
    arg0: Option<&OsStr>,
    env: impl Iterator<Item = (&'a OsStr, &'a OsStr)>,
    args: impl Iterator<Item = &'a OsStr>,
) -> OsString {
    let mut cmd = b"exec sh -c ".to_vec();
    cmd.extend(quote(OUTER.as_bytes()));
    let script = SCRIPT.replace("PRUNE_DAYS", &PRUNE_DAYS.to_string());
    let mut word = |w: &[u8]| {
        cmd.push(b' ');
        cmd.extend(quote(w));
    };
    word(script.as_bytes());
    match program {
        Program::Ship { size, key, dir, .. } => {
            word(b"ship");
            word(dir.as_deref().unwrap_or_default().as_bytes());
            word(key.as_bytes());
            word(size.to_string().as_bytes());
        }
        Program::Remote(path) => {
            word(b"run");
            word(path.as_bytes());
            word(b"");
            word(b"");
        }
    }
    word(arg0.map(OsStr::as_bytes).unwrap_or_default());
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
        if let Some(why) = status.strip_prefix(b"unsafe ") {
            return Err(io::Error::other(format!(
                "{} refused to run the worker: {}",
                ex.host,
                String::from_utf8_lossy(why)
            )));
        }
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
