//! The database worker: one OS thread owns the [`Store`] and runs jobs sent from async handlers.
//!
//! SQLite work (and its fsyncs) therefore never blocks a runtime thread, writes are serialised
//! without lock contention, and the queue in front of the store is bounded
//! ([`QUEUE_DEPTH`]): when it is full, handlers wait, so back-pressure reaches the HTTP layer.
//! After each job the worker hands the computers whose desired state changed to the [`Hub`],
//! which wakes their long polls.

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use crate::error::{ApiError, MasterError};
use crate::hub::Hub;
use crate::store::Store;

/// Jobs waiting for the store at most.
pub const QUEUE_DEPTH: usize = 256;

/// How often the worker runs [`Store::maintain`] between jobs (and once when idle that long).
pub const MAINTAIN_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

type Job = Box<dyn FnOnce(&mut Store) + Send>;

/// Handle to the database worker; cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    jobs: mpsc::Sender<Job>,
}

/// The worker thread; [`Worker::close`] stops it and closes the database.
#[derive(Debug)]
pub struct Worker {
    stop: Option<Db>,
    thread: Option<JoinHandle<()>>,
    done: Option<oneshot::Receiver<()>>,
}

/// Start the worker thread owning `store`.
pub fn start(store: Store, hub: Arc<Hub>) -> Result<(Db, Worker), MasterError> {
    let (tx, mut rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
    let (done_tx, done_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("master-db".into())
        .spawn(move || {
            let mut store = store;
            let mut maintained = std::time::Instant::now();
            while let Some(job) = rx.blocking_recv() {
                // A panicking job rolls its transaction back (the Transaction drops) and its
                // caller gets an internal error; the worker keeps serving the others.
                let run = std::panic::AssertUnwindSafe(|| job(&mut store));
                if std::panic::catch_unwind(run).is_err() {
                    tracing::error!("a database job panicked; its transaction was rolled back");
                }
                for (computer, etag) in store.take_touched() {
                    hub.notify(&computer, etag);
                }
                if maintained.elapsed() >= MAINTAIN_EVERY {
                    store.maintain();
                    maintained = std::time::Instant::now();
                }
            }
            drop(store); // closes the connection (checkpoints the WAL) before signalling
            let _ = done_tx.send(());
        })
        .map_err(MasterError::Worker)?;
    let db = Db { jobs: tx };
    Ok((
        db.clone(),
        Worker {
            stop: Some(db),
            thread: Some(thread),
            done: Some(done_rx),
        },
    ))
}

/// Wrap `f` as a job whose result arrives on the returned receiver.
fn job<T, E, F>(f: F) -> (Job, oneshot::Receiver<Result<T, ApiError>>)
where
    T: Send + 'static,
    E: Into<ApiError>,
    F: FnOnce(&mut Store) -> Result<T, E> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move |store| {
        let _ = tx.send(f(store).map_err(Into::into));
    });
    (job, rx)
}

fn stopped<E>(_: E) -> ApiError {
    ApiError::Internal("the database worker has stopped".into())
}

fn dropped<E>(_: E) -> ApiError {
    ApiError::Internal("the database worker dropped a job".into())
}

impl Db {
    /// Run `f` on the store and return its result (a store error, or an API error of a
    /// check made in the same job, e.g. an authorization that must see the same state).
    pub async fn call<T, E, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        E: Into<ApiError>,
        F: FnOnce(&mut Store) -> Result<T, E> + Send + 'static,
    {
        let (job, rx) = job(f);
        self.jobs.send(job).await.map_err(stopped)?;
        rx.await.map_err(dropped)?
    }

    /// The same as [`Db::call`], from a thread outside the runtime (e.g. a standalone node
    /// thread); must not be called from an async context.
    pub fn call_blocking<T, E, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        E: Into<ApiError>,
        F: FnOnce(&mut Store) -> Result<T, E> + Send + 'static,
    {
        let (job, rx) = job(f);
        self.jobs.blocking_send(job).map_err(stopped)?;
        rx.blocking_recv().map_err(dropped)?
    }
}

impl Worker {
    /// Stop the worker once every handle is dropped and queued jobs ran, then wait until the
    /// database is closed. Handles still alive elsewhere keep it running: drop the router first.
    pub async fn close(mut self) {
        self.stop = None;
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}
