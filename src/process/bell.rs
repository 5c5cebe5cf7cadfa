//! A bell: how the pool wakes a host link's driver thread, which serves
//! all of that host's workers and so cannot wait on any one worker's
//! condvar or on the pool's. Whatever wakes a worker's writer (its stage
//! changed, room opened, recalls to send, tasks queued) also rings the
//! bell of the link it runs on; the driver then looks at every worker it
//! drives.

use std::time::Instant;

use crate::sync::{Condvar, Mutex};

/// Rung any number of times; a wait returns once after one or more rings.
pub(crate) struct Bell {
    rung: Mutex<bool>,
    cond: Condvar,
}

impl Default for Bell {
    fn default() -> Self {
        Bell {
            rung: Mutex::new(false),
            cond: Condvar::new(),
        }
    }
}

impl Bell {
    /// Wakes the waiter, or the next wait if nobody waits now.
    pub(crate) fn ring(&self) {
        let mut rung = self.rung.lock();
        if !*rung {
            *rung = true;
            self.cond.notify_one();
        }
    }

    /// Waits until the bell rang (since the last wait returned) or
    /// `until` passed (`None`: no deadline), and silences it.
    pub(crate) fn wait(&self, until: Option<Instant>) {
        let mut rung = self.rung.lock();
        while !*rung {
            match until {
                Some(t) => {
                    if self.cond.wait_until(&mut rung, t).timed_out() {
                        break;
                    }
                }
                None => self.cond.wait(&mut rung),
            }
        }
        *rung = false;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_ring_before_the_wait_is_not_lost() {
        let bell = Bell::default();
        bell.ring();
        bell.ring();
        // Returns at once, without a deadline.
        bell.wait(None);
        let began = Instant::now();
        bell.wait(Some(began + Duration::from_millis(30)));
        assert!(began.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn a_ring_wakes_a_waiter() {
        let bell = Arc::new(Bell::default());
        let ringer = Arc::clone(&bell);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            ringer.ring();
        });
        let began = Instant::now();
        bell.wait(Some(began + Duration::from_secs(30)));
        assert!(began.elapsed() < Duration::from_secs(20));
        t.join().unwrap();
    }
}
