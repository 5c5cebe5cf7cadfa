//! The keepalive of every host link in this process, on one thread: it
//! pings each link every interval, loses a link that has been silent for
//! too long, and closes a link that has had no worker for its linger time
//! ([`Link::tend`]). One thread for all links, apart from each link's
//! driver: a driver blocked writing to a frozen link must not stop the
//! silence check that ends the link and so frees it. The thread starts
//! with the first link and ends with the last.

use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::link::Link;
use crate::Error;

/// The links kept, and whether the thread runs.
struct Keeper {
    links: Vec<Weak<Link>>,
    running: bool,
    /// Something changed since the thread last looked.
    poked: bool,
}

static KEEPER: Mutex<Keeper> = Mutex::new(Keeper {
    links: Vec::new(),
    running: false,
    poked: false,
});
static POKE: Condvar = Condvar::new();

/// The longest the thread sleeps without a reason (a link whose pings are
/// a day apart still has its idle close seen).
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// Keeps `link` alive from now on, starting the thread if it is not
/// running.
///
/// # Errors
///
/// [`Error::Io`] if the thread cannot start.
pub(super) fn keep(link: &Arc<Link>) -> Result<(), Error> {
    let mut keeper = KEEPER.lock();
    keeper.links.push(Arc::downgrade(link));
    keeper.poked = true;
    if !keeper.running {
        thread::Builder::new()
            .name("concurrent-futures-keepalive".to_string())
            .stack_size(256 * 1024)
            .spawn(run)
            .map_err(|e| Error::Io(format!("cannot start the keepalive thread: {e}")))?;
        keeper.running = true;
    }
    POKE.notify_one();
    Ok(())
}

/// A link's times changed (it became idle): look again now.
pub(super) fn poke() {
    KEEPER.lock().poked = true;
    POKE.notify_one();
}

fn run() {
    let mut keeper = KEEPER.lock();
    loop {
        keeper.poked = false;
        let links: Vec<Arc<Link>> = keeper.links.iter().filter_map(Weak::upgrade).collect();
        drop(keeper);
        let mut wake = Instant::now() + MAX_SLEEP;
        let mut ended = Vec::new();
        for link in &links {
            match link.tend() {
                Some(t) => wake = wake.min(t),
                None => ended.push(Arc::as_ptr(link)),
            }
        }
        drop(links);
        keeper = KEEPER.lock();
        keeper
            .links
            .retain(|l| l.strong_count() > 0 && !ended.contains(&l.as_ptr()));
        if keeper.links.is_empty() {
            keeper.running = false;
            return;
        }
        if !keeper.poked {
            POKE.wait_until(&mut keeper, wake);
        }
    }
}
