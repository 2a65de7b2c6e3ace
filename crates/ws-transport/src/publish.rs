//! One publish, whoever sends it: a client over its WebSocket (`connection.rs`) or the
//! backend over the HTTP API (the server's `api.rs`). Both come through [`publish`] (or
//! [`publish_batch`] for `POST /api/messages`), so a message is stamped, timed, counted and
//! its failure logged in one place; each caller only turns the outcome into its own answer
//! (an `ack` or `error` frame, a `202` or `503`, a batch's result).
//!
//! A connection's publishes are pipelined (`InFlight`): each goes to the broker without
//! waiting for the previous one's answer, and the answers are written in the order the
//! publishes came, as many at a time as the core's `publish_window` allows.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::Notify;
use tracing::debug;
use tungstenite::Utf8Bytes;
use ws_core::ProjectId;

use crate::broker::{BoxFuture, Broker, BrokerError, Publication, Published};
use crate::hub::SharedHub;
use crate::tungstenite;

/// What a client is told when the broker failed, over the WebSocket or HTTP. The broker's
/// own error (a Redis error text, an address) goes to the log, never to a client.
pub const BROKER_UNAVAILABLE_MESSAGE: &str = "the message broker is unavailable; retry later";

/// Publishes `publication` to `project`: the broker gives it the project's next offset,
/// keeps it and delivers it to every member (but the connection `except`, for
/// `echo: false`); a repeated `key` publishes nothing and answers the first offset; an
/// `ephemeral` one is only delivered. Returns what the broker did.
///
/// ```
/// use futures_util::FutureExt;
/// use ws_core::{AdmissionConfig, HubConfig, IdempotencyKey, ProjectId, envelope::Payload};
/// use ws_transport::broker::{Publication, Published};
/// use ws_transport::{MemoryBroker, SharedHub, publish::publish};
///
/// let hub = SharedHub::new(HubConfig::default(), AdmissionConfig::default(), 1);
/// let broker = MemoryBroker::new(hub.clone(), Default::default(), 1);
/// let project = ProjectId::parse("p").unwrap();
/// let data = Payload::from_json("1".to_owned()).unwrap();
/// let mut publication = Publication::new("api".to_owned(), data);
/// publication.key = Some(IdempotencyKey::parse("order-17").unwrap());
/// // The memory broker answers at once.
/// let first = publish(&hub, &broker, &project, publication.clone()).now_or_never();
/// assert!(matches!(first, Some(Ok(Published { offset: Some(1), duplicate: false }))));
/// let retry = publish(&hub, &broker, &project, publication).now_or_never();
/// assert!(matches!(retry, Some(Ok(Published { offset: Some(1), duplicate: true }))));
/// ```
pub async fn publish(
    hub: &SharedHub,
    broker: &dyn Broker,
    project: &ProjectId,
    publication: Publication,
) -> Result<Published, BrokerError> {
    let started = Instant::now();
    match broker.publish(project, publication).await {
        Ok(published) => {
            hub.metrics().published(started.elapsed());
            Ok(published)
        }
        Err(e) => {
            hub.metrics().broker_error();
            debug!(%project, error = %e, "publish failed");
            Err(e)
        }
    }
}

/// Publishes `items` in order through [`Broker::publish_batch`] (one round trip on Redis):
/// one answer per item, in the items' order; each project's items take offsets in the
/// order they come, and a failed item does not stop the others. Each item is counted and
/// its failure logged as [`publish`] does; its time is the batch's, from the call to the
/// broker's answer, which is how long the item waited.
///
/// ```
/// use futures_util::FutureExt;
/// use ws_core::{AdmissionConfig, HubConfig, ProjectId, envelope::Payload};
/// use ws_transport::broker::Publication;
/// use ws_transport::{MemoryBroker, SharedHub, publish::publish_batch};
///
/// let hub = SharedHub::new(HubConfig::default(), AdmissionConfig::default(), 1);
/// let broker = MemoryBroker::new(hub.clone(), Default::default(), 1);
/// let item = |project: &str, n: u32| {
///     let data = Payload::from_json(n.to_string()).unwrap();
///     (ProjectId::parse(project).unwrap(), Publication::new("api".to_owned(), data))
/// };
/// let items = vec![item("a", 1), item("b", 2), item("a", 3)];
/// let results = publish_batch(&hub, &broker, items).now_or_never().unwrap();
/// let offsets: Vec<_> = results.into_iter().map(|r| r.unwrap().offset).collect();
/// assert_eq!(offsets, [Some(1), Some(1), Some(2)]);
/// ```
pub async fn publish_batch(
    hub: &SharedHub,
    broker: &dyn Broker,
    items: Vec<(ProjectId, Publication)>,
) -> Vec<Result<Published, BrokerError>> {
    let len = items.len();
    // Kept for the log lines of failed items.
    let projects: Vec<ProjectId> = items.iter().map(|(p, _)| p.clone()).collect();
    let started = Instant::now();
    let mut results = broker.publish_batch(items).await;
    let took = started.elapsed();
    debug_assert_eq!(results.len(), len, "a broker answers every item of a batch");
    results.resize_with(len, || {
        Err(BrokerError::unavailable(
            "the broker did not answer this batch item",
        ))
    });
    for (result, project) in results.iter().zip(&projects) {
        match result {
            Ok(_) => hub.metrics().published(took),
            Err(e) => {
                hub.metrics().broker_error();
                debug!(%project, error = %e, "batch publish failed");
            }
        }
    }
    results
}

/// One connection's publishes in flight, oldest first, each until its answer (the `ack` or
/// `error` frame) is taken by the write pump. Shared by the connection's two pumps (futures
/// of one task):
///
/// - the read pump [`start`](Self::start)s a publish (or [`answer`](Self::answer)s one it
///   refused) and goes on reading, unless the core's window is full;
/// - the write pump [`progress`](Self::progress)es them while it waits, polling every
///   publish in order (so a broker that takes its place when first polled takes them in
///   the connection's order), and [`take`](Self::take)s the answers at the front, in order,
///   into its batch: a later publish's answer never overtakes an earlier one's. The pump
///   then reports each to the core (`Client::handle_publish_answered`) and calls
///   [`taken`](Self::taken).
///
/// How many may be in flight is the core's decision (`ClientConfig::publish_window`); this
/// queue holds exactly the core's publishes in flight.
pub(crate) struct InFlight<'a> {
    /// Allocated by the connection's first publish: most connections never publish, and
    /// inline this state would sit in every connection's task for its whole life (the
    /// task's size class is most of an idle connection's memory).
    queue: OnceLock<Box<Queue<'a>>>,
    /// The core's window of publishes in flight is full: the read pump waits in
    /// [`started`](Self::started) until an answer is taken.
    window_full: AtomicBool,
}

struct Queue<'a> {
    slots: Mutex<VecDeque<Slot<'a>>>,
    /// Answers were taken and counted by the core: a waiting reader looks again.
    answered: Notify,
}

enum Slot<'a> {
    Waiting(BoxFuture<'a, Utf8Bytes>),
    Answered(Utf8Bytes),
}

impl<'a> InFlight<'a> {
    /// An empty queue.
    pub(crate) fn new() -> Self {
        Self {
            queue: OnceLock::new(),
            window_full: AtomicBool::new(false),
        }
    }

    /// The queue, allocated on first use.
    fn queue(&self) -> &Queue<'a> {
        self.queue.get_or_init(|| {
            Box::new(Queue {
                slots: Mutex::new(VecDeque::new()),
                answered: Notify::new(),
            })
        })
    }

    /// The queue's slots, locked; `None` while nothing was ever queued.
    fn slots(&self) -> Option<MutexGuard<'_, VecDeque<Slot<'a>>>> {
        self.queue.get().map(|queue| queue.lock())
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Slot<'a>>> {
        self.queue().lock()
    }

    /// Queues a publish whose answer `answer` resolves to (boxed here, so that its state
    /// never sits in the connection's task). [`started`](Self::started) or
    /// [`progress`](Self::progress) first polls it, after every publish queued before it.
    pub(crate) fn start(&self, answer: impl Future<Output = Utf8Bytes> + Send + 'a) {
        self.lock().push_back(Slot::Waiting(Box::pin(answer)));
    }

    /// Polls every publish in flight once, in order, and returns: [`started`](Self::started)
    /// calls it, so a broker that answers at once (the memory broker)
    /// publishes there and then, as before pipelining, and a networked one takes its place
    /// in line.
    async fn poll_now(&self) {
        poll_fn(|cx| {
            let _ = self.poll_progress(cx);
            Poll::Ready(())
        })
        .await;
    }

    /// After [`start`](Self::start): polls the publishes in flight now, then, while the
    /// core's window is full, waits for the write pump to take an answer (nothing more is
    /// read meanwhile).
    pub(crate) async fn started(&self) {
        self.poll_now().await;
        if self.window_full.load(Ordering::Relaxed) {
            self.wait_until(|| !self.window_full.load(Ordering::Relaxed))
                .await;
        }
    }

    /// The core says whether its window of publishes in flight is full
    /// (`Client::publish_window_full`), after a frame was read.
    pub(crate) fn set_window_full(&self, full: bool) {
        self.window_full.store(full, Ordering::Relaxed);
    }

    /// Queues the answer of a publish that never reached the broker (refused): it goes out
    /// after the answers of the publishes before it.
    pub(crate) fn answer(&self, frame: Utf8Bytes) {
        self.lock().push_back(Slot::Answered(frame));
    }

    /// Whether the oldest publish is answered: the write pump has something to take.
    pub(crate) fn has_answers(&self) -> bool {
        self.slots()
            .is_some_and(|slots| matches!(slots.front(), Some(Slot::Answered(_))))
    }

    /// Whether nothing is in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.slots().is_none_or(|slots| slots.is_empty())
    }

    /// Drives the publishes in flight, in order; resolves once the oldest is answered.
    pub(crate) async fn progress(&self) {
        poll_fn(|cx| self.poll_progress(cx)).await;
    }

    fn poll_progress(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Nothing was ever queued: the read pump wakes the write pump after a `start`, and
        // this is polled again.
        let Some(mut slots) = self.slots() else {
            return Poll::Pending;
        };
        for slot in slots.iter_mut() {
            if let Slot::Waiting(answer) = slot
                && let Poll::Ready(frame) = answer.as_mut().poll(cx)
            {
                *slot = Slot::Answered(frame);
            }
        }
        match slots.front() {
            Some(Slot::Answered(_)) => Poll::Ready(()),
            _ => Poll::Pending,
        }
    }

    /// Moves the answers at the front, in order, into `out` (through `wrap`); returns how
    /// many. The caller reports each to the core, then calls [`taken`](Self::taken).
    pub(crate) fn take<T>(&self, out: &mut Vec<T>, wrap: impl Fn(Utf8Bytes) -> T) -> usize {
        let Some(mut slots) = self.slots() else {
            return 0;
        };
        let mut taken = 0;
        while let Some(Slot::Answered(_)) = slots.front() {
            if let Some(Slot::Answered(frame)) = slots.pop_front() {
                out.push(wrap(frame));
                taken += 1;
            }
        }
        taken
    }

    /// The core counted the answers taken, and says whether its window is still full: wakes
    /// a reader waiting for room or for the queue to empty.
    pub(crate) fn taken(&self, window_full: bool) {
        self.set_window_full(window_full);
        if let Some(queue) = self.queue.get() {
            queue.answered.notify_waiters();
        }
    }

    /// Waits until `ready` holds, looking again each time answers were taken.
    pub(crate) async fn wait_until(&self, ready: impl Fn() -> bool) {
        loop {
            let mut notified = pin!(self.queue().answered.notified());
            // Registered before the check, so an answer taken in between is not missed.
            notified.as_mut().enable();
            if ready() {
                return;
            }
            notified.await;
        }
    }

    /// Waits until every publish in flight was answered and taken: a request that is not
    /// a publish is handled after this, so its answer follows theirs.
    pub(crate) async fn drained(&self) {
        if !self.is_empty() {
            self.wait_until(|| self.is_empty()).await;
        }
    }
}

impl<'a> Queue<'a> {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Slot<'a>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for InFlight<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("len", &self.slots().map_or(0, |slots| slots.len()))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_util::FutureExt;
    use tokio::sync::oneshot;

    use super::*;

    fn text(s: &str) -> Utf8Bytes {
        Utf8Bytes::from(s.to_owned())
    }

    #[tokio::test]
    async fn answers_leave_in_order_whatever_order_they_complete_in() {
        let queue = InFlight::new();
        let (first, first_rx) = oneshot::channel::<&str>();
        let (second, second_rx) = oneshot::channel::<&str>();
        queue.start(first_rx.map(|r| text(r.unwrap())));
        queue.start(second_rx.map(|r| text(r.unwrap())));
        queue.answer(text("refused"));
        second.send("b").unwrap();
        assert!(
            queue.progress().now_or_never().is_none(),
            "the oldest waits"
        );
        let mut out = Vec::new();
        assert_eq!(queue.take(&mut out, |f| f), 0);
        first.send("a").unwrap();
        queue.progress().await;
        assert_eq!(queue.take(&mut out, |f| f), 3);
        assert_eq!(out, [text("a"), text("b"), text("refused")]);
        assert!(queue.is_empty());
    }

    #[tokio::test]
    async fn publishes_are_first_polled_in_the_order_they_came() {
        let queue = InFlight::new();
        let order = Arc::new(Mutex::new(Vec::new()));
        for n in 0..5 {
            let order = Arc::clone(&order);
            queue.start(async move {
                order.lock().unwrap().push(n);
                std::future::pending::<()>().await;
                text("never")
            });
            queue.poll_now().await;
        }
        // Each was first polled when started, after those before it.
        assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_once_answers_are_taken() {
        let queue = InFlight::new();
        queue.answer(text("x"));
        let mut drained = pin!(queue.drained());
        assert!((&mut drained).now_or_never().is_none());
        let mut out = Vec::new();
        queue.take(&mut out, |f| f);
        queue.taken(false);
        drained.await;
    }
}
