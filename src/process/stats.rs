//! [`ProcessPoolExecutor::stats`]: the pool's counters, its workers'
//! stages and its launcher's hosts, as one [`PoolStats`].

use super::link::Stage;
use super::shared::LOCALHOST;
use super::ProcessPoolExecutor;
use crate::stats::{HostStats, PoolStats};

impl ProcessPoolExecutor {
    /// A snapshot of the pool: workers, tasks, restarts and hosts; see
    /// [`PoolStats`]. Cheap: the pool's counters and one look at its
    /// workers under its lock.
    ///
    /// `hosts` is what the launcher reports
    /// ([`Launcher::hosts`](crate::launch::Launcher::hosts): `Ssh` lists
    /// its hosts); a launcher that lists none (`Local`, the default) is one
    /// entry named `localhost` holding every worker, down while launches
    /// fail, with the last launch error or worker death as its error.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{task, ProcessPoolExecutor};
    ///
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// fn main() -> Result<(), concurrent_futures::Error> {
    ///     concurrent_futures::init();
    ///     let pool = ProcessPoolExecutor::new(2)?;
    ///     for x in 0..5 {
    ///         assert_eq!(pool.submit(task!(square), x).result()?, x * x);
    ///     }
    ///     let s = pool.stats();
    ///     assert_eq!((s.completed, s.failed, s.queued, s.running), (5, 0, 0, 0));
    ///     assert_eq!(s.hosts.len(), 1);
    ///     assert_eq!(s.hosts[0].name, "localhost");
    ///     assert!(s.hosts[0].up && s.workers >= 1);
    ///     Ok(())
    /// }
    /// ```
    pub fn stats(&self) -> PoolStats {
        let shared = self.shared();
        let mut s = PoolStats::default();
        let (launch_failed, last_error) = {
            let st = shared.state.lock();
            s.workers = st.workers.len() + st.starting;
            s.starting = st.starting;
            for w in &st.workers {
                let link = w.link.lock();
                match link.stage {
                    Stage::Starting | Stage::Initializing => s.starting += 1,
                    Stage::Ready if link.held.is_empty() => s.idle += 1,
                    _ => {}
                }
            }
            (st.launch_failed, st.last_error.clone())
        };
        shared.counters.fill(&mut s);
        s.hosts = shared.config.launcher.hosts();
        if s.hosts.is_empty() {
            s.hosts = vec![HostStats::new(
                LOCALHOST,
                s.workers,
                !launch_failed || s.workers > 0,
                last_error,
            )];
        }
        s
    }
}
