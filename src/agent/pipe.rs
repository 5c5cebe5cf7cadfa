//! An in-memory pipe: the link's reader thread pushes the bytes an agent
//! relayed for one worker's stdout or stderr, and the pool reads them as
//! it would read that worker's own pipe.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

/// Both ends share this.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    readable: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Chunks not read yet, each with how much of it was read.
    chunks: VecDeque<(Vec<u8>, usize)>,
    /// No more bytes will come.
    closed: bool,
}

/// The writing end (the link's reader thread).
#[derive(Debug, Clone, Default)]
pub(crate) struct PipeWriter(Arc<Shared>);

/// The reading end (the pool's reader or stderr thread).
#[derive(Debug)]
pub(crate) struct PipeReader(Arc<Shared>);

/// A new pipe.
pub(crate) fn pipe() -> (PipeWriter, PipeReader) {
    let shared = Arc::new(Shared::default());
    (PipeWriter(Arc::clone(&shared)), PipeReader(shared))
}

impl PipeWriter {
    /// Appends `chunk[from..]`; ignored once the pipe is closed.
    pub(crate) fn push(&self, chunk: Vec<u8>, from: usize) {
        if from >= chunk.len() {
            return;
        }
        let mut st = self.0.state.lock();
        if st.closed {
            return;
        }
        st.chunks.push_back((chunk, from));
        drop(st);
        self.0.readable.notify_one();
    }

    /// Takes every byte not read yet, and whether the stream ended; the
    /// reader gets nothing more.
    pub(crate) fn take_all(&self) -> (Vec<u8>, bool) {
        let mut st = self.0.state.lock();
        let mut bytes = Vec::new();
        for (chunk, at) in st.chunks.drain(..) {
            bytes.extend_from_slice(&chunk[at..]);
        }
        let closed = st.closed;
        st.closed = true;
        drop(st);
        self.0.readable.notify_all();
        (bytes, closed)
    }

    /// The end of the stream: the reader gets what is left, then end of
    /// file.
    pub(crate) fn close(&self) {
        self.0.state.lock().closed = true;
        self.0.readable.notify_all();
    }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut st = self.0.state.lock();
        loop {
            let mut n = 0;
            while n < buf.len() {
                let Some((chunk, at)) = st.chunks.front_mut() else {
                    break;
                };
                let take = (chunk.len() - *at).min(buf.len() - n);
                buf[n..n + take].copy_from_slice(&chunk[*at..*at + take]);
                *at += take;
                n += take;
                if *at == chunk.len() {
                    st.chunks.pop_front();
                }
            }
            if n > 0 || st.closed {
                return Ok(n);
            }
            self.0.readable.wait(&mut st);
        }
    }
}

impl Drop for PipeReader {
    /// Nobody reads any more: what comes is dropped.
    fn drop(&mut self) {
        let mut st = self.0.state.lock();
        st.closed = true;
        st.chunks.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bytes_come_out_in_order_then_end_of_file() {
        let (w, mut r) = pipe();
        w.push(b"hello ".to_vec(), 0);
        w.push(b"xxworld".to_vec(), 2);
        w.push(Vec::new(), 0);
        w.close();
        w.push(b"late".to_vec(), 0);
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");
    }

    #[test]
    fn a_reader_waits_for_bytes() {
        let (w, mut r) = pipe();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 3];
            let n = r.read(&mut buf).unwrap();
            tx.send(buf[..n].to_vec()).unwrap();
        });
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        w.push(b"abc".to_vec(), 0);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), b"abc");
        t.join().unwrap();
    }

    #[test]
    fn small_reads_take_a_chunk_in_pieces() {
        let (w, mut r) = pipe();
        w.push(b"abcdef".to_vec(), 0);
        let mut buf = [0u8; 4];
        assert_eq!(r.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf, b"abcd");
        assert_eq!(r.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"ef");
    }
}
