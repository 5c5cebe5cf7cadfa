//! The worker's side of sending ahead: the frames it has read and not yet
//! run, and the recall that takes one back before it starts.
//!
//! The task thread reads the pool's frames itself while it has nothing to
//! run, as a worker always did: a burst of tiny tasks costs no hand-over
//! between threads. Once a task has run for [`TAKE_OVER`] to twice that, a
//! second thread ([`Inbox::watch`]) takes over the input, so that frames sent
//! meanwhile, recalls among them, are read while the task runs. Whoever
//! reads queues the calls ([`Inbox::next`] takes them in order) and answers
//! a `Recall` at once, under the same lock the task thread takes its next
//! frame with. So exactly one of two things happens to a recalled task: it
//! is still queued, is taken out and answered "given back" (it never runs),
//! or the task thread took it first and the answer is "too late" (its
//! `Result` comes or came). The pool's future waits for this answer, so it
//! never says "cancelled" of a task that ran.

use std::collections::VecDeque;
use std::io::{BufReader, Read};
use std::time::Duration;

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::frame::{frame_buffered, read_frame};
use super::protocol::{call_seq, recall_seq, Frame, FromWorker};
use crate::Error;

/// How long a task runs (up to twice this) before the watching thread
/// reads the input in its stead. The pool recalls what waits behind a task
/// once it has run 1 ms or more (`pace.rs`), so a recall is read about
/// then.
pub(crate) const TAKE_OVER: Duration = Duration::from_micros(500);

/// After this many looks in a row that find the worker waiting for work
/// (100 ms), the watching thread sleeps until a task starts.
const QUIET_LOOKS: u32 = 200;

/// Frames read and not yet run, the input they come from, and how it
/// ended.
pub(crate) struct Inbox<R> {
    state: Mutex<Queued<R>>,
    /// Frames arrived, the input ended, or the reader was put back.
    arrived: Condvar,
    /// A task started (for the watching thread).
    started: Condvar,
}

struct Queued<R> {
    frames: VecDeque<Frame>,
    /// The input, when nobody is reading it.
    input: Option<BufReader<R>>,
    /// The input ended: cleanly (`Ok`) or with a broken frame.
    ended: Option<Result<(), Error>>,
    /// The task thread runs what it took last (it does not wait for a
    /// frame).
    running: bool,
    /// Frames the task thread took so far: the watching thread tells by it
    /// whether the task it saw running is still the one that runs (no
    /// clock read per frame: on a VM a clock read costs as much as a tiny
    /// task's whole dispatch).
    taken: u64,
    /// The watching thread waits for a task to start.
    watcher_idle: bool,
    /// The vector a read fills, kept between reads.
    spare: Vec<Frame>,
}

/// Writes an answer to the pool (the worker's output, under its lock).
pub(crate) type Answer<'a> = &'a mut dyn FnMut(&[u8]) -> std::io::Result<()>;

impl<R: Read> Inbox<R> {
    /// An inbox that reads `input` (`None`: frames come only through
    /// [`deliver`](Self::deliver)).
    pub(crate) fn new(input: Option<BufReader<R>>) -> Self {
        Inbox {
            state: Mutex::new(Queued {
                frames: VecDeque::new(),
                input,
                ended: None,
                running: false,
                taken: 0,
                watcher_idle: false,
                spare: Vec::new(),
            }),
            arrived: Condvar::new(),
            started: Condvar::new(),
        }
    }

    /// Takes in frames the pool sent, in order (the fuzz targets feed the
    /// worker this way): see [`deliver_locked`](Self::deliver_locked).
    ///
    /// # Errors
    ///
    /// As [`deliver_locked`](Self::deliver_locked).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn deliver(
        &self,
        frames: impl IntoIterator<Item = Frame>,
        answer: Answer<'_>,
    ) -> Result<(), Error> {
        let mut q = self.state.lock();
        self.deliver_locked(&mut q, frames, answer)
    }

    /// Queues each frame for the task thread, or, for a `Recall`, takes
    /// the recalled call out if it is still queued and writes the answer (a
    /// `Recalled` frame) with `answer`, before the task thread can take
    /// another frame: a task given back is answered before any task after
    /// it. The task thread is woken once per batch.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] for a malformed `Recall`; [`Error::Io`] if an
    /// answer cannot be written (the pool is gone). The frames before it
    /// are delivered.
    fn deliver_locked(
        &self,
        q: &mut Queued<R>,
        frames: impl IntoIterator<Item = Frame>,
        answer: Answer<'_>,
    ) -> Result<(), Error> {
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
            self.arrived.notify_all();
        }
        outcome
    }

    /// The input ended (`Ok`: the pool closed it; `Err`: a broken frame, or
    /// the pool is gone). The task thread runs what is queued, then stops.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn close(&self, how: Result<(), Error>) {
        let mut q = self.state.lock();
        Self::end(&mut q, how);
        self.arrived.notify_all();
        self.started.notify_all();
    }

    fn end(q: &mut Queued<R>, how: Result<(), Error>) {
        // The pool gone (an answer could not be written) ends it cleanly.
        let how = match how {
            Err(Error::Io(_)) => Ok(()),
            other => other,
        };
        q.ended.get_or_insert(how);
    }

    /// Reads what the input has (blocking for the first frame, then every
    /// frame already buffered) with the lock released, and delivers it.
    fn read_some(&self, q: &mut MutexGuard<'_, Queued<R>>, answer: Answer<'_>) {
        let Some(mut input) = q.input.take() else {
            return;
        };
        let mut batch = std::mem::take(&mut q.spare);
        let end = MutexGuard::unlocked(q, || loop {
            match read_frame(&mut input) {
                Ok(Some(frame)) => batch.push(frame),
                Ok(None) => return Some(Ok(())),
                Err(e) => return Some(Err(e)),
            }
            if !frame_buffered(input.buffer()) {
                return None;
            }
        });
        q.input = Some(input);
        let delivered = self.deliver_locked(q, batch.drain(..), &mut *answer);
        q.spare = batch;
        if let Some(how) = delivered.err().map(Err).or(end) {
            Self::end(q, how);
        }
        self.arrived.notify_all();
    }

    /// The task thread's next frame to run, read from the input if nothing
    /// is queued; `None` once the input ended and everything queued was
    /// taken. `answer` writes recall answers.
    ///
    /// # Errors
    ///
    /// The error that ended the input, after the frames before it.
    pub(crate) fn next(&self, answer: Answer<'_>) -> Result<Option<Frame>, Error> {
        let mut q = self.state.lock();
        q.running = false;
        loop {
            if let Some(f) = q.frames.pop_front() {
                q.running = true;
                q.taken = q.taken.wrapping_add(1);
                if q.watcher_idle {
                    self.started.notify_one();
                }
                return Ok(Some(f));
            }
            match &q.ended {
                Some(Ok(())) => return Ok(None),
                Some(Err(e)) => return Err(e.clone()),
                None => {}
            }
            if q.input.is_some() {
                self.read_some(&mut q, &mut *answer);
            } else {
                // The watching thread reads; it wakes us.
                self.arrived.wait(&mut q);
            }
        }
    }

    /// The watching thread: once a task has run for [`TAKE_OVER`] (it was
    /// running when the thread looked, and still is the same one a
    /// [`TAKE_OVER`] later), reads the input in the task thread's stead
    /// until that task ends; returns when the input ended.
    pub(crate) fn watch(&self, answer: Answer<'_>) {
        let mut q = self.state.lock();
        // The frame count when last seen running, and how many looks in a
        // row found the worker quiet.
        let (mut seen, mut quiet) = (None, 0);
        loop {
            if q.ended.is_some() {
                return;
            }
            if q.running && q.input.is_some() {
                if seen == Some(q.taken) {
                    self.read_some(&mut q, &mut *answer);
                    seen = None;
                    continue;
                }
                seen = Some(q.taken);
                quiet = 0;
            } else {
                // The task thread waits for a frame (and reads), or we do.
                seen = None;
                quiet += 1;
            }
            if quiet < QUIET_LOOKS {
                // Busy: look again soon. Looking costs less than waking
                // this thread each time a batch of tasks starts.
                self.started.wait_for(&mut q, TAKE_OVER);
            } else {
                // Idle for a while: sleep until a task starts.
                q.watcher_idle = true;
                self.started.wait(&mut q);
                q.watcher_idle = false;
                quiet = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::protocol::ToWorker;

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

    type NoInput = std::io::Empty;

    /// Delivers `f` and returns what it answered.
    fn deliver(inbox: &Inbox<NoInput>, f: Frame) -> Vec<u8> {
        let mut out = Vec::new();
        inbox
            .deliver([f], &mut |b: &[u8]| {
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

    fn next(inbox: &Inbox<NoInput>) -> Result<Option<Frame>, Error> {
        inbox.next(&mut |_: &[u8]| Ok(()))
    }

    #[test]
    fn a_queued_call_is_given_back_and_never_run() {
        let inbox = Inbox::<NoInput>::new(None);
        for seq in 0..3 {
            assert!(deliver(&inbox, call(seq)).is_empty());
        }
        assert_eq!(call_seq(&next(&inbox).unwrap().unwrap()), Some(0));
        // 0 was taken (it runs); 1 is still queued.
        let recall = |seq| deliver(&inbox, frame(ToWorker::Recall { seq }));
        assert_eq!(answer(recall(1)), (1, true));
        assert_eq!(answer(recall(0)), (0, false));
        inbox.close(Ok(()));
        assert_eq!(call_seq(&next(&inbox).unwrap().unwrap()), Some(2));
        assert!(next(&inbox).unwrap().is_none());
    }

    #[test]
    fn a_broken_input_ends_after_the_queued_frames() {
        let inbox = Inbox::<NoInput>::new(None);
        deliver(&inbox, call(4));
        inbox.close(Err(Error::Protocol("x".into())));
        assert!(next(&inbox).unwrap().is_some());
        assert_eq!(next(&inbox).err(), Some(Error::Protocol("x".into())));
    }

    #[test]
    fn a_malformed_recall_is_a_protocol_error() {
        let bad = Frame {
            kind: 4,
            body: vec![1, 2],
        };
        let delivered = Inbox::<NoInput>::new(None).deliver([bad], &mut |_: &[u8]| Ok(()));
        assert!(matches!(delivered, Err(Error::Protocol(_))));
    }

    #[test]
    fn the_task_thread_reads_the_input_itself() {
        let mut bytes = Vec::new();
        for seq in 0..3 {
            ToWorker::Call {
                seq,
                id: 0,
                chunk: false,
                arg: &[],
            }
            .encode(&mut bytes)
            .unwrap();
        }
        ToWorker::Recall { seq: 2 }.encode(&mut bytes).unwrap();
        let inbox = Inbox::new(Some(BufReader::new(&bytes[..])));
        let mut answers = Vec::new();
        let mut answer = |b: &[u8]| {
            answers.extend_from_slice(b);
            Ok(())
        };
        assert_eq!(
            call_seq(&inbox.next(&mut answer).unwrap().unwrap()),
            Some(0)
        );
        assert_eq!(
            call_seq(&inbox.next(&mut answer).unwrap().unwrap()),
            Some(1)
        );
        assert!(inbox.next(&mut answer).unwrap().is_none());
        assert_eq!(answer_of(&answers), (2, true));
    }

    fn answer_of(bytes: &[u8]) -> (u64, bool) {
        answer(bytes.to_vec())
    }
}
