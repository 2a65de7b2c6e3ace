//! One publish, whoever sends it: a client over its WebSocket (`connection.rs`) or the
//! backend over the HTTP API (the server's `api.rs`). Both come through [`publish`], so a
//! message is stamped, timed, counted and its failure logged in one place; each caller only
//! turns the outcome into its own answer (an `ack` or `error` frame, a `202` or `503`).

use std::time::Instant;

use tracing::debug;
use ws_core::ProjectId;
use ws_core::envelope::Payload;

use crate::broker::{Broker, BrokerError, Publication};
use crate::hub::SharedHub;

/// What a client is told when the broker failed, over the WebSocket or HTTP. The broker's
/// own error (a Redis error text, an address) goes to the log, never to a client.
pub const BROKER_UNAVAILABLE_MESSAGE: &str = "the message broker is unavailable; retry later";

/// Publishes `data` from `from` to `project`: the broker gives it the project's next
/// offset, keeps it and delivers it to every member. Returns the offset.
///
/// ```
/// use futures_util::FutureExt;
/// use ws_core::{AdmissionConfig, HubConfig, ProjectId, envelope::Payload};
/// use ws_transport::{MemoryBroker, SharedHub, publish::publish};
///
/// let hub = SharedHub::new(HubConfig::default(), AdmissionConfig::default(), 1);
/// let broker = MemoryBroker::new(hub.clone(), Default::default(), 1);
/// let project = ProjectId::parse("p").unwrap();
/// let data = Payload::from_json("1".to_owned()).unwrap();
/// // The memory broker answers at once.
/// let published = publish(&hub, &broker, &project, "api".to_owned(), data).now_or_never();
/// assert!(matches!(published, Some(Ok(1))));
/// ```
pub async fn publish(
    hub: &SharedHub,
    broker: &dyn Broker,
    project: &ProjectId,
    from: String,
    data: Payload,
) -> Result<u64, BrokerError> {
    let started = Instant::now();
    match broker.publish(project, Publication::new(from, data)).await {
        Ok(offset) => {
            hub.metrics().published(started.elapsed());
            Ok(offset)
        }
        Err(e) => {
            hub.metrics().broker_error();
            debug!(%project, error = %e, "publish failed");
            Err(e)
        }
    }
}
