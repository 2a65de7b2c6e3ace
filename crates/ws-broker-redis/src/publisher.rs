//! The publisher task: every publish of this node goes through one queue, and the task
//! sends whatever is queued as one pipeline ([`Inner::publish_all`]), one round trip.
//!
//! ```text
//!  Broker::publish ─┐                       ┌─► pipeline of the queued items ─► Redis
//!  Broker::publish ─┼─► queue (in order) ─► │   (EVALSHA / PUBLISH, in order)
//!  publish_batch  ──┘                       └─◄ one answer per item ─► each caller's oneshot
//! ```
//!
//! - Throughput: a connection's publishes no longer wait for each other's round trips (the
//!   transport pipelines them); while one pipeline is out, everything that arrives meanwhile,
//!   from every connection and the HTTP API, waits in the queue and goes out as the next
//!   pipeline. The busier the node, the fuller each round trip (group commit).
//! - Order: the queue keeps the order publishes were made in, and one pipeline at a time is
//!   out, so Redis runs them in that order: a connection's publishes, and a project's,
//!   take their offsets in the order they were made. One at a time because `Inner::call`
//!   spreads calls over the pool's connections, and two pipelines on two connections could
//!   run in either order; Redis runs the scripts one by one anyway, so a second pipeline in
//!   flight would only save the wait of one round trip on loopback.
//! - Memory: the queue is bounded by its callers: each connection has at most its core's
//!   `publish_window` publishes in flight, and each HTTP request waits for its own. A
//!   pipeline holds at most [`MAX_BATCH`] items, so one round trip stays well within
//!   `command_timeout`.
//! - Exact publishing is `Inner::publish_all`'s, unchanged: each item is still one atomic
//!   script, so a key repeated within a pipeline is a duplicate like one repeated later.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use ws_core::ProjectId;
use ws_transport::broker::{BrokerError, Publication, Published};

use crate::inner::Inner;

/// The most items in one pipeline: about 10 ms of Redis's time for the publish script,
/// far within `command_timeout`; more queued go in the next round trip.
pub(crate) const MAX_BATCH: usize = 1024;

/// One publish waiting for the task, and where its answer goes.
struct Job {
    project: ProjectId,
    publication: Publication,
    answer: oneshot::Sender<Result<Published, BrokerError>>,
}

/// The queue into the publisher task.
#[derive(Debug)]
pub(crate) struct Publisher {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Publisher {
    /// Starts the task publishing through `inner`.
    pub(crate) fn start(inner: Arc<Inner>) -> (Self, JoinHandle<()>) {
        let (jobs, queue) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(queue, move |items| {
            let inner = Arc::clone(&inner);
            async move {
                let refs: Vec<(&ProjectId, &Publication)> =
                    items.iter().map(|(p, x)| (p, x)).collect();
                inner.publish_all(&refs).await
            }
        }));
        (Self { jobs }, task)
    }

    /// Queues `publication` for `project` now, when called (not when the future is first
    /// polled): publishes made one after the other are published in that order. The future
    /// resolves with the item's answer.
    pub(crate) fn publish(
        &self,
        project: ProjectId,
        publication: Publication,
    ) -> impl Future<Output = Result<Published, BrokerError>> + Send + 'static {
        let (answer, answered) = oneshot::channel();
        let queued = self
            .jobs
            .send(Job {
                project,
                publication,
                answer,
            })
            .is_ok();
        async move {
            if !queued {
                return Err(stopped());
            }
            answered.await.unwrap_or_else(|_| Err(stopped()))
        }
    }
}

fn stopped() -> BrokerError {
    BrokerError::unavailable("the redis publisher task has stopped")
}

/// The task: takes everything queued (at least one item, at most [`MAX_BATCH`]), hands it
/// to `send` as one batch, answers each item, and again; one batch at a time. Ends when
/// every [`Publisher`] is gone.
async fn run<F, Fut>(mut queue: mpsc::UnboundedReceiver<Job>, mut send: F)
where
    F: FnMut(Vec<(ProjectId, Publication)>) -> Fut,
    Fut: Future<Output = Vec<Result<Published, BrokerError>>>,
{
    let mut jobs = Vec::new();
    while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let (items, answers): (Vec<_>, Vec<_>) = jobs
            .drain(..)
            .map(|job| ((job.project, job.publication), job.answer))
            .unzip();
        let mut results = send(items).await.into_iter();
        for answer in answers {
            let result = results
                .next()
                .unwrap_or_else(|| Err(BrokerError::unavailable("redis answered no publish")));
            // The caller may be gone (its connection closed): the publish happened anyway.
            let _ = answer.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures_util::future::join_all;
    use ws_core::envelope::Payload;

    use super::*;

    type Answers = Vec<Result<Published, BrokerError>>;

    fn publication(n: u64) -> Publication {
        Publication::new("t".to_owned(), Payload::from_json(n.to_string()).unwrap())
    }

    /// Stands in for Redis: numbers the items in the order it runs them, and records each
    /// batch's size. Batching and order are this module's; what Redis does with a pipeline
    /// is tested against a real Redis (`bins/server/tests/it/redis.rs`).
    fn counting(
        batches: Arc<Mutex<Vec<usize>>>,
        next: Arc<Mutex<u64>>,
    ) -> impl FnMut(Vec<(ProjectId, Publication)>) -> std::future::Ready<Answers> {
        move |items| {
            batches.lock().unwrap().push(items.len());
            let mut next = next.lock().unwrap();
            std::future::ready(
                items
                    .iter()
                    .map(|_| {
                        *next += 1;
                        Ok(Published::stored(*next))
                    })
                    .collect(),
            )
        }
    }

    #[tokio::test]
    async fn whatever_is_queued_goes_as_one_batch_in_order() {
        let (jobs, queue) = mpsc::unbounded_channel();
        let publisher = Publisher { jobs };
        let project = ProjectId::parse("p").unwrap();
        // Queued before the task runs: all of them are ready at its first look.
        let answers: Vec<_> = (0..5)
            .map(|n| publisher.publish(project.clone(), publication(n)))
            .collect();
        let batches = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(run(
            queue,
            counting(Arc::clone(&batches), Arc::new(Mutex::new(0))),
        ));
        let offsets: Vec<_> = join_all(answers)
            .await
            .into_iter()
            .map(|r| r.unwrap().offset)
            .collect();
        assert_eq!(offsets, [Some(1), Some(2), Some(3), Some(4), Some(5)]);
        assert_eq!(*batches.lock().unwrap(), [5]);
        drop(publisher);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_batch_holds_at_most_max_batch_items() {
        let (jobs, queue) = mpsc::unbounded_channel();
        let publisher = Publisher { jobs };
        let project = ProjectId::parse("p").unwrap();
        let answers: Vec<_> = (0..MAX_BATCH as u64 + 3)
            .map(|n| publisher.publish(project.clone(), publication(n)))
            .collect();
        let batches = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(run(
            queue,
            counting(Arc::clone(&batches), Arc::new(Mutex::new(0))),
        ));
        let last = join_all(answers).await.pop().unwrap().unwrap();
        assert_eq!(last.offset, Some(MAX_BATCH as u64 + 3));
        assert_eq!(*batches.lock().unwrap(), [MAX_BATCH, 3]);
    }

    #[tokio::test]
    async fn a_stopped_task_answers_unavailable() {
        let (jobs, queue) = mpsc::unbounded_channel();
        let publisher = Publisher { jobs };
        drop(queue);
        let answer = publisher
            .publish(ProjectId::parse("p").unwrap(), publication(1))
            .await;
        assert!(answer.is_err());
    }
}
