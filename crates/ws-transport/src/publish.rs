//! One publish, whoever sends it: a client over its WebSocket (`connection.rs`) or the
//! backend over the HTTP API (the server's `api.rs`). Both come through [`publish`], so a
//! message is stamped, timed, counted and its failure logged in one place; each caller only
//! turns the outcome into its own answer (an `ack` or `error` frame, a `202` or `503`).

use std::time::Instant;

use tracing::debug;
use ws_core::envelope::Payload;
use ws_core::{ConnId, ProjectId};

use crate::broker::{Broker, BrokerError, Publication};
use crate::hub::SharedHub;

/// What a client is told when the broker failed, over the WebSocket or HTTP. The broker's
/// own error (a Redis error text, an address) goes to the log, never to a client.
pub const BROKER_UNAVAILABLE_MESSAGE: &str = "the message broker is unavailable; retry later";

/// Publishes `data` from `from` to `project`: the broker gives it the project's next
/// offset, keeps it and delivers it to every member (but the connection `except`, for a
/// v2 `echo: false`). Returns the offset.
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
/// let published = publish(&hub, &broker, &project, "api".to_owned(), data, None).now_or_never();
/// assert!(matches!(published, Some(Ok(1))));
/// ```
pub async fn publish(
    hub: &SharedHub,
    broker: &dyn Broker,
    project: &ProjectId,
    from: String,
    data: Payload,
    except: Option<ConnId>,
) -> Result<u64, BrokerError> {
    let started = Instant::now();
    let mut publication = Publication::new(from, data);
    publication.except = except;
    match broker.publish(project, publication).await {
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
