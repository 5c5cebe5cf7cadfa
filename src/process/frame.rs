//! Frames: the byte stream both directions of the wire are made of.
//!
//! A frame is a `u32` little-endian length `L`, then `L` bytes: one kind
//! byte and the kind's body. The worker starts its output with [`MAGIC`];
//! the pool skips at most [`MAX_NOISE`] bytes of other output before it.
//! What the kinds mean is `protocol.rs`'s business.

use std::io::{self, BufRead, Read};

use crate::Error;

/// Precedes the worker's `HELLO` frame, so stray output can be skipped.
pub(crate) const MAGIC: &[u8; 8] = b"\x00CFWRK1\x00";

/// The most bytes of unrelated output tolerated before the handshake (a
/// test harness may print a banner first).
pub(crate) const MAX_NOISE: usize = 64 * 1024;

/// The largest frame either side accepts (1 GiB).
pub(crate) const MAX_FRAME: usize = 1 << 30;

/// How much of a frame body is read before its length is believed.
const FIRST_READ: usize = 16 << 20;

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

/// True if `buffered` (what a reader holds, not yet consumed) starts with
/// a whole frame, or with a header that [`read_frame`] refuses at once:
/// reading it will not block.
pub(crate) fn frame_buffered(buffered: &[u8]) -> bool {
    let Some(&[a, b, c, d]) = buffered.get(..4) else {
        return false;
    };
    let len = u32::from_le_bytes([a, b, c, d]) as usize;
    len == 0 || len > MAX_FRAME || buffered.len() >= 4 + len
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
            return Err(closed_before_magic(total));
        }
        total += 1;
        if byte[0] == MAGIC[matched] {
            matched += 1;
        } else {
            matched = usize::from(byte[0] == MAGIC[0]);
        }
        if total - matched > MAX_NOISE {
            return Err(too_much_noise());
        }
    }
    Ok(total - MAGIC.len())
}

/// [`skip_to_magic`] over the output received so far, `buf`: how many
/// bytes to skip, the magic included, once it is there; `None` until then
/// (`closed`: nothing more will come).
pub(crate) fn find_magic(buf: &[u8], closed: bool) -> Result<Option<usize>, Error> {
    if let Some(at) = buf.windows(MAGIC.len()).position(|w| w == MAGIC) {
        if at > MAX_NOISE {
            return Err(too_much_noise());
        }
        return Ok(Some(at + MAGIC.len()));
    }
    if closed {
        return Err(closed_before_magic(buf.len()));
    }
    // The end of `buf` may be the start of the magic.
    if buf.len().saturating_sub(MAGIC.len() - 1) > MAX_NOISE {
        return Err(too_much_noise());
    }
    Ok(None)
}

fn closed_before_magic(total: usize) -> Error {
    Error::Protocol(format!(
        "the worker closed its output before the handshake (after {total} bytes of other output)"
    ))
}

fn too_much_noise() -> Error {
    Error::Protocol(format!(
        "the worker wrote more than {MAX_NOISE} bytes of other output instead of the handshake"
    ))
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

/// The one frame `bytes` hold (for tests: panics otherwise).
#[cfg(test)]
pub(crate) fn one_frame(bytes: &[u8]) -> Frame {
    let mut r = std::io::Cursor::new(bytes);
    let f = read_frame(&mut r).unwrap().unwrap();
    assert!(read_frame(&mut r).unwrap().is_none());
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const RESULT: u8 = 0x82;

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

    #[test]
    fn magic_is_found_in_what_arrived_so_far() {
        let mut bytes = b"banner\n".to_vec();
        assert_eq!(find_magic(&bytes, false).unwrap(), None);
        bytes.extend_from_slice(&MAGIC[..3]);
        assert_eq!(find_magic(&bytes, false).unwrap(), None);
        bytes.extend_from_slice(&MAGIC[3..]);
        bytes.push(42);
        assert_eq!(find_magic(&bytes, false).unwrap(), Some(7 + MAGIC.len()));
        assert!(
            matches!(find_magic(b"banner", true), Err(Error::Protocol(m)) if m.contains("after 6 bytes"))
        );
        let flood = vec![b'x'; MAX_NOISE + MAGIC.len()];
        assert!(matches!(find_magic(&flood, false), Err(Error::Protocol(_))));
        assert_eq!(find_magic(&flood[..MAX_NOISE], false).unwrap(), None);
    }
}
