//! The wire between a pool and its worker processes.
//!
//! Every message is a frame: a `u32` little-endian length `L`, then `L`
//! bytes: one kind byte and the kind's body. Fixed-size header fields are
//! little-endian; values (arguments, results, errors, names) are postcard.
//! The worker starts its output with [`MAGIC`] and a `HELLO` frame; the pool
//! skips at most [`MAX_NOISE`] bytes of other output before the magic.
//! `docs/design.md` describes every kind.

use std::io::{self, BufRead, Read};

use crate::Error;

/// Bumped on any incompatible change of the frames below.
pub(crate) const PROTOCOL_VERSION: u32 = 1;

/// Precedes the worker's `HELLO` frame, so stray output can be skipped.
pub(crate) const MAGIC: &[u8; 8] = b"\x00CFWRK1\x00";

/// The most bytes of unrelated output tolerated before the handshake (a
/// test harness may print a banner first).
pub(crate) const MAX_NOISE: usize = 64 * 1024;

/// The largest frame either side accepts (1 GiB).
pub(crate) const MAX_FRAME: usize = 1 << 30;

/// How much of a frame body is read before its length is believed.
const FIRST_READ: usize = 16 << 20;

/// The environment variable that marks a worker process.
pub(crate) const WORKER_ENV: &str = "CONCURRENT_FUTURES_WORKER";

// Pool -> worker.
/// `u32 task id`, postcard `(name, signature)`: names a task for later calls.
pub(crate) const DECLARE: u8 = 1;
/// `u64 seq`, `u32 task id`, `u8 flags` (bit 0: chunk), postcard argument
/// (or `Vec` of arguments for a chunk).
pub(crate) const CALL: u8 = 2;
/// `u32 task id`, postcard argument: run the initializer before any call.
pub(crate) const INIT: u8 = 3;

// Worker -> pool.
/// `u32 protocol version`, `u32 pid`, postcard build identity string.
pub(crate) const HELLO: u8 = 0x81;
/// `u64 seq`, `u8 status` (0 ok, 1 error), postcard result or [`Error`].
pub(crate) const RESULT: u8 = 0x82;
/// `u8 status` (0 ok, 1 error), postcard [`Error`] on error.
pub(crate) const INIT_DONE: u8 = 0x83;

/// Chunk flag of a `CALL`.
pub(crate) const FLAG_CHUNK: u8 = 1;

/// Identifies the build of this crate on both ends of the pipe.
pub(crate) fn build_identity() -> String {
    format!(
        "concurrent-futures {} {}-bit {}",
        env!("CARGO_PKG_VERSION"),
        usize::BITS,
        if cfg!(target_endian = "little") {
            "le"
        } else {
            "be"
        }
    )
}

/// Starts a frame of `kind` in `buf`; finish it with [`end_frame`].
pub(crate) fn begin_frame(buf: &mut Vec<u8>, kind: u8) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0, 0, 0, kind]);
    start
}

/// Writes the length of the frame begun at `start`.
pub(crate) fn end_frame(buf: &mut [u8], start: usize) -> Result<(), Error> {
    let len = buf.len() - start - 4;
    if len > MAX_FRAME {
        return Err(Error::Codec(format!(
            "a frame of {len} bytes exceeds the limit of {MAX_FRAME} bytes"
        )));
    }
    buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// A frame read from the wire: kind and body.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) kind: u8,
    pub(crate) body: Vec<u8>,
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
///
/// The body is read as it arrives, so a bogus length costs no allocation
/// beyond what the peer actually sends.
pub(crate) fn read_frame(r: &mut impl BufRead) -> Result<Option<Frame>, Error> {
    let mut head = [0u8; 5];
    // The length is judged before the kind byte is awaited: a peer that
    // sends an impossible length and then stalls must not hold the reader.
    let mut got = read_exact_or_eof(r, &mut head[..4])?;
    if got == 0 {
        return Ok(None);
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if got == 4 {
        if len == 0 {
            return Err(Error::Protocol("an empty frame".to_string()));
        }
        if len > MAX_FRAME {
            return Err(Error::Protocol(format!(
                "a frame of {len} bytes exceeds the limit of {MAX_FRAME} bytes"
            )));
        }
        got += read_exact_or_eof(r, &mut head[4..])?;
    }
    if got < 5 {
        return Err(Error::Protocol(format!(
            "the stream ended inside a frame header ({got} of 5 bytes)"
        )));
    }
    let want = len - 1;
    // Trust the length only as far as the peer backs it with data: the
    // first step reserves at most `FIRST_READ`, each later one at most what
    // already arrived, so a bogus length costs at most `FIRST_READ` plus
    // twice the bytes actually sent (not the claimed length).
    let mut body = Vec::new();
    let mut step = want.min(FIRST_READ);
    let mut got = 0;
    while step > 0 {
        body.reserve_exact(step);
        let n = r.by_ref().take(step as u64).read_to_end(&mut body)?;
        got += n;
        if n < step {
            break;
        }
        step = (want - got).min(got);
    }
    if got != want {
        return Err(Error::Protocol(format!(
            "the stream ended inside a frame ({} of {len} bytes)",
            got + 1
        )));
    }
    Ok(Some(Frame {
        kind: head[4],
        body,
    }))
}

fn read_exact_or_eof(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Skips output until [`MAGIC`]; returns how many bytes were skipped.
pub(crate) fn skip_to_magic(r: &mut impl BufRead) -> Result<usize, Error> {
    // No proper suffix of a partial match is a prefix of MAGIC (only its
    // first byte is 0 before the end), so a mismatch restarts the match.
    let mut matched = 0;
    let mut total = 0usize;
    let mut byte = [0u8; 1];
    while matched < MAGIC.len() {
        if r.read(&mut byte)? == 0 {
            return Err(Error::Protocol(format!(
                "the worker closed its output before the handshake (after {total} bytes of other output)"
            )));
        }
        total += 1;
        if byte[0] == MAGIC[matched] {
            matched += 1;
        } else {
            matched = usize::from(byte[0] == MAGIC[0]);
        }
        if total - matched > MAX_NOISE {
            return Err(Error::Protocol(format!(
                "the worker wrote more than {MAX_NOISE} bytes of other output instead of the handshake"
            )));
        }
    }
    Ok(total - MAGIC.len())
}

/// A little-endian cursor over a frame body.
pub(crate) struct Body<'a> {
    rest: &'a [u8],
}

impl<'a> Body<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Body { rest: bytes }
    }

    fn take<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Error> {
        if self.rest.len() < N {
            return Err(Error::Protocol(format!("a frame too short for its {what}")));
        }
        let (head, tail) = self.rest.split_at(N);
        self.rest = tail;
        let mut out = [0u8; N];
        out.copy_from_slice(head);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, Error> {
        Ok(self.take::<1>(what)?[0])
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.take::<4>(what)?))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.take::<8>(what)?))
    }

    /// Everything not read yet.
    pub(crate) fn rest(self) -> &'a [u8] {
        self.rest
    }
}

/// A worker's reply, decoded from a `RESULT` or `INIT_DONE` frame.
#[derive(Debug)]
pub(crate) enum Reply<'a> {
    /// `RESULT`: task `seq` returned the encoded value, or failed.
    Result {
        seq: u64,
        outcome: Result<&'a [u8], Error>,
    },
    /// `INIT_DONE`: the initializer returned the encoded value, or failed.
    InitDone(Result<&'a [u8], Error>),
}

/// Decodes a frame the pool reads from a worker after the handshake.
pub(crate) fn decode_reply(frame: &Frame) -> Result<Reply<'_>, Error> {
    let mut body = Body::new(&frame.body);
    match frame.kind {
        RESULT => {
            let seq = body.u64("sequence number")?;
            let outcome = match body.u8("status")? {
                0 => Ok(body.rest()),
                1 => Err(decode_task_error(body.rest(), "task error")?),
                s => return Err(Error::Protocol(format!("an unknown result status {s}"))),
            };
            Ok(Reply::Result { seq, outcome })
        }
        INIT_DONE => {
            let outcome = match body.u8("status")? {
                0 => Ok(body.rest()),
                1 => Err(decode_task_error(body.rest(), "initializer error")?),
                s => return Err(Error::Protocol(format!("an unknown status {s}"))),
            };
            Ok(Reply::InitDone(outcome))
        }
        kind => Err(Error::Protocol(format!(
            "an unexpected frame kind {kind:#x}"
        ))),
    }
}

/// Decodes the error a worker reports for a task or the initializer.
///
/// A worker reports what went wrong in it: a panic, a codec error, an
/// unknown task. The errors that describe the pool's own future (cancelled,
/// timed out, already taken) are refused: passed on, they would make a
/// finished future look pending to a caller that retries on
/// `Error::Timeout`, or cancelled while `cancelled()` says otherwise.
fn decode_task_error(bytes: &[u8], what: &str) -> Result<Error, Error> {
    match decode_wire::<Error>(bytes, what)? {
        e @ (Error::Cancelled | Error::Timeout { .. } | Error::AlreadyTaken) => Err(
            Error::Protocol(format!("a {what} that only the pool can raise: {e}")),
        ),
        e => Ok(e),
    }
}

/// Decodes a postcard value that is part of the protocol itself.
pub(crate) fn decode_wire<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> Result<T, Error> {
    postcard::from_bytes(bytes).map_err(|e| Error::Protocol(format!("a malformed {what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn frame_round_trip() {
        let mut buf = Vec::new();
        let s = begin_frame(&mut buf, CALL);
        buf.extend_from_slice(&7u64.to_le_bytes());
        end_frame(&mut buf, s).unwrap();
        let mut r = Cursor::new(buf);
        let f = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(f.kind, CALL);
        assert_eq!(Body::new(&f.body).u64("seq").unwrap(), 7);
        assert!(read_frame(&mut r).unwrap().is_none());
    }

    #[test]
    fn huge_length_is_a_protocol_error_without_allocating() {
        let mut r = Cursor::new(u32::MAX.to_le_bytes().to_vec());
        assert!(matches!(read_frame(&mut r), Err(Error::Protocol(_))));
    }

    #[test]
    fn big_frame_is_read_in_growing_steps() {
        let want = 2 * FIRST_READ + 3;
        let mut bytes = (want as u32 + 1).to_le_bytes().to_vec();
        bytes.push(RESULT);
        bytes.extend((0..want).map(|i| i as u8));
        let f = read_frame(&mut Cursor::new(&bytes)).unwrap().unwrap();
        assert_eq!(f.body.len(), want);
        assert!(f.body.iter().enumerate().all(|(i, b)| *b == i as u8));
        // The same frame cut short: an error, not a hang or a huge buffer.
        bytes.truncate(5 + FIRST_READ + 10);
        assert!(matches!(
            read_frame(&mut Cursor::new(&bytes)),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn replies_decode_or_fail_cleanly() {
        let mut buf = Vec::new();
        let s = begin_frame(&mut buf, RESULT);
        buf.extend_from_slice(&9u64.to_le_bytes());
        buf.push(1);
        buf.extend_from_slice(&postcard::to_stdvec(&Error::Shutdown).unwrap());
        end_frame(&mut buf, s).unwrap();
        let f = read_frame(&mut Cursor::new(&buf)).unwrap().unwrap();
        assert!(matches!(
            decode_reply(&f),
            Ok(Reply::Result {
                seq: 9,
                outcome: Err(Error::Shutdown)
            })
        ));
        for (kind, body) in [
            (RESULT, &[1u8, 2][..]),
            (RESULT, &[0, 0, 0, 0, 0, 0, 0, 0, 7][..]),
            (INIT_DONE, &[2][..]),
            (INIT_DONE, &[1, 0xff][..]),
            // Errors about the pool's own future, which no worker raises.
            (RESULT, &[0, 0, 0, 0, 0, 0, 0, 0, 1, 0][..]),
            (RESULT, &[0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2][..]),
            (RESULT, &[0, 0, 0, 0, 0, 0, 0, 0, 1, 6][..]),
            (INIT_DONE, &[1, 0][..]),
            (CALL, &[][..]),
        ] {
            let f = Frame {
                kind,
                body: body.to_vec(),
            };
            assert!(matches!(decode_reply(&f), Err(Error::Protocol(_))), "{f:?}");
        }
    }

    #[test]
    fn truncated_frame_is_a_protocol_error() {
        let mut bytes = 10u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[RESULT, 1, 2]);
        assert!(matches!(
            read_frame(&mut Cursor::new(bytes)),
            Err(Error::Protocol(_))
        ));
        assert!(matches!(
            read_frame(&mut Cursor::new(vec![1, 0])),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn noise_before_magic_is_skipped() {
        let mut bytes = b"running 1 test\n\x00CF".to_vec();
        bytes.extend_from_slice(MAGIC);
        bytes.push(42);
        let mut r = Cursor::new(bytes);
        assert_eq!(skip_to_magic(&mut r).unwrap(), 18);
        let mut next = [0u8];
        r.read_exact(&mut next).unwrap();
        assert_eq!(next, [42]);
        let mut empty = Cursor::new(Vec::new());
        assert!(matches!(skip_to_magic(&mut empty), Err(Error::Protocol(_))));
        let mut flood = Cursor::new(vec![b'x'; MAX_NOISE + 10]);
        assert!(matches!(skip_to_magic(&mut flood), Err(Error::Protocol(_))));
    }
}
