//! A launcher's links, one per host (or node), each opened when the
//! host's first worker starts and shared by the workers that follow; a
//! link that ended is replaced by the next start.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::AgentLink;
use crate::Error;

/// One host's place: its live link, if any, under the lock its opening
/// holds (so a host is connected once however many starts wait).
type Place = Arc<Mutex<Option<Arc<AgentLink>>>>;

/// The links of a launcher, by host index.
#[derive(Debug, Default)]
pub(crate) struct HostLinks {
    places: Mutex<HashMap<usize, Place>>,
}

impl HostLinks {
    /// Host `i`'s live link, or the one `open` makes (while others that
    /// want host `i` wait for it).
    ///
    /// # Errors
    ///
    /// Whatever `open` fails with.
    pub(crate) fn get_or_open(
        &self,
        i: usize,
        open: impl FnOnce() -> Result<AgentLink, Error>,
    ) -> Result<Arc<AgentLink>, Error> {
        let place = Arc::clone(self.places.lock().entry(i).or_default());
        let mut place = place.lock();
        if let Some(link) = place.as_ref() {
            if link.ended().is_none() {
                return Ok(Arc::clone(link));
            }
        }
        *place = None;
        let link = Arc::new(open()?);
        *place = Some(Arc::clone(&link));
        Ok(link)
    }
}
