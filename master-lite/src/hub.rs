//! Wake-ups for long polls, and the nodes' last contact.
//!
//! One `tokio::sync::watch` channel per computer that has a poll waiting; the database worker
//! publishes the new etag of every computer a committed transaction changed, which wakes that
//! computer's polls at once (no polling interval on the master side). Channels are created by
//! the first waiting poll and dropped when a change finds nobody waiting, so their number stays
//! bounded by the number of known computers with a connected node.
//!
//! The number of polls held at once is bounded ([`MAX_WAITING_POLLS`]); past it, a poll is
//! answered at once, and the node simply polls again.
//!
//! `last_seen` of a desired-state read is kept here, in memory, rather than written to the
//! database: a read must not cost an fsync. Write calls of the node record it durably.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use slapos_proto::ComputerId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Long polls held at once, at most.
pub const MAX_WAITING_POLLS: usize = 4096;

/// Shared between the database worker and the handlers.
#[derive(Debug)]
pub struct Hub {
    computers: Mutex<HashMap<ComputerId, watch::Sender<u64>>>,
    seen: Mutex<HashMap<ComputerId, u64>>,
    shutdown: watch::Sender<bool>,
    polls: Arc<Semaphore>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            computers: Mutex::default(),
            seen: Mutex::default(),
            shutdown: watch::Sender::new(false),
            polls: Arc::new(Semaphore::new(MAX_WAITING_POLLS)),
        }
    }
}

impl Hub {
    /// Subscribe to changes of `c`. The receiver's current value counts as seen.
    pub fn subscribe(&self, c: &ComputerId) -> watch::Receiver<u64> {
        let mut map = lock(&self.computers);
        map.entry(c.clone())
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe()
    }

    /// The desired state of `c` changed to `etag`: wake its polls.
    pub fn notify(&self, c: &ComputerId, etag: u64) {
        let mut map = lock(&self.computers);
        if let Some(tx) = map.get(c) {
            if tx.receiver_count() == 0 {
                map.remove(c);
            } else {
                tx.send_replace(etag);
            }
        }
    }

    /// Drop the channel of `c` if no poll waits on it (after a poll for an unknown computer).
    pub fn forget_unused(&self, c: &ComputerId) {
        let mut map = lock(&self.computers);
        if map.get(c).is_some_and(|tx| tx.receiver_count() == 0) {
            map.remove(c);
        }
    }

    /// How many computers have a channel (tests of the bound).
    pub fn channels(&self) -> usize {
        lock(&self.computers).len()
    }

    /// A slot for one waiting poll, or `None` when [`MAX_WAITING_POLLS`] are held.
    pub fn poll_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.polls.clone().try_acquire_owned().ok()
    }

    /// Record a read of `c`'s desired state at `now_ms`.
    pub fn saw(&self, c: &ComputerId, now_ms: u64) {
        lock(&self.seen).insert(c.clone(), now_ms);
    }

    /// The last desired-state read of `c`, if any since the master started.
    pub fn last_seen(&self, c: &ComputerId) -> Option<u64> {
        lock(&self.seen).get(c).copied()
    }

    /// A receiver that turns `true` when the server shuts down (long polls end early).
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Ask every waiting poll to answer now.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain maps behind: still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notify_wakes_subscribers_and_forgets_idle_channels() {
        let hub = Hub::default();
        let c = ComputerId::parse("COMP-1").unwrap();
        let mut rx = hub.subscribe(&c);
        hub.notify(&c, 7);
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), 7);
        drop(rx);
        hub.notify(&c, 8); // nobody waits: the channel goes
        assert_eq!(hub.channels(), 0);
        // A change for a computer nobody polls creates nothing.
        hub.notify(&ComputerId::parse("COMP-2").unwrap(), 1);
        assert_eq!(hub.channels(), 0);
        let rx = hub.subscribe(&c);
        drop(rx);
        hub.forget_unused(&c);
        assert_eq!(hub.channels(), 0);
    }

    #[test]
    fn poll_slots_are_bounded() {
        let hub = Hub::default();
        let held: Vec<_> = (0..MAX_WAITING_POLLS)
            .map(|_| hub.poll_slot().unwrap())
            .collect();
        assert!(hub.poll_slot().is_none());
        drop(held);
        assert!(hub.poll_slot().is_some());
    }
}
