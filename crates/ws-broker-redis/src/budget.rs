//! The deployment's history budget (`history.max_total_bytes`) on Redis.
//!
//! ```text
//!  publish script ──► {offset, the project's bytes, ms} ──► Report on a channel (no wait)
//!  account task:   every 100 ms, one ACCOUNT script for the batch      (keys `{*}`: one slot)
//!                  → the total; over the budget? wake the sweeper
//!  sweeper task:   every second or when woken, on the node holding the `{*}:sweeper` lock:
//!                  FORGET (streams whose history expired), then, over the budget, the 500
//!                  oldest streams → ws_core::retention::Budget::plan → one CUT per stream
//!                  (free: DEL meta + history; trim: LPOP) → FORGET / ACCOUNT the result
//! ```
//!
//! The publish script never touches these keys: in a Redis Cluster they live in another
//! slot than the project's. On a cluster the budget stays one for the deployment: its keys
//! share the `{*}` tag, so they sit on one shard, and every script here touches only them
//! (ACCOUNT, FORGET) or only one project's keys (CUT); the per-project reads of a sweep go
//! to each project's own shard (`Inner::query_each`). That shard takes one ACCOUNT per node
//! per 100 ms and one sweep a second: little next to the publishes spread over all shards. The price is a lag: the total can run over the budget by what
//! the deployment publishes in one account interval plus one sweep (each node reports its
//! own publishes; the sweep itself takes a few round trips per freed stream).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, warn};
use ws_core::ProjectId;
use ws_core::retention::{Budget, Cut, Usage};

use crate::inner::Inner;

/// How often a node sends its publishes' reports.
const ACCOUNT_EVERY: Duration = Duration::from_millis(100);
/// How often the sweeper looks even when not woken (expired histories, other nodes' excess).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How many of the oldest streams one sweep considers.
const CANDIDATES: isize = 500;

/// What a publish (or a trim) left in a project's history.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) project: ProjectId,
    pub(crate) bytes: u64,
    pub(crate) ms: u64,
}

/// Sends this node's reports in batches; the newest report of a project wins.
pub(crate) async fn account(inner: Arc<Inner>, mut reports: mpsc::UnboundedReceiver<Report>) {
    let mut batch: HashMap<ProjectId, (u64, u64)> = HashMap::new();
    while let Some(first) = reports.recv().await {
        batch.insert(first.project, (first.bytes, first.ms));
        tokio::time::sleep(ACCOUNT_EVERY).await;
        while let Ok(r) = reports.try_recv() {
            let entry = batch.entry(r.project).or_insert((r.bytes, r.ms));
            if r.ms >= entry.1 {
                *entry = (r.bytes, r.ms);
            }
        }
        let items: Vec<_> = batch.drain().collect();
        match inner.account(&items).await {
            Ok(total) => inner.budget_total(total),
            // Values are absolute: the next report of each project heals this one.
            Err(e) => warn!(error = %e, "could not report history bytes to redis"),
        }
    }
}

/// Frees or trims the deployment's oldest streams while over the budget.
pub(crate) async fn sweep(inner: Arc<Inner>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(SWEEP_EVERY) => {}
            () = inner.sweep_now.notified() => {}
        }
        if let Err(e) = inner.sweep_budget().await {
            debug!(error = %e, "history budget sweep failed; trying again later");
        }
    }
}

impl Inner {
    pub(crate) fn report(&self, project: &ProjectId, bytes: u64, ms: u64) {
        let _ = self.reports.send(Report {
            project: project.clone(),
            bytes,
            ms,
        });
    }

    fn budget_total(&self, total: u64) {
        self.hub.metrics().set_history_bytes(total);
        if Budget::new(self.config.max_total_bytes).is_over(total) {
            self.sweep_now.notify_one();
        }
    }

    async fn account(&self, items: &[(ProjectId, (u64, u64))]) -> Result<u64, crate::BrokerError> {
        let mut invocation = self.scripts.account.prepare_invoke();
        invocation
            .key(self.keys.streams())
            .key(self.keys.stream_bytes())
            .key(self.keys.total_bytes());
        for (project, (bytes, ms)) in items {
            invocation.arg(project.as_str()).arg(*bytes).arg(*ms);
        }
        let invocation = &invocation;
        self.call(true, |mut c| async move {
            invocation.invoke_async::<u64>(&mut c).await
        })
        .await
    }

    /// Forgets the `freed` streams (project, ms seen) and those whose history expired;
    /// returns the total.
    async fn forget(&self, freed: &[(ProjectId, u64)]) -> Result<u64, crate::BrokerError> {
        let mut invocation = self.scripts.forget.prepare_invoke();
        invocation
            .key(self.keys.streams())
            .key(self.keys.stream_bytes())
            .key(self.keys.total_bytes())
            // A stream is forgotten once even the longest-lived namespace's history of it
            // would have expired.
            .arg(crate::inner::millis(self.config.longest_history_ttl()));
        for (project, ms) in freed {
            invocation.arg(project.as_str()).arg(*ms);
        }
        let invocation = &invocation;
        self.call(true, |mut c| async move {
            invocation.invoke_async::<u64>(&mut c).await
        })
        .await
    }

    async fn sweep_budget(&self) -> Result<(), crate::BrokerError> {
        let lock = self.keys.sweeper();
        let node = self.node.clone();
        let mine: Option<String> = self
            .call(true, |mut c| {
                let (lock, node) = (lock.clone(), node.clone());
                async move {
                    redis::cmd("SET")
                        .arg(&lock)
                        .arg(&node)
                        .arg("NX")
                        .arg("PX")
                        .arg(5000)
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        if mine.is_none() {
            return Ok(()); // another node sweeps now
        }
        let result = self.sweep_locked().await;
        let _ = self
            .call(true, |mut c| {
                let lock = lock.clone();
                async move { redis::cmd("DEL").arg(&lock).query_async::<()>(&mut c).await }
            })
            .await;
        result
    }

    async fn sweep_locked(&self) -> Result<(), crate::BrokerError> {
        let budget = Budget::new(self.config.max_total_bytes);
        let mut total = self.forget(&[]).await?;
        self.hub.metrics().set_history_bytes(total);
        // A few rounds: each considers the oldest streams left.
        for _ in 0..8 {
            if !budget.is_over(total) {
                return Ok(());
            }
            let streams = self.keys.streams();
            let oldest: Vec<(String, u64)> = self
                .call(true, |mut c| {
                    let streams = streams.clone();
                    async move {
                        redis::cmd("ZRANGE")
                            .arg(&streams)
                            .arg(0)
                            .arg(CANDIDATES - 1)
                            .arg("WITHSCORES")
                            .query_async(&mut c)
                            .await
                    }
                })
                .await?;
            if oldest.is_empty() {
                return Ok(());
            }
            let projects: Vec<ProjectId> = oldest
                .iter()
                .filter_map(|(p, _)| ProjectId::parse_stream(p))
                .collect();
            let (bytes, members) = self.usage_of(&projects).await?;
            // The plan compares ages only: Redis milliseconds mapped onto one instant.
            let base = Instant::now();
            let usage = oldest
                .iter()
                .filter_map(|(p, ms)| Some((ProjectId::parse_stream(p)?, *ms)))
                .zip(bytes.into_iter().zip(members))
                .map(|((project, ms), (bytes, has_members))| Usage {
                    last_append: base + Duration::from_millis(ms),
                    key: (project, ms),
                    bytes,
                    has_members,
                })
                .collect();
            let cuts = budget.plan(total, usage);
            if cuts.is_empty() {
                return Ok(());
            }
            let mut freed = Vec::new();
            for ((project, ms), cut) in cuts {
                let drop = match cut {
                    Cut::Free => 0,
                    Cut::Trim { bytes } => bytes.max(1),
                };
                match self.cut(&project, ms, drop).await? {
                    -1 => {}
                    _ if drop == 0 => freed.push((project, ms)),
                    left => self.report(&project, left as u64, ms),
                }
            }
            let n = freed.len();
            total = self.forget(&freed).await?;
            self.hub.metrics().set_history_bytes(total);
            debug!(freed = n, total, "history budget sweep");
        }
        Ok(())
    }

    /// The bytes and whether any node announces members, of each of `projects`.
    async fn usage_of(
        &self,
        projects: &[ProjectId],
    ) -> Result<(Vec<u64>, Vec<bool>), crate::BrokerError> {
        let key = self.keys.stream_bytes();
        let bytes: Vec<Option<u64>> = self
            .call(true, |mut c| {
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(&key);
                for p in projects {
                    cmd.arg(p.as_str());
                }
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        // Announcements are scored by when they expire: a live one is in the future. Each
        // project's set is in its own slot: one pipeline on a single Redis, one command each
        // on a cluster (`Inner::query_each`).
        let now = crate::inner::unix_millis();
        let counts = projects
            .iter()
            .map(|p| {
                let mut cmd = redis::cmd("ZCOUNT");
                cmd.arg(self.keys.presence(p)).arg(now).arg("+inf");
                cmd
            })
            .collect();
        let members: Vec<u64> = self.query_each(counts).await?;
        Ok((
            bytes.into_iter().map(Option::unwrap_or_default).collect(),
            members.into_iter().map(|n| n > 0).collect(),
        ))
    }

    async fn cut(
        &self,
        project: &ProjectId,
        ms: u64,
        drop: u64,
    ) -> Result<i64, crate::BrokerError> {
        let mut invocation = self.scripts.cut.prepare_invoke();
        invocation
            .key(self.keys.meta(project))
            .key(self.keys.history(project))
            .key(self.keys.presence(project))
            .arg(ms)
            .arg(drop);
        let invocation = &invocation;
        self.call(true, |mut c| async move {
            invocation.invoke_async::<i64>(&mut c).await
        })
        .await
    }
}
