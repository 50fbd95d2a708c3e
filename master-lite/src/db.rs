//! The database workers: OS threads that each own a [`Store`] and run jobs sent from async
//! handlers.
//!
//! Database work (and its fsyncs) therefore never blocks a runtime thread, and the queue in
//! front of the stores is bounded ([`QUEUE_DEPTH`]): when it is full, handlers wait, so
//! back-pressure reaches the HTTP layer. After each job a worker hands the computers whose
//! desired state changed to the [`Hub`], which wakes their long polls.
//!
//! On SQLite there is one worker (one writer: writes are serialised without lock contention).
//! On PostgreSQL there are several ([`start_pool`]), each with its own connection, taking jobs
//! from the one queue; their transactions are serializable, and a job whose transaction lost a
//! serialization race (`40001`, `40P01`) is run again, up to [`MAX_RETRIES`] times, so no
//! caller sees the race. A job made of several store calls is re-run whole: its store calls
//! must be safe to repeat (every write the HTTP layer makes in a job is its last store call).
//! [`listen`] feeds the hub with the changes other replicas commit (`LISTEN/NOTIFY`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::error::{ApiError, MasterError};
use crate::hub::Hub;
use crate::store::Store;

/// Jobs waiting for the store at most.
pub const QUEUE_DEPTH: usize = 256;

/// A job whose transaction lost a serialization race runs again at most this many times.
pub const MAX_RETRIES: u32 = 40;

/// Pause before retry `n` (1-based): exponential from 1 ms, capped at 64 ms, with jitter so
/// the racers part.
fn backoff(n: u32) -> Duration {
    let cap_ms = 1u64 << n.min(6);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    // The low bits of the clock are as good as a random number here.
    Duration::from_micros(cap_ms * 500 + (nanos ^ (nanos >> 17)) % (cap_ms * 500 + 1))
}

/// How often the worker runs [`Store::maintain`] between jobs (and once when idle that long).
pub const MAINTAIN_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

type Job = Box<dyn FnOnce(&mut Store) + Send>;
type Queue = Arc<Mutex<mpsc::Receiver<Job>>>;

/// Handle to the database worker; cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    jobs: mpsc::Sender<Job>,
}

/// The worker threads; [`Worker::close`] stops them and closes the database.
#[derive(Debug)]
pub struct Worker {
    stop: Option<Db>,
    threads: Vec<JoinHandle<()>>,
    done: Vec<oneshot::Receiver<()>>,
    listener: Option<Listener>,
}

/// Start the worker thread owning `store`.
pub fn start(store: Store, hub: Arc<Hub>) -> Result<(Db, Worker), MasterError> {
    start_pool(vec![store], hub)
}

/// Start one worker thread per store, all taking jobs from one queue (PostgreSQL: one
/// connection each).
pub fn start_pool(stores: Vec<Store>, hub: Arc<Hub>) -> Result<(Db, Worker), MasterError> {
    let (tx, rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
    let rx: Queue = Arc::new(Mutex::new(rx));
    let mut threads = Vec::new();
    let mut done = Vec::new();
    for (i, store) in stores.into_iter().enumerate() {
        let (done_tx, done_rx) = oneshot::channel();
        let (rx, hub) = (rx.clone(), hub.clone());
        let thread = std::thread::Builder::new()
            .name(format!("master-db-{i}"))
            .spawn(move || run(store, &rx, &hub, done_tx))
            .map_err(MasterError::Worker)?;
        threads.push(thread);
        done.push(done_rx);
    }
    let db = Db { jobs: tx };
    Ok((
        db.clone(),
        Worker {
            stop: Some(db),
            threads,
            done,
            listener: None,
        },
    ))
}

/// One worker: run jobs until the queue closes.
fn run(mut store: Store, rx: &Queue, hub: &Hub, done: oneshot::Sender<()>) {
    let mut maintained = std::time::Instant::now();
    loop {
        // One worker waits on the queue at a time; the others wait for the lock.
        let job = match rx.lock() {
            Ok(mut q) => q.blocking_recv(),
            Err(poisoned) => poisoned.into_inner().blocking_recv(),
        };
        let Some(job) = job else { break };
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
    let _ = done.send(());
}

/// The thread listening for changes committed by other replicas.
#[derive(Debug)]
struct Listener {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// How long the listener waits between reconnection attempts.
const RELISTEN_EVERY: Duration = Duration::from_millis(500);

/// Listen on PostgreSQL for the changes every replica announces ([`crate::store::NOTIFY_CHANNEL`])
/// and wake the matching polls of `hub`. One direct connection (a transaction-mode pooler
/// does not carry `LISTEN`). After a (re)connection every held poll is woken once, so that
/// nothing announced while the connection was down is missed: the polls re-read the database.
fn listen(url: String, hub: Arc<Hub>) -> Result<Listener, MasterError> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("master-listen".into())
        .spawn(move || {
            let mut down_logged = false;
            while !flag.load(Ordering::Relaxed) {
                let mut client = match crate::store::pg_connect(&url).and_then(|mut c| {
                    c.batch_execute(&format!("LISTEN {}", crate::store::NOTIFY_CHANNEL))?;
                    Ok(c)
                }) {
                    Ok(c) => c,
                    Err(e) => {
                        if !down_logged {
                            tracing::warn!(
                                "cannot listen for other replicas' changes: {}",
                                crate::store::sql::SqlError::Pg(e)
                            );
                            down_logged = true;
                        }
                        std::thread::sleep(RELISTEN_EVERY);
                        continue;
                    }
                };
                if down_logged {
                    tracing::info!("listening for other replicas' changes again");
                    down_logged = false;
                }
                hub.wake_all();
                loop {
                    if flag.load(Ordering::Relaxed) {
                        return;
                    }
                    use postgres::fallible_iterator::FallibleIterator;
                    let next = client
                        .notifications()
                        .timeout_iter(Duration::from_millis(250))
                        .next();
                    match next {
                        Ok(Some(note)) => {
                            if let Some((c, etag)) = parse_note(note.payload()) {
                                hub.notify(&c, etag);
                            }
                        }
                        Ok(None) => {
                            if client.is_closed() {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(
                                "lost the connection listening for changes: {}",
                                crate::store::sql::SqlError::Pg(e)
                            );
                            break;
                        }
                    }
                }
            }
        })
        .map_err(MasterError::Worker)?;
    Ok(Listener { stop, thread })
}

/// `<computer> <etag>`.
fn parse_note(payload: &str) -> Option<(slapos_proto::ComputerId, u64)> {
    let (c, e) = payload.split_once(' ')?;
    Some((slapos_proto::ComputerId::parse(c).ok()?, e.parse().ok()?))
}

/// Workers on a PostgreSQL database: `connections` stores (one connection each) and the
/// listener of other replicas' changes.
pub fn start_postgres(
    url: &str,
    connections: usize,
    now_ms: u64,
    hub: Arc<Hub>,
) -> Result<(Db, Worker), MasterError> {
    let mut stores = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        stores.push(Store::open_postgres(url, now_ms)?);
    }
    let (db, mut worker) = start_pool(stores, hub.clone())?;
    worker.listener = Some(listen(url.to_owned(), hub)?);
    Ok((db, worker))
}

/// Wrap `f` as a job whose result arrives on the returned receiver.
fn job<T, E, F>(f: F) -> (Job, oneshot::Receiver<Result<T, ApiError>>)
where
    T: Send + 'static,
    E: Into<ApiError>,
    F: FnMut(&mut Store) -> Result<T, E> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let mut f = f;
    let job: Job = Box::new(move |store| {
        let mut tries = 0;
        let r = loop {
            let r = f(store).map_err(Into::into);
            match r {
                Err(e) if e.is_retryable() && tries < MAX_RETRIES => {
                    tries += 1;
                    std::thread::sleep(backoff(tries));
                }
                r => break r,
            }
        };
        let _ = tx.send(r);
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
        F: FnMut(&mut Store) -> Result<T, E> + Send + 'static,
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
        F: FnMut(&mut Store) -> Result<T, E> + Send + 'static,
    {
        let (job, rx) = job(f);
        self.jobs.blocking_send(job).map_err(stopped)?;
        rx.blocking_recv().map_err(dropped)?
    }
}

impl Worker {
    /// Stop the workers once every handle is dropped and queued jobs ran, then wait until the
    /// database is closed. Handles still alive elsewhere keep them running: drop the router
    /// first.
    pub async fn close(mut self) {
        self.stop = None;
        if let Some(l) = self.listener.take() {
            l.stop.store(true, Ordering::Relaxed);
            let _ = tokio::task::spawn_blocking(move || l.thread.join()).await;
        }
        for done in self.done.drain(..) {
            let _ = done.await;
        }
        for t in self.threads.drain(..) {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}
