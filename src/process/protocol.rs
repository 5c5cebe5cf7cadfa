//! The messages between a pool and its worker processes: one enum per
//! direction ([`ToWorker`], [`FromWorker`]), each with `encode` and
//! `decode`, carried in frames (`frame.rs`). Fixed-size header fields are
//! little-endian; values (arguments, results, errors, names) are postcard.
//! The worker starts its output with [`MAGIC`] and a `Hello`.
//! `docs/design.md` describes every kind.

use super::frame::{begin_frame, end_frame, Body};
pub(crate) use super::frame::{read_frame, skip_to_magic, Frame, MAGIC, MAX_FRAME};
use crate::Error;

/// Bumped on any incompatible change of the frames below.
pub(crate) const PROTOCOL_VERSION: u32 = 4;

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
/// `u64 seq`: give task `seq` back if it has not started.
const RECALL: u8 = 4;

// Worker -> pool.
/// `u32 protocol version`, `u32 pid`, postcard build identity string.
const HELLO: u8 = 0x81;
/// `u64 seq`, `u64 run time in ns`, `u8 status` (0 ok, 1 error), postcard
/// result or [`Error`].
const RESULT: u8 = 0x82;
/// `u8 status` (0 ok, 1 error), postcard [`Error`] on error.
const INIT_DONE: u8 = 0x83;
/// `u64 seq`, `u8 status` (0: given back, it never ran and never will;
/// 1: too late, it started, and its `Result` comes or came).
const RECALLED: u8 = 0x84;

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
    /// Give task `seq` back if it has not started; answer with `Recalled`.
    Recall { seq: u64 },
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
        let mut framed = || {
            match self {
                ToWorker::Declare {
                    id,
                    name,
                    signature,
                } => {
                    begin_frame(buf, DECLARE);
                    buf.extend_from_slice(&id.to_le_bytes());
                    encode_wire(&(name, signature), "task name", buf)?;
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
                ToWorker::Recall { seq } => {
                    begin_frame(buf, RECALL);
                    buf.extend_from_slice(&seq.to_le_bytes());
                }
            }
            end_frame(buf, start)
        };
        framed().inspect_err(|_| buf.truncate(start))
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
            RECALL => Ok(ToWorker::Recall {
                seq: body.u64("sequence number")?,
            }),
            other => Err(Error::Protocol(format!("an unknown frame kind {other:#x}"))),
        }
    }
}

/// The task a `Recall` frame asks for; `None` for a frame of another kind.
///
/// # Errors
///
/// [`Error::Protocol`] for a malformed `Recall`.
pub(crate) fn recall_seq(frame: &Frame) -> Result<Option<u64>, Error> {
    if frame.kind != RECALL {
        return Ok(None);
    }
    Body::new(&frame.body).u64("sequence number").map(Some)
}

/// The sequence number of a `Call` frame; `None` for another kind or a
/// body too short to hold one.
pub(crate) fn call_seq(frame: &Frame) -> Option<u64> {
    if frame.kind != CALL {
        return None;
    }
    Body::new(&frame.body).u64("sequence number").ok()
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
    /// The answer to a `Recall` of task `seq`: `given_back` if it never
    /// started (and never will), else it started and its `Result` comes
    /// or came.
    Recalled { seq: u64, given_back: bool },
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
        let mut framed = || match self {
            FromWorker::Hello {
                version,
                pid,
                build,
            } => {
                buf.extend_from_slice(MAGIC);
                let frame = begin_frame(buf, HELLO);
                buf.extend_from_slice(&version.to_le_bytes());
                buf.extend_from_slice(&pid.to_le_bytes());
                encode_wire(build, "protocol value", buf)?;
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
                        encode_wire(e, "protocol value", buf)?;
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
                        encode_wire(e, "protocol value", buf)?;
                    }
                }
                end_frame(buf, frame)
            }
            FromWorker::Recalled { seq, given_back } => {
                let frame = begin_frame(buf, RECALLED);
                buf.extend_from_slice(&seq.to_le_bytes());
                buf.push(u8::from(!given_back));
                end_frame(buf, frame)
            }
        };
        framed().inspect_err(|_| buf.truncate(start))
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
            RECALLED => {
                let seq = body.u64("sequence number")?;
                let given_back = match body.u8("status")? {
                    0 => true,
                    1 => false,
                    s => return Err(Error::Protocol(format!("an unknown recall status {s}"))),
                };
                Ok(FromWorker::Recalled { seq, given_back })
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

/// Appends a postcard value that is part of the protocol itself; on error
/// `buf` may hold part of it (the frame's `encode` cuts it off).
fn encode_wire<T: serde::Serialize>(value: &T, what: &str, buf: &mut Vec<u8>) -> Result<(), Error> {
    postcard::to_io(value, buf)
        .map(|_| ())
        .map_err(|e| Error::Codec(format!("cannot encode a {what}: {e}")))
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
        | Error::TimeLimit(_)
        | Error::ChunkTimeLimit { .. }) => Err(Error::Protocol(format!(
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
    use super::super::frame::one_frame;
    use super::*;
    use std::io::Cursor;

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
            ToWorker::Recall { seq: 12 },
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
            FromWorker::Recalled {
                seq: 12,
                given_back: true,
            },
            FromWorker::Recalled {
                seq: 13,
                given_back: false,
            },
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
            (RECALLED, vec![1, 2, 3]),
            (RECALLED, vec![0, 0, 0, 0, 0, 0, 0, 0, 2]),
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
            (RECALL, vec![1, 2]),
            (0x44, vec![]),
        ] {
            let f = Frame { kind, body };
            assert!(
                matches!(ToWorker::decode(&f), Err(Error::Protocol(_))),
                "{f:?}"
            );
        }
    }
}
