//! The database workers: OS threads that each own a [`Store`] and run jobs sent from async
//! handlers.
//!
//! Database work (and its fsyncs) therefore never holds up a runtime thread's other tasks, and
//! the queue in front of the stores is bounded ([`QUEUE_DEPTH`]): when it is full, handlers
//! wait, so back-pressure reaches the HTTP layer. After each job a worker hands the computers
//! whose desired state changed to the [`Hub`], which wakes their long polls.
//!
//! On SQLite there is one worker (one writer: writes are serialised without lock contention),
//! reader threads for [`Db::read`], and a few read connections that [`Db::lookup`] uses on
//! the caller's own thread for reads of one row by key (the certificate check of every mTLS
//! request), sparing them two thread hand-offs. A lone write (no other write call in flight)
//! runs on the caller's thread too, with the writer's connection, after the runtime moved that
//! thread's other tasks away ([`Db::call`]): it pays its commit, not two wake-ups on top of
//! it; concurrent writes go to the writer, which commits them in groups.
//! On PostgreSQL there are several ([`start_pool`]), each with its own connection, taking jobs
//! from the one queue; their transactions are serializable, and a job whose transaction lost a
//! serialization race (`40001`, `40P01`) is run again, up to [`MAX_RETRIES`] times, so no
//! caller sees the race. A job made of several store calls is re-run whole: its store calls
//! must be safe to repeat (every write the HTTP layer makes in a job is its last store call).
//! [`listen`] feeds the hub with the changes other replicas commit (`LISTEN/NOTIFY`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::{mpsc, oneshot};

use crate::error::{ApiError, MasterError};
use crate::hub::Hub;
use crate::store::{Store, StoreError};

/// How long the SQLite writer polls its queue before it sleeps on it. Under load the next call
/// is tens of µs away, and a futex sleep and wake-up costs more than that on a VM: at 32
/// requesters the polling raised `fleet-sim`'s rate by 5–10 % (docs/fleet.md). Idle, it costs
/// this much CPU once per batch.
pub const WRITER_SPIN: Duration = Duration::from_micros(30);

/// Jobs committed together at most (SQLite group commit).
pub const GROUP_MAX: usize = 64;

/// Read-only SQLite connections serving [`Db::read`] beside the writer.
pub const SQLITE_READERS: usize = 2;

/// Read-only SQLite connections that [`Db::lookup`] uses on the caller's own thread.
pub const SQLITE_LOOKUPS: usize = 2;

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

/// A lone write runs on its runtime worker as it is, without moving the worker's other tasks
/// to another thread first, only while inline writes take less than this ([`Db::inline`]):
/// a task the worker woke just before (tokio's LIFO slot, which no other worker steals)
/// waits for the write.
pub const INLINE_ON_WORKER_MAX: Duration = Duration::from_micros(500);

/// How often the worker runs [`Store::maintain`] between jobs (and once when idle that long).
pub const MAINTAIN_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// What a job leaves to do once the fate of its transaction is known: answer its caller
/// (`Some(error)`: the group commit holding its changes failed).
type Deliver = Box<dyn FnOnce(Option<&StoreError>) + Send>;
type Job = Box<dyn FnOnce(&mut Store) -> Deliver + Send>;
type Queue = Arc<Mutex<mpsc::Receiver<Job>>>;

/// Handle to the database worker; cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    jobs: mpsc::Sender<Job>,
    /// The readers' queue (SQLite on disk); `None`: reads go to the workers.
    reads: Option<mpsc::Sender<Job>>,
    /// Read-only connections for [`Db::lookup`] (SQLite on disk; else none).
    lookups: Arc<[Mutex<Store>]>,
    /// The SQLite writer's connection, for [`Db::call`] to run a lone write on the caller's
    /// thread; `None` on PostgreSQL.
    inline: Option<Arc<Slot>>,
    timings: DbTimings,
}

/// A worker's store, and what runs after each of its batches.
#[derive(Debug)]
struct Slot {
    held: Mutex<Held>,
    hub: Arc<Hub>,
    /// Write calls in flight on this worker: queued, running or being answered (the SQLite
    /// writer's; see [`Db::inline`]).
    calls: AtomicUsize,
}

#[derive(Debug)]
struct Held {
    store: Store,
    maintained: std::time::Instant,
    /// How long the last inline write took (job and commit; [`Db::inline`]).
    last_inline: Duration,
}

impl Slot {
    fn new(store: Store, hub: Arc<Hub>) -> Arc<Self> {
        Arc::new(Self {
            held: Mutex::new(Held {
                store,
                maintained: std::time::Instant::now(),
                // Unknown: the first inline write runs as on a slow disk.
                last_inline: Duration::MAX,
            }),
            hub,
            calls: AtomicUsize::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        match self.held.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Counts a write call in flight until the returned guard drops.
    fn enter(&self) -> InFlight<'_> {
        let n = self.calls.fetch_add(1, Ordering::AcqRel) + 1;
        InFlight {
            calls: &self.calls,
            alone: n == 1,
        }
    }
}

/// A write call counted in [`Slot::calls`].
struct InFlight<'a> {
    calls: &'a AtomicUsize,
    /// No other write call was in flight when this one started.
    alone: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Held {
    /// After a batch: wake the polls of the computers it changed.
    fn notify(&mut self, hub: &Hub) {
        for (computer, etag) in self.store.take_touched() {
            hub.notify(&computer, etag);
        }
    }

    fn maintenance_due(&self) -> bool {
        self.maintained.elapsed() >= MAINTAIN_EVERY
    }

    /// [`Store::maintain`] when due (the worker, after a batch).
    fn maintain(&mut self) {
        if self.maintenance_due() {
            self.store.maintain();
            self.maintained = std::time::Instant::now();
        }
    }
}

/// Whether the caller runs on a multi-threaded tokio runtime, where
/// `tokio::task::block_in_place` can move its thread's other tasks away.
pub(crate) fn can_block_in_place() -> bool {
    multi_thread().is_some()
}

/// The multi-threaded tokio runtime the caller runs on, if it does.
fn multi_thread() -> Option<tokio::runtime::Handle> {
    tokio::runtime::Handle::try_current()
        .ok()
        .filter(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// How a lone write holds the caller's thread ([`Db::inline`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inline {
    /// It runs on the runtime worker as it is: the runtime has other workers to serve
    /// meanwhile, and writes are fast.
    OnTheWorker,
    /// The worker's other tasks move to another thread first (`block_in_place`): the
    /// runtime's only worker, or slow writes.
    BlockInPlace,
}

impl Inline {
    /// How a lone write runs on the calling thread, the last one having taken `last`; `None`
    /// off a multi-threaded runtime (the job is queued).
    fn here(last: Duration) -> Option<Self> {
        let workers = multi_thread()?.metrics().num_workers();
        Some(Self::choose(workers, last))
    }

    fn choose(workers: usize, last: Duration) -> Self {
        if workers >= 2 && last < INLINE_ON_WORKER_MAX {
            Self::OnTheWorker
        } else {
            Self::BlockInPlace
        }
    }
}

/// How long the workers take per batch of jobs (a group commit, or one job and its own
/// commit), by queue; `GET /metrics` shows them.
#[derive(Clone, Debug)]
pub struct DbTimings {
    /// Batches of the main queue: every write, and the reads where there are no readers.
    pub write: Histogram,
    /// Batches of the readers' queue (SQLite on disk).
    pub read: Histogram,
}

impl Default for DbTimings {
    fn default() -> Self {
        let h = || Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        Self {
            write: h(),
            read: h(),
        }
    }
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
    start_with(stores, Vec::new(), hub)
}

/// A SQLite writer with group commit, `readers` (read-only connections on the same file)
/// serving [`Db::read`], and `lookups` (more of them) serving [`Db::lookup`].
pub fn start_sqlite(
    writer: Store,
    readers: Vec<Store>,
    lookups: Vec<Store>,
    hub: Arc<Hub>,
) -> Result<(Db, Worker), MasterError> {
    let (mut db, worker) = start_with(vec![writer], readers, hub)?;
    db.lookups = lookups.into_iter().map(Mutex::new).collect();
    Ok((db, worker))
}

fn start_with(
    stores: Vec<Store>,
    readers: Vec<Store>,
    hub: Arc<Hub>,
) -> Result<(Db, Worker), MasterError> {
    let mut threads = Vec::new();
    let mut done = Vec::new();
    let mut writer = None;
    let timings = DbTimings::default();
    let mut spawn = |name: String, store: Store, rx: Queue, group: bool, took: &Histogram| {
        let (done_tx, done_rx) = oneshot::channel();
        let slot = Slot::new(store, hub.clone());
        if group {
            writer = Some(slot.clone());
        }
        let took = took.clone();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(slot, &rx, group, &took, done_tx))
            .map_err(MasterError::Worker)?;
        threads.push(thread);
        done.push(done_rx);
        Ok::<_, MasterError>(())
    };
    let (tx, rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
    let rx: Queue = Arc::new(Mutex::new(rx));
    let group = stores.len() == 1 && stores[0].engine() == crate::store::sql::Engine::Sqlite;
    for (i, store) in stores.into_iter().enumerate() {
        spawn(
            format!("master-db-{i}"),
            store,
            rx.clone(),
            group,
            &timings.write,
        )?;
    }
    let reads = if readers.is_empty() {
        None
    } else {
        let (tx, rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
        let rx: Queue = Arc::new(Mutex::new(rx));
        for (i, store) in readers.into_iter().enumerate() {
            spawn(
                format!("master-read-{i}"),
                store,
                rx.clone(),
                false,
                &timings.read,
            )?;
        }
        Some(tx)
    };
    let db = Db {
        jobs: tx,
        reads,
        lookups: Arc::new([]),
        inline: writer,
        timings,
    };
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

/// One worker: run jobs until the queue closes. With `group` (the SQLite writer), the jobs
/// queued at that moment run in one transaction, each in its own savepoint (a failing job
/// rolls back only itself), and are answered after the one commit: N concurrent writes cost
/// one fsync, and nobody is answered before their write is durable. Each batch's time goes
/// into `took`.
fn run(slot: Arc<Slot>, rx: &Queue, group: bool, took: &Histogram, done: oneshot::Sender<()>) {
    loop {
        // One worker waits on the queue at a time; the others wait for the lock.
        let mut batch = Vec::new();
        {
            let mut q = match rx.lock() {
                Ok(q) => q,
                Err(poisoned) => poisoned.into_inner(),
            };
            let polled = if group {
                poll(&mut q, WRITER_SPIN)
            } else {
                None
            };
            let Some(first) = polled.or_else(|| q.blocking_recv()) else {
                break;
            };
            batch.push(first);
            while group && batch.len() < GROUP_MAX {
                match q.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
        }
        let mut held = slot.lock();
        let store = &mut held.store;
        let started = std::time::Instant::now();
        if batch.len() == 1 || store.group_begin().is_err() {
            for job in batch {
                run_job(job, store)(None);
            }
        } else {
            let delivers: Vec<Deliver> = batch.into_iter().map(|job| run_job(job, store)).collect();
            let committed = store.group_commit();
            if let Err(e) = &committed {
                tracing::error!("a group commit failed, its calls are answered with it: {e}");
            }
            for d in delivers {
                d(committed.as_ref().err());
            }
        }
        took.observe(started.elapsed().as_secs_f64());
        held.notify(&slot.hub);
        held.maintain();
    }
    // Every handle is gone with the queue, so this is the last reference: dropping it closes
    // the connection (and checkpoints the WAL) before signalling.
    drop(slot);
    let _ = done.send(());
}

/// The next job if one arrives within `spin` (polling, without sleeping).
fn poll(q: &mut mpsc::Receiver<Job>, spin: Duration) -> Option<Job> {
    let until = std::time::Instant::now() + spin;
    loop {
        if let Ok(j) = q.try_recv() {
            return Some(j);
        }
        if std::time::Instant::now() >= until {
            return None;
        }
        std::hint::spin_loop();
    }
}

/// Run one job; a panicking job rolls its transaction (or savepoint) back as the Transaction
/// drops, and its caller gets an internal error; the worker keeps serving the others.
fn run_job(job: Job, store: &mut Store) -> Deliver {
    let run = std::panic::AssertUnwindSafe(|| job(store));
    match std::panic::catch_unwind(run) {
        Ok(deliver) => deliver,
        Err(_) => {
            tracing::error!("a database job panicked; its transaction was rolled back");
            Box::new(|_| {})
        }
    }
}

/// The answer to a caller whose write was in a group commit that failed.
fn group_failed(e: &StoreError) -> ApiError {
    match e {
        StoreError::DiskFull { op } => ApiError::DiskFull { op },
        e => ApiError::Internal(format!("the commit holding this call failed: {e}")),
    }
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

/// Runs `f` until it succeeds, fails for good, or lost [`MAX_RETRIES`] serialization races in
/// a row (`retryable`), pausing [`backoff`] between tries: how a transaction that PostgreSQL
/// cancelled runs again.
pub fn retrying<T, E>(
    mut f: impl FnMut() -> Result<T, E>,
    retryable: impl Fn(&E) -> bool,
) -> Result<T, E> {
    let mut tries = 0;
    loop {
        match f() {
            Err(e) if retryable(&e) && tries < MAX_RETRIES => {
                tries += 1;
                std::thread::sleep(backoff(tries));
            }
            r => return r,
        }
    }
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
        let r = retrying(|| f(store).map_err(Into::into), ApiError::is_retryable);
        Box::new(move |failed: Option<&StoreError>| {
            let r = match (r, failed) {
                (Ok(_), Some(e)) => Err(group_failed(e)),
                (r, _) => r,
            };
            let _ = tx.send(r);
        }) as Deliver
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
    /// The workers' batch timings.
    pub fn timings(&self) -> &DbTimings {
        &self.timings
    }

    /// Run `f` on the store and return its result (a store error, or an API error of a
    /// check made in the same job, e.g. an authorization that must see the same state). On
    /// SQLite, a lone write runs on the caller's thread ([`Db::inline`]).
    pub async fn call<T, E, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        E: Into<ApiError>,
        F: FnMut(&mut Store) -> Result<T, E> + Send + 'static,
    {
        let (job, rx) = job(f);
        let calls = self.inline.as_deref().map(|slot| (slot, slot.enter()));
        let job = match &calls {
            Some((slot, c)) if c.alone => self.inline(slot, job),
            _ => Some(job),
        };
        if let Some(job) = job {
            self.jobs.send(job).await.map_err(stopped)?;
        }
        rx.await.map_err(dropped)?
    }

    /// Runs the job of a lone write call (no other write in flight: nothing queued, running or
    /// being answered) on the caller's thread, with the SQLite writer's connection if it is
    /// free, when the caller is on a multi-threaded runtime. It spares the two thread wake-ups
    /// of a queued job (the writer's, then the caller's: ~50 µs on this VM, docs/fleet.md).
    /// Concurrent calls are queued: the writer commits them in groups. The store's maintenance
    /// stays on the writer, after the answer: when it is due, an empty job wakes the writer for
    /// it. Returns the job when it must be queued.
    ///
    /// How the thread is held ([`Inline`]): with two workers or more, and while inline writes
    /// take less than [`INLINE_ON_WORKER_MAX`], the job simply runs on the worker. At most one
    /// call runs inline at a time (it is alone), so at most one worker waits on its `fsync`
    /// while the others serve; the calls that arrive meanwhile are not alone and queue.
    /// Otherwise the runtime first moves the worker's core to another thread
    /// (`block_in_place`: ~25 µs of CPU and a thread wake-up on this VM), so that no task
    /// waits on a slow commit and a single-worker runtime never does. The last write predicts
    /// the next: a large one after small ones (a 1,000-partition registration, ~19 ms) holds
    /// its worker for its whole length while the others serve.
    fn inline(&self, slot: &Slot, job: Job) -> Option<Job> {
        let mut held = match slot.held.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Some(job),
        };
        let Some(how) = Inline::here(held.last_inline) else {
            return Some(job);
        };
        let run = || {
            let started = std::time::Instant::now();
            run_job(job, &mut held.store)(None);
            held.last_inline = started.elapsed();
            self.timings.write.observe(held.last_inline.as_secs_f64());
            held.notify(&slot.hub);
            held.maintenance_due()
        };
        let due = match how {
            Inline::OnTheWorker => run(),
            Inline::BlockInPlace => tokio::task::block_in_place(run),
        };
        drop(held);
        if due {
            // A full queue means a busy writer, which maintains after its batch anyway.
            let wake: Job = Box::new(|_| Box::new(|_: Option<&StoreError>| {}));
            let _ = self.jobs.try_send(wake);
        }
        None
    }

    /// [`Db::call`] for a job that only reads: on SQLite on disk it runs on a read-only
    /// connection beside the writer (WAL readers do not wait for writes, and see every
    /// committed write); elsewhere like [`Db::call`]. A job that writes fails there.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        E: Into<ApiError>,
        F: FnMut(&mut Store) -> Result<T, E> + Send + 'static,
    {
        let (job, rx) = job(f);
        self.reads
            .as_ref()
            .unwrap_or(&self.jobs)
            .send(job)
            .await
            .map_err(stopped)?;
        rx.await.map_err(dropped)?
    }

    /// [`Db::read`] for a point lookup of a few µs (one row by key, e.g. a certificate by
    /// serial): it runs on the caller's thread with a free lookup connection, which spares
    /// the two thread hand-offs of a queued job (to a reader thread and back, 12–20 µs each
    /// on a VM, and most of such a read's latency); with none free, or off SQLite, it is
    /// queued like [`Db::read`]. It sees every committed write, as [`Db::read`] does. Only for
    /// reads that cannot take long: the caller's runtime thread runs it.
    pub async fn lookup<T, E, F>(&self, mut f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        E: Into<ApiError>,
        F: FnMut(&mut Store) -> Result<T, E> + Send + 'static,
    {
        for conn in self.lookups.iter() {
            if let Ok(mut store) = conn.try_lock() {
                return f(&mut store).map_err(Into::into);
            }
        }
        self.read(f).await
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
        let _calls = self.inline.as_deref().map(Slot::enter);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql::params;

    fn reg(c: &str) -> slapos_proto::RegisterComputer {
        slapos_proto::RegisterComputer {
            id: slapos_proto::ComputerId::parse(c).unwrap(),
            partitions: vec![],
            labels: Default::default(),
        }
    }

    /// A SQLite database in a temporary directory, with one reader and one lookup connection.
    fn sqlite() -> (tempfile::TempDir, Db, Worker) {
        sqlite_with(Arc::new(Hub::default()))
    }

    fn sqlite_with(hub: Arc<Hub>) -> (tempfile::TempDir, Db, Worker) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let store = Store::open(&path, 1).unwrap();
        let readers = vec![Store::open_reader(&path).unwrap()];
        let lookups = vec![Store::open_reader(&path).unwrap()];
        let (db, worker) = start_sqlite(store, readers, lookups, hub).unwrap();
        (dir, db, worker)
    }

    /// The name of the thread running a job.
    fn thread_name() -> Option<String> {
        std::thread::current().name().map(str::to_owned)
    }

    /// A lone write runs on its worker as it is only where the runtime has another worker and
    /// writes are fast; a single worker, a slow disk and the first write move the worker's
    /// other tasks away first.
    #[test]
    fn a_lone_write_holds_its_worker_only_beside_another_and_when_fast() {
        let fast = INLINE_ON_WORKER_MAX / 2;
        assert_eq!(Inline::choose(2, fast), Inline::OnTheWorker);
        assert_eq!(Inline::choose(8, fast), Inline::OnTheWorker);
        assert_eq!(Inline::choose(1, fast), Inline::BlockInPlace);
        assert_eq!(
            Inline::choose(2, INLINE_ON_WORKER_MAX),
            Inline::BlockInPlace
        );
        assert_eq!(Inline::choose(2, Duration::MAX), Inline::BlockInPlace);
        let current = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(current.block_on(async { Inline::here(fast) }), None);
        assert_eq!(Inline::here(fast), None, "off a runtime");
    }

    /// While a lone write waits (here, inside its job) the runtime still runs other tasks, on
    /// one worker (its core moved away) and on two (the other worker): the job waits for a
    /// task spawned after it started.
    #[test]
    fn a_lone_write_never_stalls_the_runtime() {
        for workers in [1, 2] {
            let (_dir, db, _worker) = sqlite();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .thread_name("test-rt")
                .enable_all()
                .build()
                .unwrap();
            // As after a fast write: two workers run the next one on the worker as it is.
            db.inline.as_deref().unwrap().lock().last_inline = Duration::ZERO;
            let (started_tx, started) = std::sync::mpsc::channel();
            let (go, go_rx) = std::sync::mpsc::channel::<()>();
            let d = db.clone();
            let call = rt.spawn(async move {
                d.call(move |s| {
                    started_tx.send(thread_name()).unwrap();
                    let served = go_rx.recv_timeout(Duration::from_secs(20)).is_ok();
                    s.register(&reg("C1"), 1)?;
                    Ok::<_, StoreError>(served)
                })
                .await
            });
            let ran_on = started.recv_timeout(Duration::from_secs(20)).unwrap();
            assert_eq!(
                ran_on.as_deref(),
                Some("test-rt"),
                "{workers} worker(s): inline"
            );
            rt.spawn(async move { go.send(()).unwrap() });
            let served = rt.block_on(call).unwrap().unwrap();
            assert!(
                served,
                "{workers} worker(s): no task ran while a lone write waited"
            );
        }
    }

    /// On a multi-threaded runtime a lone write runs on the caller's thread, is committed when it answers (a reader sees it), and wakes its computer's
    /// polls; calls made together reach the writer thread, which commits them in groups.
    #[test]
    fn a_lone_write_runs_on_the_callers_thread_and_a_crowd_on_the_writer() {
        let hub = Arc::new(Hub::default());
        let (_dir, db, _worker) = sqlite_with(hub.clone());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-rt")
            .enable_all()
            .build()
            .unwrap();
        let c = slapos_proto::ComputerId::parse("C1").unwrap();
        let supply = slapos_proto::SupplyRequest {
            url: slapos_proto::SoftwareUrl::parse("https://example.com/sr.cfg").unwrap(),
            state: Default::default(),
        };
        rt.block_on(async {
            db.call(|s| s.register(&reg("C1"), 1)).await.unwrap();
            let mut polls = hub.subscribe(&c);
            polls.mark_unchanged();
            let (c2, db2) = (c.clone(), db.clone());
            // On a runtime worker, whose other tasks `block_in_place` moves away.
            let ran_on = tokio::spawn(async move {
                db2.call(move |s| {
                    s.supply(&c2, &supply)?;
                    Ok::<_, StoreError>(thread_name())
                })
                .await
            })
            .await
            .unwrap()
            .unwrap();
            assert_eq!(
                ran_on.as_deref(),
                Some("test-rt"),
                "a lone write runs inline"
            );
            assert!(
                polls.has_changed().unwrap(),
                "the computer's polls were woken"
            );
            let seen = db
                .read(move |s| Ok::<_, StoreError>(s.computer(&c)?.software.len()))
                .await
                .unwrap();
            assert_eq!(seen, 1, "committed before it answered");

            let calls = (0..64).map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    db.call(move |s| {
                        s.register(&reg(&format!("D{i}")), 1)?;
                        Ok::<_, StoreError>(thread_name())
                    })
                    .await
                    .unwrap()
                })
            });
            let mut on_writer = 0;
            for call in calls.collect::<Vec<_>>() {
                if call.await.unwrap().as_deref() == Some("master-db-0") {
                    on_writer += 1;
                }
            }
            assert!(on_writer > 0, "64 calls at once all ran inline");
            let n = db
                .read(|s| Ok::<_, StoreError>(s.computers()?.len()))
                .await
                .unwrap();
            assert_eq!(n, 65);
        });
    }

    /// Concurrent writes share commits; each call keeps its own outcome: a call that wrote and
    /// then failed leaves nothing, its neighbours in the same group are kept, and reads on the
    /// reader connections see every acknowledged write.
    #[test]
    fn group_commit_keeps_each_calls_outcome() {
        let (_dir, db, _worker) = sqlite();
        let threads: Vec<_> = (0..48)
            .map(|i| {
                let db = db.clone();
                std::thread::spawn(move || {
                    if i % 3 == 0 {
                        db.call_blocking(move |s| -> Result<(), StoreError> {
                            let tx = s.connection().begin(true).unwrap();
                            tx.exec(
                                "INSERT INTO meta (key, value) VALUES (?1, 1)",
                                params![format!("bad{i}")],
                            )
                            .unwrap();
                            Err(StoreError::Invalid(format!("call {i} fails after writing")))
                        })
                        .map(|_| None)
                    } else {
                        db.call_blocking(move |s| s.register(&reg(&format!("C{i}")), 1))
                            .map(|c| Some(c.id.to_string()))
                    }
                })
            })
            .collect();
        let mut kept = Vec::new();
        for (i, t) in threads.into_iter().enumerate() {
            match t.join().unwrap() {
                Ok(Some(c)) => kept.push(c),
                Ok(None) => panic!("call {i} should have failed"),
                Err(e) => assert!(i % 3 == 0, "call {i} failed: {e}"),
            }
        }
        assert_eq!(kept.len(), 32);
        let listed = db.call_blocking(|s| s.computers()).unwrap();
        assert_eq!(listed.len(), 32);
        let dump = db.call_blocking(|s| Ok::<_, StoreError>(s.dump())).unwrap();
        assert!(
            !dump.contains("bad"),
            "a failed call's write was kept:\n{dump}"
        );
        // The readers see the same (WAL readers after the commits).
        let read = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(db.read(|s| s.computers()))
        })
        .join()
        .unwrap()
        .unwrap();
        assert_eq!(read.len(), 32);
    }

    #[test]
    fn the_writer_polls_its_queue_for_the_spin_then_gives_up() {
        let (tx, mut rx) = mpsc::channel::<Job>(4);
        let spin = std::time::Duration::from_millis(20);
        let t = std::time::Instant::now();
        assert!(poll(&mut rx, spin).is_none());
        assert!(t.elapsed() >= spin, "polled for the whole spin");
        let sender = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(2));
            let (job, _rx) = job(|_| Ok::<_, StoreError>(()));
            tx.blocking_send(job).map_err(drop).unwrap();
        });
        assert!(poll(&mut rx, std::time::Duration::from_secs(5)).is_some());
        sender.join().unwrap();
    }

    /// A lookup runs on the caller's thread and sees the last commit; with its connection
    /// taken, it goes to the reader threads instead.
    #[test]
    fn a_lookup_runs_on_the_callers_thread_unless_its_connections_are_busy() {
        let (_dir, db, _worker) = sqlite();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let here = std::thread::current().name().map(str::to_owned);
        let lookup = |db: &Db| {
            rt.block_on(db.lookup(|s| {
                let n = s.computers()?.len();
                Ok::<_, StoreError>((n, std::thread::current().name().map(str::to_owned)))
            }))
            .unwrap()
        };
        assert_eq!(lookup(&db), (0, here.clone()));
        db.call_blocking(|s| s.register(&reg("C1"), 1)).unwrap();
        assert_eq!(lookup(&db), (1, here), "the committed write is seen");
        let _taken = db.lookups[0].lock().unwrap();
        assert_eq!(lookup(&db), (1, Some("master-read-0".to_owned())), "queued");
    }
}
