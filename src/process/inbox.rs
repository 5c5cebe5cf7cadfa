//! The worker's side of sending ahead: the frames it has read and not yet
//! run, and the recall that takes one back before it starts.
//!
//! A reader thread reads the pool's frames as they arrive and queues them
//! here ([`Inbox::deliver`]); the task thread takes them in order
//! ([`Inbox::next`]). A `Recall` never queues: the reader answers it at
//! once, even while a task runs, under the same lock the task thread takes
//! its next frame with. So exactly one of two things happens to a recalled
//! task: it is still queued, is taken out and answered "given back" (it
//! never runs), or the task thread took it first and the answer is "too
//! late" (its `Result` comes or came). The pool's future waits for this
//! answer, so it never says "cancelled" of a task that ran.

use std::collections::VecDeque;

use parking_lot::{Condvar, Mutex};

use super::protocol::{call_seq, recall_seq, Frame, FromWorker};
use crate::Error;

/// Frames read and not yet run, and how the input ended.
#[derive(Default)]
pub(crate) struct Inbox {
    state: Mutex<Queued>,
    arrived: Condvar,
}

#[derive(Default)]
struct Queued {
    frames: VecDeque<Frame>,
    /// The input ended: cleanly (`Ok`) or with a broken frame.
    ended: Option<Result<(), Error>>,
}

impl Inbox {
    /// Takes in frames the pool sent, in order. Queues each for the task
    /// thread, or, for a `Recall`, takes the recalled call out if it is
    /// still queued and hands the answer (a `Recalled` frame) to `answer`.
    /// The answer is written before the task thread can take another
    /// frame: a task given back must be answered before any task after it.
    /// The task thread is woken once per batch, not once per frame.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] for a malformed `Recall`; [`Error::Io`] if an
    /// answer cannot be written (the pool is gone). The frames before it
    /// are delivered.
    pub(crate) fn deliver(
        &self,
        frames: impl IntoIterator<Item = Frame>,
        mut answer: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<(), Error> {
        let mut q = self.state.lock();
        let was_empty = q.frames.is_empty();
        let mut outcome = Ok(());
        for frame in frames {
            let seq = match recall_seq(&frame) {
                Ok(None) => {
                    q.frames.push_back(frame);
                    continue;
                }
                Ok(Some(seq)) => seq,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            };
            let at = q.frames.iter().position(|f| call_seq(f) == Some(seq));
            let given_back = at.and_then(|i| q.frames.remove(i)).is_some();
            let mut bytes = Vec::with_capacity(16);
            let answered = FromWorker::Recalled { seq, given_back }
                .encode(&mut bytes)
                .and_then(|()| {
                    answer(&bytes).map_err(|e| Error::Io(format!("cannot answer a recall: {e}")))
                });
            if let Err(e) = answered {
                outcome = Err(e);
                break;
            }
        }
        if was_empty && !q.frames.is_empty() {
            self.arrived.notify_one();
        }
        outcome
    }

    /// The input ended (`Ok`: the pool closed it; `Err`: a broken frame).
    /// The task thread runs what is queued, then stops.
    pub(crate) fn close(&self, how: Result<(), Error>) {
        let mut q = self.state.lock();
        q.ended.get_or_insert(how);
        self.arrived.notify_one();
    }

    /// The next frame to run, waiting for one; `None` once the input ended
    /// and everything queued was taken.
    ///
    /// # Errors
    ///
    /// The error that ended the input, after the frames before it.
    pub(crate) fn next(&self) -> Result<Option<Frame>, Error> {
        let mut q = self.state.lock();
        loop {
            if let Some(f) = q.frames.pop_front() {
                return Ok(Some(f));
            }
            match &q.ended {
                Some(Ok(())) => return Ok(None),
                Some(Err(e)) => return Err(e.clone()),
                None => self.arrived.wait(&mut q),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::protocol::{read_frame, ToWorker};

    fn frame(m: ToWorker<'_>) -> Frame {
        let mut buf = Vec::new();
        m.encode(&mut buf).unwrap();
        read_frame(&mut &buf[..]).unwrap().unwrap()
    }

    fn call(seq: u64) -> Frame {
        frame(ToWorker::Call {
            seq,
            id: 0,
            chunk: false,
            arg: &[],
        })
    }

    /// Delivers `f` and returns what it answered.
    fn deliver(inbox: &Inbox, f: Frame) -> Vec<u8> {
        let mut out = Vec::new();
        inbox
            .deliver([f], |b| {
                out.extend_from_slice(b);
                Ok(())
            })
            .unwrap();
        out
    }

    fn answer(bytes: Vec<u8>) -> (u64, bool) {
        let f = read_frame(&mut &bytes[..]).unwrap().unwrap();
        match FromWorker::decode(&f).unwrap() {
            FromWorker::Recalled { seq, given_back } => (seq, given_back),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_queued_call_is_given_back_and_never_run() {
        let inbox = Inbox::default();
        for seq in 0..3 {
            assert!(deliver(&inbox, call(seq)).is_empty());
        }
        assert_eq!(call_seq(&inbox.next().unwrap().unwrap()), Some(0));
        // 0 was taken (it runs); 1 is still queued.
        let recall = |seq| deliver(&inbox, frame(ToWorker::Recall { seq }));
        assert_eq!(answer(recall(1)), (1, true));
        assert_eq!(answer(recall(0)), (0, false));
        inbox.close(Ok(()));
        assert_eq!(call_seq(&inbox.next().unwrap().unwrap()), Some(2));
        assert!(inbox.next().unwrap().is_none());
    }

    #[test]
    fn a_broken_input_ends_after_the_queued_frames() {
        let inbox = Inbox::default();
        deliver(&inbox, call(4));
        inbox.close(Err(Error::Protocol("x".into())));
        assert!(inbox.next().unwrap().is_some());
        assert_eq!(inbox.next().err(), Some(Error::Protocol("x".into())));
    }

    #[test]
    fn a_malformed_recall_is_a_protocol_error() {
        let bad = Frame {
            kind: 4,
            body: vec![1, 2],
        };
        let delivered = Inbox::default().deliver([bad], |_| Ok(()));
        assert!(matches!(delivered, Err(Error::Protocol(_))));
    }
}
