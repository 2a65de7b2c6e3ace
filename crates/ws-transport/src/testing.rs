//! What the unit tests of a connection's task share: the parts it is built from, and the
//! size of its future (every idle connection is one task holding it).

use std::future::Future;
use std::sync::Arc;

use ws_core::history::HistoryConfig;
use ws_core::{AdmissionConfig, HubConfig};

use crate::TransportConfig;
use crate::broker::{Broker, MemoryBroker};
use crate::hub::SharedHub;
use crate::socket::PendingUpgrade;

/// A hub, a memory broker, the default configuration and an upgrade that was accepted but
/// not finished: what `connection::run` and `session::run` take besides the caller's claims.
pub(crate) struct Parts {
    pub(crate) hub: SharedHub,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) config: Arc<TransportConfig>,
    pub(crate) pending: PendingUpgrade,
}

pub(crate) fn connection_parts() -> Parts {
    let hub = SharedHub::new(HubConfig::default(), AdmissionConfig::default(), 1);
    let broker: Arc<dyn Broker> =
        Arc::new(MemoryBroker::new(hub.clone(), HistoryConfig::default(), 1));
    let config = Arc::new(TransportConfig::default());
    let mut req = http::Request::builder()
        .header(http::header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
        .body(())
        .unwrap();
    let (_, pending) = crate::socket::upgrade(&mut req, &config).unwrap();
    Parts {
        hub,
        broker,
        config,
        pending,
    }
}

/// The size of `future`'s type, without polling it.
pub(crate) fn size_of_future<F: Future>(_: &F) -> usize {
    size_of::<F>()
}
