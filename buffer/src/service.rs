//! The writer thread and the byte-bounded ingest channel in front of it.
//!
//! Producers (input tasks, or threads through [`Ingest::blocking_send`]) hand batches of
//! records to one writer thread that owns the [`Log`]. The channel is bounded in *bytes*
//! (a semaphore of `channel_bytes` permits), so back-pressure reaches the producers: an input
//! stops reading (TCP), stops acking (MQTT) or blocks (serial) while the writer is busy or the
//! `block` policy holds. A producer that passes a completion sender learns when its records are
//! durable — inputs acknowledge their sources only then.

use crate::dedupe::Origin;
use crate::log::{Appended, Log, LogError, Now, Shared};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, oneshot};

/// A record handed to the writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordIn {
    /// Ingest time, unix ms.
    pub ts_ms: i64,
    /// Input index.
    pub source: u16,
    /// Topic / node id / empty.
    pub key: Vec<u8>,
    /// Raw bytes.
    pub payload: Vec<u8>,
    /// The producer's identity of the record, when it gave one (a resend is then recognised
    /// and not stored again).
    pub origin: Option<Origin>,
}

/// What became of a batch handed to the writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every accepted record is durable (or was dropped by policy, counted and gap-marked);
    /// `rejected` records were refused (too large).
    Durable {
        /// Seq of the last accepted record (0 if none).
        last_seq: u64,
        /// Records refused.
        rejected: u32,
    },
}

struct Msg {
    recs: Vec<RecordIn>,
    permits: u32,
    done: Option<oneshot::Sender<Outcome>>,
}

/// The writer has stopped.
#[derive(Debug, thiserror::Error)]
#[error("the buffer writer has stopped")]
pub struct Closed;

/// Producer handle; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    tx: mpsc::Sender<Msg>,
    budget: Arc<Semaphore>,
    max_permits: u32,
    rt: Option<tokio::runtime::Handle>,
}

fn cost(recs: &[RecordIn]) -> usize {
    recs.iter()
        .map(|r| r.key.len() + r.payload.len() + 48)
        .sum()
}

impl Ingest {
    /// Sends a batch; waits while the channel holds `channel_bytes`.
    pub async fn send(
        &self,
        recs: Vec<RecordIn>,
        done: Option<oneshot::Sender<Outcome>>,
    ) -> Result<(), Closed> {
        let permits = (cost(&recs) as u32).clamp(1, self.max_permits);
        let p = self
            .budget
            .acquire_many(permits)
            .await
            .map_err(|_| Closed)?;
        p.forget();
        self.tx
            .send(Msg {
                recs,
                permits,
                done,
            })
            .map_err(|_| {
                self.budget.add_permits(permits as usize);
                Closed
            })
    }

    /// Sends from a plain thread (serial input); needs the runtime handle given at spawn.
    pub fn blocking_send(
        &self,
        recs: Vec<RecordIn>,
        done: Option<oneshot::Sender<Outcome>>,
    ) -> Result<(), Closed> {
        match &self.rt {
            Some(h) => h.block_on(self.send(recs, done)),
            None => {
                // No runtime: a private single-threaded one for the semaphore wait.
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .map_err(|_| Closed)?
                    .block_on(self.send(recs, done))
            }
        }
    }

    /// Sends and waits until the records are durable.
    pub async fn send_durable(&self, recs: Vec<RecordIn>) -> Result<Outcome, Closed> {
        let (tx, rx) = oneshot::channel();
        self.send(recs, Some(tx)).await?;
        rx.await.map_err(|_| Closed)
    }
}

/// The running writer thread.
pub struct Writer {
    join: JoinHandle<Result<(), LogError>>,
    shared: Arc<Shared>,
}

impl Writer {
    /// Starts the writer thread. `rt` lets threads use [`Ingest::blocking_send`].
    pub fn spawn(
        log: Log,
        channel_bytes: usize,
        rt: Option<tokio::runtime::Handle>,
    ) -> std::io::Result<(Ingest, Writer)> {
        let (tx, rx) = mpsc::channel();
        let channel_bytes = channel_bytes.clamp(64 << 10, Semaphore::MAX_PERMITS);
        let budget = Arc::new(Semaphore::new(channel_bytes));
        let shared = log.shared().clone();
        let b2 = budget.clone();
        let join = std::thread::Builder::new()
            .name("buffer-writer".into())
            .spawn(move || writer_loop(log, rx, b2))?;
        Ok((
            Ingest {
                tx,
                budget,
                max_permits: channel_bytes as u32,
                rt,
            },
            Writer { join, shared },
        ))
    }

    /// The log's shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Waits for the writer to finish (after every [`Ingest`] was dropped).
    pub fn join(self) -> Result<(), LogError> {
        self.join.join().unwrap_or(Ok(()))
    }
}

fn writer_loop(
    mut log: Log,
    rx: mpsc::Receiver<Msg>,
    budget: Arc<Semaphore>,
) -> Result<(), LogError> {
    let sh = log.shared().clone();
    let mut pending: VecDeque<(u64, oneshot::Sender<Outcome>, u32)> = VecDeque::new();
    let mut held: Option<(Msg, usize, u64, u32)> = None;
    let mut last_err: Option<Instant> = None;
    let mut closed = false;
    loop {
        // Continue a batch held back by the `block` policy.
        if let Some((msg, idx, last, rej)) = held.take() {
            held = feed(&mut log, msg, idx, last, rej, &mut pending, &budget);
            if held.is_some() {
                sh.wait_change(Duration::from_millis(50));
            }
        } else if !closed {
            let now = Now::system();
            let timeout = log.next_deadline(now).saturating_duration_since(now.mono);
            match rx.recv_timeout(timeout) {
                Ok(msg) => {
                    held = feed(&mut log, msg, 0, 0, 0, &mut pending, &budget);
                    // Drain what else is queued while the batch has room.
                    while held.is_none() && log.batch_len() < log.config().batch_bytes {
                        match rx.try_recv() {
                            Ok(m) => held = feed(&mut log, m, 0, 0, 0, &mut pending, &budget),
                            Err(_) => break,
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => closed = true,
            }
        }
        if let Err(e) = log.tick(Now::system()) {
            // Logged at most once a second; the log retries by itself.
            if last_err.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                tracing::warn!("buffer: {e}");
                last_err = Some(Instant::now());
            }
        }
        let d = sh.durable();
        while pending.front().is_some_and(|p| p.0 <= d) {
            if let Some((last_seq, tx, rejected)) = pending.pop_front() {
                let _ = tx.send(Outcome::Durable { last_seq, rejected });
            }
        }
        if closed && held.is_none() {
            break;
        }
    }
    let r = log.close(Now::system());
    for (last_seq, tx, rejected) in pending.drain(..) {
        if sh.durable() >= last_seq {
            let _ = tx.send(Outcome::Durable { last_seq, rejected });
        }
    }
    r
}

/// Appends `msg.recs[idx..]`; returns the message back if the log stopped accepting.
fn feed(
    log: &mut Log,
    msg: Msg,
    mut idx: usize,
    mut last: u64,
    mut rejected: u32,
    pending: &mut VecDeque<(u64, oneshot::Sender<Outcome>, u32)>,
    budget: &Semaphore,
) -> Option<(Msg, usize, u64, u32)> {
    let sh = log.shared().clone();
    while idx < msg.recs.len() {
        let r = &msg.recs[idx];
        match log.append_with(
            r.ts_ms,
            r.source,
            &r.key,
            &r.payload,
            r.origin,
            Now::system(),
        ) {
            // A resend's acknowledgement waits for its original to be durable.
            Ok(Appended::Stored(seq) | Appended::Resend(seq)) => last = last.max(seq),
            Err(LogError::Blocked(_)) => return Some((msg, idx, last, rejected)),
            Err(_) => {
                rejected += 1;
                sh.metrics.input_invalid.fetch_add(1, Relaxed);
            }
        }
        idx += 1;
    }
    budget.add_permits(msg.permits as usize);
    if let Some(done) = msg.done {
        if last == 0 {
            let _ = done.send(Outcome::Durable {
                last_seq: 0,
                rejected,
            });
        } else {
            pending.push_back((last, done, rejected));
        }
    }
    None
}

/// Resolves once `stop` is true (or its sender is gone).
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
