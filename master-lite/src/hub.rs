//! Wake-ups for long polls, and the nodes' last contact.
//!
//! One `tokio::sync::watch` channel per computer that has a poll waiting; the database worker
//! publishes the new etag of every computer a committed transaction changed, which wakes that
//! computer's polls at once (no polling interval on the master side). Channels are created by
//! the first waiting poll and dropped when a change finds nobody waiting, so their number stays
//! bounded by the number of known computers with a connected node.
//!
//! The number of polls held at once is bounded three ways, so that no caller can starve the
//! others: per computer ([`MAX_POLLS_PER_COMPUTER`]: its node holds one, a few more cover a
//! restart's overlap), per caller identity ([`MAX_POLLS_PER_IDENTITY`]: an admin or the local
//! operator may watch many computers, not hold thousands of polls) and in all
//! ([`MAX_WAITING_POLLS`]: memory). Past a bound, a poll is answered at once, and the node
//! simply polls again.
//!
//! `last_seen` of a desired-state read is kept here, in memory, rather than written to the
//! database: a read must not cost an fsync. Write calls of the node record it durably.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use slapos_proto::identity::Identity;

use slapos_proto::ComputerId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Long polls held at once, at most.
pub const MAX_WAITING_POLLS: usize = 16_384;

/// Long polls held at once on one computer's desired state.
pub const MAX_POLLS_PER_COMPUTER: usize = 8;

/// Long polls held at once by one caller identity (over all computers it may read).
pub const MAX_POLLS_PER_IDENTITY: usize = 64;

/// Shared between the database worker and the handlers.
#[derive(Debug)]
pub struct Hub {
    computers: Mutex<HashMap<ComputerId, watch::Sender<u64>>>,
    seen: Mutex<HashMap<ComputerId, u64>>,
    shutdown: watch::Sender<bool>,
    polls: Arc<Semaphore>,
    held: Arc<Mutex<Held>>,
}

/// Polls held per computer and per identity, and how many of them wait outside hyper.
#[derive(Debug, Default)]
struct Held {
    computers: HashMap<ComputerId, usize>,
    identities: HashMap<String, usize>,
    parked: usize,
}

/// One held long poll; its place is given back when dropped.
#[derive(Debug)]
pub struct PollSlot {
    _global: OwnedSemaphorePermit,
    held: Arc<Mutex<Held>>,
    computer: ComputerId,
    identity: String,
    parked: bool,
}

impl PollSlot {
    /// The poll waits outside hyper (`crate::server`'s parking): counted apart until dropped.
    pub fn parked(mut self) -> Self {
        if !self.parked {
            lock(&self.held).parked += 1;
            self.parked = true;
        }
        self
    }
}

impl Drop for PollSlot {
    fn drop(&mut self) {
        let mut h = lock(&self.held);
        if self.parked {
            h.parked = h.parked.saturating_sub(1);
        }
        release(&mut h.computers, &self.computer);
        release(&mut h.identities, &self.identity);
    }
}

/// Count one holder of `k` out; the entry goes with its last holder.
fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, k: &K) {
    if let Some(n) = map.get_mut(k) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(k);
        }
    }
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            computers: Mutex::default(),
            seen: Mutex::default(),
            shutdown: watch::Sender::new(false),
            polls: Arc::new(Semaphore::new(MAX_WAITING_POLLS)),
            held: Arc::default(),
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

    /// Wake every held poll (they re-read their desired state): after the connection that
    /// brings other replicas' changes was down, when some may have been missed.
    pub fn wake_all(&self) {
        let map = lock(&self.computers);
        for tx in map.values() {
            tx.send_modify(|_| {});
        }
    }

    /// Drop the channel of `c` if no poll waits on it (after a poll for an unknown computer).
    pub fn forget_unused(&self, c: &ComputerId) {
        let mut map = lock(&self.computers);
        if map.get(c).is_some_and(|tx| tx.receiver_count() == 0) {
            map.remove(c);
        }
    }

    /// Long polls held now, over all computers (metrics).
    pub fn held_polls(&self) -> usize {
        MAX_WAITING_POLLS.saturating_sub(self.polls.available_permits())
    }

    /// Of [`Hub::held_polls`], those waiting outside hyper (metrics).
    pub fn parked_polls(&self) -> usize {
        lock(&self.held).parked
    }

    /// How many computers have a channel (tests of the bound).
    pub fn channels(&self) -> usize {
        lock(&self.computers).len()
    }

    /// A slot for one poll of `c`'s desired state held by `who`, or `None` when `c`, `who` or
    /// the master already hold their most (see the module doc). A computer's own node polls as
    /// that computer, so the identity bound applies to the other callers only.
    pub fn poll_slot(&self, c: &ComputerId, who: &Identity) -> Option<PollSlot> {
        let identity = match who {
            Identity::Computer(_) => String::new(),
            other => other.to_string(),
        };
        let mut h = lock(&self.held);
        let on_computer = h.computers.get(c).copied().unwrap_or(0);
        let by_identity = h.identities.get(&identity).copied().unwrap_or(0);
        if on_computer >= MAX_POLLS_PER_COMPUTER
            || (!identity.is_empty() && by_identity >= MAX_POLLS_PER_IDENTITY)
        {
            return None;
        }
        let global = self.polls.clone().try_acquire_owned().ok()?;
        *h.computers.entry(c.clone()).or_default() += 1;
        *h.identities.entry(identity.clone()).or_default() += 1;
        Some(PollSlot {
            _global: global,
            held: self.held.clone(),
            computer: c.clone(),
            identity,
            parked: false,
        })
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
    fn poll_slots_are_bounded_per_computer_identity_and_in_all() {
        let hub = Hub::default();
        let c = |i: usize| ComputerId::parse(format!("COMP-{i}")).unwrap();
        let node = |i: usize| Identity::Computer(c(i));
        // A computer holding its most does not starve another one.
        let own: Vec<_> = (0..MAX_POLLS_PER_COMPUTER)
            .map(|_| hub.poll_slot(&c(0), &node(0)).unwrap())
            .collect();
        assert!(hub.poll_slot(&c(0), &node(0)).is_none());
        assert!(hub.poll_slot(&c(0), &Identity::Local).is_none());
        assert!(hub.poll_slot(&c(1), &node(1)).is_some());
        drop(own);
        assert!(hub.poll_slot(&c(0), &node(0)).is_some());
        // One identity watching many computers is bounded too.
        let admin = Identity::Local;
        let watched: Vec<_> = (0..MAX_POLLS_PER_IDENTITY)
            .map(|i| hub.poll_slot(&c(100 + i), &admin).unwrap())
            .collect();
        assert!(hub.poll_slot(&c(99), &admin).is_none());
        assert!(hub.poll_slot(&c(99), &node(99)).is_some());
        drop(watched);
        assert_eq!(
            lock(&hub.held).identities.len(),
            0,
            "entries go with their holders"
        );
        // And all polls together.
        let all: Vec<_> = (0..MAX_WAITING_POLLS)
            .map(|i| hub.poll_slot(&c(i), &node(i)).unwrap())
            .collect();
        assert!(
            hub.poll_slot(&c(MAX_WAITING_POLLS), &node(MAX_WAITING_POLLS))
                .is_none()
        );
        drop(all);
        assert!(hub.poll_slot(&c(0), &node(0)).is_some());
    }
}
