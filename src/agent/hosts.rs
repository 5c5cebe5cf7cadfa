//! A launcher's links, one per host (or node), each opened when the
//! host's first worker starts and shared by the workers that follow; a
//! link that ended is replaced by the next start.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::AgentLink;
use crate::launch::Spawned;
use crate::Error;

/// One host's place: its live link, if any, under the lock its opening
/// holds (so a host is connected once however many starts wait), and the
/// failed openings so far with the last one's error.
#[derive(Debug, Default)]
struct Place {
    failures: AtomicU64,
    link: Mutex<(Option<Arc<AgentLink>>, Option<Error>)>,
}

/// The links of a launcher, by host index.
#[derive(Debug, Default)]
pub(crate) struct HostLinks {
    places: Mutex<HashMap<usize, Arc<Place>>>,
}

impl HostLinks {
    /// Host `i`'s live link, or the one `open` makes (while others that
    /// want host `i` wait for it). A start that waited while an opening
    /// failed gets that failure rather than trying again itself: a host
    /// that does not answer costs one wait, not one per worker.
    ///
    /// # Errors
    ///
    /// Whatever `open` fails with.
    fn get_or_open(
        &self,
        i: usize,
        open: &dyn Fn() -> Result<AgentLink, Error>,
    ) -> Result<Arc<AgentLink>, Error> {
        let place = Arc::clone(self.places.lock().entry(i).or_default());
        let seen = place.failures.load(Ordering::Acquire);
        let mut held = place.link.lock();
        if place.failures.load(Ordering::Acquire) != seen {
            if let Some(e) = &held.1 {
                return Err(e.clone());
            }
        }
        if let Some(link) = held.0.as_ref() {
            if link.ended().is_none() {
                return Ok(Arc::clone(link));
            }
        }
        held.0 = None;
        match open() {
            Ok(link) => {
                let link = Arc::new(link);
                *held = (Some(Arc::clone(&link)), None);
                Ok(link)
            }
            Err(e) => {
                held.1 = Some(e.clone());
                place.failures.fetch_add(1, Ordering::AcqRel);
                Err(e)
            }
        }
    }

    /// Starts a worker on host `i` through its link, opened with `open`
    /// if need be. `release` frees the launcher's slot: when the pool
    /// drops the worker's handle, or now if no worker could be started. A
    /// link may close (idle) between its lookup and the start: then one
    /// more look opens another.
    ///
    /// # Errors
    ///
    /// Why the link could not be opened, or was gone.
    pub(crate) fn start(
        &self,
        i: usize,
        open: impl Fn() -> Result<AgentLink, Error>,
        args: &[Vec<u8>],
        env: &[(Vec<u8>, Vec<u8>)],
        release: Box<dyn FnOnce() + Send>,
    ) -> Result<Spawned, Error> {
        let mut release = Some(release);
        let mut tries = 0;
        let failed = loop {
            tries += 1;
            let link = match self.get_or_open(i, &open) {
                Ok(link) => link,
                Err(e) => break e,
            };
            match link.spawn(args, env, &mut release) {
                Ok(spawned) => return Ok(spawned),
                Err(_) if tries < 2 && link.ended().is_some() => {}
                Err(e) => break e,
            }
        };
        if let Some(release) = release.take() {
            release();
        }
        Err(failed)
    }
}
