//! This node's part of the cluster's presence: per project, a hash user → connections in
//! Redis that expires `presence_ttl` after its last refresh, rewritten when the node's
//! members change (checked every tick, and at once when a connection joins) and refreshed
//! every `presence_ttl / 3`. Each write also goes to the cluster's membership
//! (`cluster.rs`), and each tick runs the cluster's reaping and remote reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::debug;
use ws_core::{ProjectId, UserId};

use crate::inner::Inner;

/// The longest a change in this node's members takes to reach Redis.
const TICK: Duration = Duration::from_secs(1);
/// Joins close together are written together.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// The projects this node announces.
#[derive(Debug, Default)]
pub(crate) struct Presence {
    projects: Mutex<HashMap<ProjectId, Announced>>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct Announced {
    /// Bumped by every join, so an entry is not dropped while a join is being written.
    joins: u64,
    /// What Redis holds for this node, once written.
    written: Option<Vec<(UserId, u32)>>,
    /// When the announcement must be written again to outlive its TTL.
    refresh_at: Option<Instant>,
}

impl Presence {
    fn lock(&self) -> MutexGuard<'_, HashMap<ProjectId, Announced>> {
        self.projects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection joined `project` on this node.
    pub(crate) fn announce(&self, project: &ProjectId) {
        self.lock().entry(project.clone()).or_default().joins += 1;
        self.wake.notify_one();
    }

    /// Everything must be written again (Redis may have lost it).
    pub(crate) fn refresh_all(&self) {
        for announced in self.lock().values_mut() {
            announced.refresh_at = None;
        }
        self.wake.notify_one();
    }

    /// The projects this node has announced members of.
    pub(crate) fn announced(&self) -> Vec<ProjectId> {
        self.lock()
            .iter()
            .filter(|(_, a)| a.written.as_ref().is_some_and(|w| !w.is_empty()))
            .map(|(p, _)| p.clone())
            .collect()
    }
}

/// The presence task: writes this node's announcements and checks Redis' health.
pub(crate) async fn maintain(inner: Arc<Inner>) {
    let tick = (inner.config.presence_ttl / 3).clamp(Duration::from_millis(100), TICK);
    let mut next_tick = tokio::time::Instant::now();
    loop {
        let full = tokio::select! {
            () = tokio::time::sleep_until(next_tick) => true,
            () = inner.presence.wake.notified() => {
                tokio::time::sleep(DEBOUNCE).await;
                false
            }
        };
        if full {
            next_tick = tokio::time::Instant::now() + tick;
            inner.health_check().await;
        }
        sync(&inner, full).await;
        if full {
            crate::cluster::tick(&inner).await;
        }
    }
}

/// Writes the announcements that changed or are due; with `full`, checks every project for
/// leaves too, otherwise only the projects with new joins.
async fn sync(inner: &Inner, full: bool) {
    let now = Instant::now();
    let candidates: Vec<Candidate> = inner
        .presence
        .lock()
        .iter()
        .filter(|(_, a)| full || a.written.is_none() || a.joins > 0)
        .map(|(p, a)| Candidate {
            project: p.clone(),
            joins: a.joins,
            written: a.written.clone(),
            due: a.refresh_at.is_none_or(|at| now >= at),
        })
        .collect();
    let refresh = inner.config.presence_ttl / 3;
    for Candidate {
        project,
        joins,
        written,
        due,
    } in candidates
    {
        let local = inner.hub.presence(&project);
        let nothing_to_withdraw = local.is_empty() && written.as_ref().is_none_or(Vec::is_empty);
        if nothing_to_withdraw {
            forget(inner, &project, joins);
            continue;
        }
        if written.as_ref() == Some(&local) && !due {
            reset_joins(inner, &project, joins);
            continue;
        }
        // The presence list's announcement, then the cluster's membership (`cluster.rs`).
        let written = match inner.announce(&project, &local).await {
            Ok(()) => crate::cluster::announce(inner, &project, &local).await,
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => {
                if local.is_empty() {
                    forget(inner, &project, joins);
                } else {
                    let mut projects = inner.presence.lock();
                    if let Some(a) = projects.get_mut(&project) {
                        a.joins -= joins.min(a.joins);
                        a.written = Some(local);
                        a.refresh_at = Some(now + refresh);
                    }
                }
            }
            Err(e) => {
                debug!(project = %project, error = %e, "presence not written; retrying next tick");
                return;
            }
        }
    }
}

struct Candidate {
    project: ProjectId,
    joins: u64,
    written: Option<Vec<(UserId, u32)>>,
    due: bool,
}

/// Drops a project with nothing announced, unless a connection joined meanwhile.
fn forget(inner: &Inner, project: &ProjectId, joins: u64) {
    let mut projects = inner.presence.lock();
    if projects.get(project).is_some_and(|a| a.joins <= joins) {
        projects.remove(project);
    }
}

fn reset_joins(inner: &Inner, project: &ProjectId, joins: u64) {
    if let Some(a) = inner.presence.lock().get_mut(project) {
        a.joins -= joins.min(a.joins);
    }
}
