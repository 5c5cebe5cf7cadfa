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
pub(crate) const PROTOCOL_VERSION: u32 = 2;

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
const DECLARE: u8 = 1;
/// `u64 seq`, `u32 task id`, `u8 flags` (bit 0: chunk), postcard argument
/// (or `Vec` of arguments for a chunk).
const CALL: u8 = 2;
/// `u32 task id`, postcard argument: run the initializer before any call.
const INIT: u8 = 3;

// Worker -> pool.
/// `u32 protocol version`, `u32 pid`, postcard build identity string.
const HELLO: u8 = 0x81;
/// `u64 seq`, `u64 run time in ns`, `u8 status` (0 ok, 1 error), postcard
/// result or [`Error`].
const RESULT: u8 = 0x82;
/// `u8 status` (0 ok, 1 error), postcard [`Error`] on error.
const INIT_DONE: u8 = 0x83;

/// Chunk flag of a `CALL`.
const FLAG_CHUNK: u8 = 1;

/// Bytes of a `CALL` frame before its argument: length, kind, seq, id, flags.
pub(crate) const CALL_HEADER: usize = 4 + 1 + 8 + 4 + 1;

/// A message from the pool to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ToWorker<'a> {
    /// Task `id` is the registered task `name` of this `signature`.
    Declare {
        id: u32,
        name: String,
        signature: String,
    },
    /// Run task `id` on the encoded argument (a `Vec` of them for a chunk);
    /// answer with a `Result` for `seq`.
    Call {
        seq: u64,
        id: u32,
        chunk: bool,
        arg: &'a [u8],
    },
    /// Run task `id` on the encoded argument as the initializer; answer
    /// with `InitDone`.
    Init { id: u32, arg: &'a [u8] },
}

impl<'a> ToWorker<'a> {
    /// Appends the message as one frame.
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] if the frame would exceed [`MAX_FRAME`]; `buf` is
    /// then left as it was.
    pub(crate) fn encode(&self, buf: &mut Vec<u8>) -> Result<(), Error> {
        let start = buf.len();
        match self {
            ToWorker::Declare {
                id,
                name,
                signature,
            } => {
                begin_frame(buf, DECLARE);
                buf.extend_from_slice(&id.to_le_bytes());
                let body = postcard::to_stdvec(&(name, signature))
                    .map_err(|e| Error::Codec(format!("cannot encode a task name: {e}")))?;
                buf.extend_from_slice(&body);
            }
            ToWorker::Call { arg, .. } => {
                self.encode_call_header(buf, arg.len());
                buf.extend_from_slice(arg);
            }
            ToWorker::Init { id, arg } => {
                begin_frame(buf, INIT);
                buf.extend_from_slice(&id.to_le_bytes());
                buf.extend_from_slice(arg);
            }
        }
        end_frame(buf, start).inspect_err(|_| buf.truncate(start))
    }

    /// Appends the header of a `Call` whose argument of `arg_len` bytes the
    /// caller writes itself right after (a big argument is written straight
    /// from where it lies). Does nothing for other messages.
    pub(crate) fn encode_call_header(&self, buf: &mut Vec<u8>, arg_len: usize) {
        if let ToWorker::Call { seq, id, chunk, .. } = self {
            let len = (CALL_HEADER - 4 + arg_len) as u32;
            buf.extend_from_slice(&len.to_le_bytes());
            buf.push(CALL);
            buf.extend_from_slice(&seq.to_le_bytes());
            buf.extend_from_slice(&id.to_le_bytes());
            buf.push(if *chunk { FLAG_CHUNK } else { 0 });
        }
    }

    /// Decodes a frame the worker reads.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] for an unknown kind or a malformed body.
    pub(crate) fn decode(frame: &'a Frame) -> Result<Self, Error> {
        let mut body = Body::new(&frame.body);
        match frame.kind {
            DECLARE => {
                let id = body.u32("task id")?;
                let (name, signature) = decode_wire(body.rest(), "task declaration")?;
                Ok(ToWorker::Declare {
                    id,
                    name,
                    signature,
                })
            }
            CALL => Ok(ToWorker::Call {
                seq: body.u64("sequence number")?,
                id: body.u32("task id")?,
                chunk: body.u8("flags")? & FLAG_CHUNK != 0,
                arg: body.rest(),
            }),
            INIT => Ok(ToWorker::Init {
                id: body.u32("task id")?,
                arg: body.rest(),
            }),
            other => Err(Error::Protocol(format!("an unknown frame kind {other:#x}"))),
        }
    }
}

/// A message from a worker to the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FromWorker<'a> {
    /// The handshake: protocol version, the worker's pid, its build.
    Hello {
        version: u32,
        pid: u32,
        build: String,
    },
    /// Task `seq` ran for `run_ns` nanoseconds and returned the encoded
    /// value, or failed.
    Result {
        seq: u64,
        run_ns: u64,
        outcome: Result<&'a [u8], Error>,
    },
    /// The initializer returned the encoded value, or failed.
    InitDone(Result<&'a [u8], Error>),
}

impl<'a> FromWorker<'a> {
    /// Appends the message as one frame (for `Hello`, preceded by
    /// [`MAGIC`]).
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] if an error value does not encode or the frame
    /// would exceed [`MAX_FRAME`]; `buf` is then left as it was.
    pub(crate) fn encode(&self, buf: &mut Vec<u8>) -> Result<(), Error> {
        let start = buf.len();
        let framed = match self {
            FromWorker::Hello {
                version,
                pid,
                build,
            } => {
                buf.extend_from_slice(MAGIC);
                let frame = begin_frame(buf, HELLO);
                buf.extend_from_slice(&version.to_le_bytes());
                buf.extend_from_slice(&pid.to_le_bytes());
                encode_wire(build, buf)?;
                end_frame(buf, frame)
            }
            FromWorker::Result {
                seq,
                run_ns,
                outcome,
            } => {
                let frame = begin_result(buf, *seq);
                match outcome {
                    Ok(value) => {
                        buf.extend_from_slice(value);
                        end_result(buf, frame, *run_ns, true)
                    }
                    Err(e) => {
                        encode_wire(e, buf)?;
                        end_result(buf, frame, *run_ns, false)
                    }
                }
            }
            FromWorker::InitDone(outcome) => {
                let frame = begin_frame(buf, INIT_DONE);
                match outcome {
                    Ok(value) => {
                        buf.push(0);
                        buf.extend_from_slice(value);
                    }
                    Err(e) => {
                        buf.push(1);
                        encode_wire(e, buf)?;
                    }
                }
                end_frame(buf, frame)
            }
        };
        framed.inspect_err(|_| buf.truncate(start))
    }

    /// Decodes the first frame a worker writes, which must be `Hello`.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] for another kind or a malformed body.
    pub(crate) fn decode_hello(frame: &'a Frame) -> Result<Self, Error> {
        if frame.kind != HELLO {
            return Err(Error::Protocol(format!(
                "expected the handshake, got frame kind {:#x}",
                frame.kind
            )));
        }
        Self::decode(frame)
    }

    /// Decodes a frame the pool reads from a worker.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] for an unknown kind, a malformed body, or an
    /// error only the pool can raise (see [`decode_task_error`]).
    pub(crate) fn decode(frame: &'a Frame) -> Result<Self, Error> {
        let mut body = Body::new(&frame.body);
        match frame.kind {
            HELLO => Ok(FromWorker::Hello {
                version: body.u32("protocol version")?,
                pid: body.u32("pid")?,
                build: decode_wire(body.rest(), "build identity")?,
            }),
            RESULT => {
                let seq = body.u64("sequence number")?;
                let run_ns = body.u64("run time")?;
                let outcome = match body.u8("status")? {
                    0 => Ok(body.rest()),
                    1 => Err(decode_task_error(body.rest(), "task error")?),
                    s => return Err(Error::Protocol(format!("an unknown result status {s}"))),
                };
                Ok(FromWorker::Result {
                    seq,
                    run_ns,
                    outcome,
                })
            }
            INIT_DONE => {
                let outcome = match body.u8("status")? {
                    0 => Ok(body.rest()),
                    1 => Err(decode_task_error(body.rest(), "initializer error")?),
                    s => return Err(Error::Protocol(format!("an unknown status {s}"))),
                };
                Ok(FromWorker::InitDone(outcome))
            }
            kind => Err(Error::Protocol(format!(
                "an unexpected frame kind {kind:#x}"
            ))),
        }
    }
}

/// Starts a `Result` frame for `seq` whose value the caller appends in
/// place (a task encodes its result straight into the frame); finish it
/// with [`end_result`]. Returns where the frame starts.
pub(crate) fn begin_result(buf: &mut Vec<u8>, seq: u64) -> usize {
    let start = begin_frame(buf, RESULT);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&[0; 8]); // run time, written by end_result
    buf.push(0); // status, written by end_result
    start
}

/// Finishes a frame begun by [`begin_result`]: run time, status (`ok`:
/// the bytes after the header are the value, else an encoded [`Error`]),
/// length.
///
/// # Errors
///
/// [`Error::Codec`] if the frame exceeds [`MAX_FRAME`].
pub(crate) fn end_result(buf: &mut [u8], start: usize, run_ns: u64, ok: bool) -> Result<(), Error> {
    let run = start + 5 + 8;
    buf[run..run + 8].copy_from_slice(&run_ns.to_le_bytes());
    buf[run + 8] = if ok { 0 } else { 1 };
    end_frame(buf, start)
}

fn encode_wire<T: serde::Serialize>(value: &T, buf: &mut Vec<u8>) -> Result<(), Error> {
    let body = postcard::to_stdvec(value)
        .map_err(|e| Error::Codec(format!("cannot encode a protocol value: {e}")))?;
    buf.extend_from_slice(&body);
    Ok(())
}

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
fn begin_frame(buf: &mut Vec<u8>, kind: u8) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0, 0, 0, kind]);
    start
}

/// Writes the length of the frame begun at `start`.
fn end_frame(buf: &mut [u8], start: usize) -> Result<(), Error> {
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
struct Body<'a> {
    rest: &'a [u8],
}

impl<'a> Body<'a> {
    fn new(bytes: &'a [u8]) -> Self {
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

    fn u8(&mut self, what: &str) -> Result<u8, Error> {
        Ok(self.take::<1>(what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.take::<4>(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.take::<8>(what)?))
    }

    /// Everything not read yet.
    fn rest(self) -> &'a [u8] {
        self.rest
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
        e @ (Error::Cancelled
        | Error::Timeout { .. }
        | Error::AlreadyTaken
        | Error::TimeLimit(_)) => Err(Error::Protocol(format!(
            "a {what} that only the pool can raise: {e}"
        ))),
        e => Ok(e),
    }
}

/// Decodes a postcard value that is part of the protocol itself.
fn decode_wire<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Error> {
    postcard::from_bytes(bytes).map_err(|e| Error::Protocol(format!("a malformed {what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn one_frame(bytes: &[u8]) -> Frame {
        let mut r = Cursor::new(bytes);
        let f = read_frame(&mut r).unwrap().unwrap();
        assert!(read_frame(&mut r).unwrap().is_none());
        f
    }

    #[test]
    fn every_message_round_trips() {
        let to = [
            ToWorker::Declare {
                id: 3,
                name: "m::f".into(),
                signature: "u64 -> u64".into(),
            },
            ToWorker::Call {
                seq: 7,
                id: 3,
                chunk: true,
                arg: &[1, 2, 3],
            },
            ToWorker::Init { id: 0, arg: &[9] },
        ];
        for m in to {
            let mut buf = Vec::new();
            m.encode(&mut buf).unwrap();
            assert_eq!(ToWorker::decode(&one_frame(&buf)).unwrap(), m);
        }
        let from = [
            FromWorker::Result {
                seq: 9,
                run_ns: 1234,
                outcome: Ok(&[5, 6]),
            },
            FromWorker::Result {
                seq: 10,
                run_ns: 0,
                outcome: Err(Error::Codec("x".into())),
            },
            FromWorker::InitDone(Ok(&[])),
            FromWorker::InitDone(Err(Error::TaskNotFound("f".into()))),
        ];
        for m in from {
            let mut buf = Vec::new();
            m.encode(&mut buf).unwrap();
            assert_eq!(FromWorker::decode(&one_frame(&buf)).unwrap(), m);
        }
        let hello = FromWorker::Hello {
            version: PROTOCOL_VERSION,
            pid: 42,
            build: build_identity(),
        };
        let mut buf = Vec::new();
        hello.encode(&mut buf).unwrap();
        let mut r = Cursor::new(buf);
        assert_eq!(skip_to_magic(&mut r).unwrap(), 0);
        let f = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(FromWorker::decode(&f).unwrap(), hello);
    }

    #[test]
    fn a_call_header_matches_the_whole_call() {
        let call = ToWorker::Call {
            seq: 1,
            id: 2,
            chunk: false,
            arg: &[7; 10],
        };
        let mut whole = Vec::new();
        call.encode(&mut whole).unwrap();
        let mut split = Vec::new();
        call.encode_call_header(&mut split, 10);
        assert_eq!(split.len(), CALL_HEADER);
        split.extend_from_slice(&[7; 10]);
        assert_eq!(whole, split);
    }

    #[test]
    fn a_result_written_in_place_decodes() {
        let mut buf = Vec::new();
        let start = begin_result(&mut buf, 5);
        buf.extend_from_slice(&[1, 2]);
        end_result(&mut buf, start, 77, true).unwrap();
        assert_eq!(
            FromWorker::decode(&one_frame(&buf)).unwrap(),
            FromWorker::Result {
                seq: 5,
                run_ns: 77,
                outcome: Ok(&[1, 2])
            }
        );
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
    fn malformed_replies_are_protocol_errors() {
        let head = |status: u8| {
            let mut b = vec![0u8; 16];
            b.push(status);
            b
        };
        let with = |mut b: Vec<u8>, tail: &[u8]| {
            b.extend_from_slice(tail);
            b
        };
        for (kind, body) in [
            (RESULT, vec![1u8, 2]),
            (RESULT, head(7)),
            (INIT_DONE, vec![2]),
            (INIT_DONE, vec![1, 0xff]),
            // Errors about the pool's own future, which no worker raises.
            (RESULT, with(head(1), &[0])),
            (RESULT, with(head(1), &[1, 1, 2])),
            (RESULT, with(head(1), &[6])),
            (INIT_DONE, vec![1, 0]),
            (CALL, vec![]),
            (HELLO, vec![1, 0, 0]),
        ] {
            let f = Frame { kind, body };
            assert!(
                matches!(FromWorker::decode(&f), Err(Error::Protocol(_))),
                "{f:?}"
            );
        }
        for (kind, body) in [
            (CALL, vec![1u8]),
            (DECLARE, vec![0, 0, 0, 0, 9]),
            (0x44, vec![]),
        ] {
            let f = Frame { kind, body };
            assert!(
                matches!(ToWorker::decode(&f), Err(Error::Protocol(_))),
                "{f:?}"
            );
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
