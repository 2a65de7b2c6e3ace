//! One publish, whoever sends it: a client over its WebSocket (`connection.rs`) or the
//! backend over the HTTP API (the server's `api.rs`). Both come through [`publish`] (or
//! [`publish_batch`] for `POST /api/messages`), so a message is stamped, timed, counted and
//! its failure logged in one place; each caller only turns the outcome into its own answer
//! (an `ack` or `error` frame, a `202` or `503`, a batch's result).

use std::time::Instant;

use tracing::debug;
use ws_core::ProjectId;

use crate::broker::{Broker, BrokerError, Publication, Published};
use crate::hub::SharedHub;

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
