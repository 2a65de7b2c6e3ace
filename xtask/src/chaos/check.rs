//! The checker of `cargo xtask chaos`: pure functions over the trace the clients and
//! publishers wrote (what each client received, what each publisher was acknowledged) and
//! the fault log the orchestration kept. It shares no code with the workload or the server.
//!
//! A client's view of one project is a chain of *sessions* (a v1 welcome or a v2
//! `subscribed`), each followed by the messages of that connection. The rules:
//!
//! 1. Order: within a session, offsets go up by exactly one from where the session starts
//!    (the `since` it recovered from, or the welcome's offset); a lower offset is a duplicate
//!    or a reorder, a higher one a gap.
//! 2. One order everywhere: one message (its unique `id`) at one (project, epoch, offset),
//!    the same for every client, and the offset its publisher was acknowledged.
//! 3. No duplicate: a client gets an id once per project, across all its sessions.
//! 4. Recovery: `recovered: true` continues the same epoch from exactly where the client was;
//!    `recovered: false` after a `since`/`epoch` is justified only by a real loss: the epoch
//!    changed and Redis lost the project's data before it (a restart without persistence,
//!    or, on a cluster, a failover of the project's shard: a primary killed or paused until
//!    its replica took over, which may not have had the last writes).
//! 5. Delivery: every acknowledged publish reached someone at its offset (or was lost with
//!    its epoch to a data loss of its project soon after it), and at the end every client is
//!    in its project's latest epoch at the newest offset. With 1 and 4, every client that
//!    stayed subscribed or recovered with `recovered: true` received every acknowledged
//!    publish of its span.
//! 6. Epochs: a project has at most one epoch more than the data losses of its own.
//!
//! A failover's losses are counted apart from a wiped Redis's: "acknowledged, then lost by a
//! failover" is what a cluster without `WAIT` allows (see docs/decisions.md), a number to
//! watch, not a violation; a failover excuses only the projects of the shard it hit.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Value, json};

/// How soon after a publish a data loss must come to excuse it from reaching anyone: a
/// healthy cluster delivers in well under a second, so an acknowledged message nobody got
/// within this long was lost by something else.
const LOSS_WINDOW_MS: u64 = 10_000;

/// One line of the trace.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// A client's subscription to `project` started (welcome or `subscribed`).
    Session {
        client: u64,
        project: String,
        /// The offset and epoch it asked to recover from, if it asked.
        since: Option<(u64, String)>,
        epoch: String,
        offset: u64,
        recovered: bool,
        lost_reason: Option<String>,
        t: u64,
    },
    /// A message as a client received it.
    Msg {
        client: u64,
        project: String,
        offset: u64,
        id: String,
    },
    /// The server ended one subscription of a v2 client (`unsubscribed`).
    Unsub { client: u64, project: String },
    /// A client's connection ended (all its sessions).
    End { client: u64 },
    /// A connection attempt failed.
    ConnectFailed,
    /// A publish was acknowledged with `offset`; `sent` is when it was sent.
    Ack {
        id: String,
        project: String,
        offset: u64,
        sent: u64,
    },
    /// A publish failed or went unanswered, and why.
    Nack { why: String },
}

/// Parses one trace line.
pub(crate) fn parse_line(line: &str) -> Result<Event, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
    let s = |k: &str| {
        v[k].as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("`{k}` missing: {line}"))
    };
    let n = |k: &str| {
        v[k].as_u64()
            .ok_or_else(|| format!("`{k}` missing: {line}"))
    };
    Ok(match v["k"].as_str() {
        Some("session") => Event::Session {
            client: n("client")?,
            project: s("project")?,
            since: match (v["since"].as_u64(), v["asked_epoch"].as_str()) {
                (Some(since), Some(epoch)) => Some((since, epoch.to_owned())),
                _ => None,
            },
            epoch: s("epoch")?,
            offset: n("offset")?,
            recovered: v["recovered"].as_bool().unwrap_or(false),
            lost_reason: v["lost_reason"].as_str().map(str::to_owned),
            t: n("t")?,
        },
        Some("msg") => Event::Msg {
            client: n("client")?,
            project: s("project")?,
            offset: n("offset")?,
            id: s("id")?,
        },
        Some("end") => Event::End {
            client: n("client")?,
        },
        Some("unsub") => Event::Unsub {
            client: n("client")?,
            project: s("project")?,
        },
        Some("connect_failed") => Event::ConnectFailed,
        Some("ack") => Event::Ack {
            id: s("id")?,
            project: s("project")?,
            offset: n("offset")?,
            sent: n("sent")?,
        },
        Some("nack") => Event::Nack {
            why: v["why"].as_str().unwrap_or("?").chars().take(40).collect(),
        },
        _ => return Err(format!("unknown event: {line}")),
    })
}

/// A fault the orchestration injected, at `t` (ms since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fault {
    pub(crate) kind: String,
    pub(crate) t: u64,
    /// Whether Redis may have lost data: a restart without persistence, or a failover.
    pub(crate) data_loss: bool,
    /// The projects whose data it may have lost: `None`, all (a wiped Redis); a failover,
    /// those whose slot the failed primary served.
    pub(crate) projects: Option<Vec<String>>,
    /// When it was over (ms since the Unix epoch; `t` for an instant one). A paused primary
    /// may take writes after `SIGCONT` until it learns it was replaced: those are lost too.
    pub(crate) until: u64,
}

impl Fault {
    /// A fault that loses nothing, or everything (`data_loss`), at `t`.
    #[cfg(test)]
    pub(crate) fn at(kind: &str, t: u64, data_loss: bool) -> Self {
        Self {
            kind: kind.to_owned(),
            t,
            data_loss,
            projects: None,
            until: t,
        }
    }

    /// Whether it may have lost data of `project`.
    fn loses(&self, project: &str) -> bool {
        self.data_loss
            && self
                .projects
                .as_ref()
                .is_none_or(|list| list.iter().any(|p| p == project))
    }

    /// A failover: a loss of some projects only.
    fn is_failover(&self) -> bool {
        self.data_loss && self.projects.is_some()
    }
}

/// Where one client is in one project.
#[derive(Debug, Default)]
struct Chain {
    /// The epoch and the last offset received (or started from), once a session started.
    position: Option<(String, u64)>,
    /// Whether a session is open (its connection has not ended).
    open: bool,
    ids: HashSet<String>,
}

/// What the checker counted and found.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) clients: usize,
    pub(crate) sessions: u64,
    /// Sessions of a client in a project it had a session of before (a v2 client's
    /// reconnection counts once per subscription).
    pub(crate) reconnects: u64,
    pub(crate) connect_failures: u64,
    pub(crate) acked: u64,
    pub(crate) nacked: u64,
    /// Publishes not acknowledged, by what the publisher saw.
    pub(crate) nacked_by: BTreeMap<String, u64>,
    pub(crate) deliveries_checked: u64,
    pub(crate) recovered_true: u64,
    /// `recovered: false` after a `since`, by reason.
    pub(crate) recovered_false: BTreeMap<String, u64>,
    /// Acknowledged publishes nobody received, lost with their epoch to a data loss.
    pub(crate) acked_lost_to_data_loss: u64,
    /// Of those, the ones lost by a failover of their project's shard (cluster only): the
    /// primary acknowledged them and died (or was replaced) before its replica had them.
    pub(crate) acked_lost_to_failover: u64,
    /// Acknowledged publishes nobody received, published into a project's new epoch (after
    /// a data loss) before any client was subscribed to it: those that came back got
    /// `recovered: false` and a start above them, as SPEC §4 says.
    pub(crate) acked_before_anyone_in_new_epoch: u64,
    /// Messages received whose publish was not acknowledged (it failed or timed out on the
    /// publisher's side after Redis took it): allowed, counted.
    pub(crate) delivered_unacked: u64,
    pub(crate) epochs: BTreeMap<String, usize>,
    pub(crate) violations: Vec<String>,
}

impl Report {
    /// The counts as JSON (violations: their number and the first 50).
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "clients": self.clients,
            "sessions": self.sessions,
            "resubscriptions": self.reconnects,
            "connect_failures": self.connect_failures,
            "publishes_acked": self.acked,
            "publishes_not_acked": self.nacked,
            "publishes_not_acked_by": self.nacked_by,
            "deliveries_checked": self.deliveries_checked,
            "recovered_true": self.recovered_true,
            "recovered_false": self.recovered_false,
            "acked_lost_to_data_loss": self.acked_lost_to_data_loss,
            "acked_lost_to_failover": self.acked_lost_to_failover,
            "acked_before_anyone_in_new_epoch": self.acked_before_anyone_in_new_epoch,
            "delivered_unacked": self.delivered_unacked,
            "epochs_per_project": self.epochs,
            "violations": self.violations.len(),
            "violation_samples": self.violations.iter().take(50).collect::<Vec<_>>(),
        })
    }
}

/// Judges a trace (in the order it was recorded) against the fault log.
pub(crate) fn check(events: &[Event], faults: &[Fault]) -> Report {
    let mut r = Report::default();
    let mut chains: HashMap<(u64, String), Chain> = HashMap::new();
    // (project, epoch, offset) -> id, and id -> (project, epoch, offset).
    let mut at: HashMap<(String, String, u64), String> = HashMap::new();
    let mut placed: HashMap<String, (String, String, u64)> = HashMap::new();
    // Per project: its epochs in the order first seen, and the newest offset of each.
    let mut epochs: HashMap<String, Vec<String>> = HashMap::new();
    let mut tops: HashMap<(String, String), u64> = HashMap::new();
    // Per (project, epoch): when its first session started, and the lowest start of any.
    let mut joined: HashMap<(String, String), (u64, u64)> = HashMap::new();
    let mut clients: HashSet<u64> = HashSet::new();
    let mut acks = Vec::new();
    let loss_before = |project: &str, t: u64| faults.iter().any(|f| f.loses(project) && f.t <= t);
    let mut note_epoch = |project: &str, epoch: &str| {
        let list = epochs.entry(project.to_owned()).or_default();
        if !list.iter().any(|e| e == epoch) {
            list.push(epoch.to_owned());
        }
    };

    for event in events {
        match event {
            Event::Session {
                client,
                project,
                since,
                epoch,
                offset,
                recovered,
                lost_reason,
                t,
            } => {
                r.sessions += 1;
                clients.insert(*client);
                if chains.contains_key(&(*client, project.clone())) {
                    r.reconnects += 1;
                }
                note_epoch(project, epoch);
                let top = tops.entry((project.clone(), epoch.clone())).or_insert(0);
                *top = (*top).max(*offset);
                let chain = chains.entry((*client, project.clone())).or_default();
                if chain.open {
                    r.violations.push(format!(
                        "client {client} {project}: a second session while one is open"
                    ));
                }
                chain.open = true;
                let start = match since {
                    None => *offset,
                    Some((since, asked)) => {
                        if chain.position.as_ref() != Some(&(asked.clone(), *since)) {
                            r.violations.push(format!(
                                "client {client} {project}: recovered from {asked}/{since}, but it was at {:?}",
                                chain.position
                            ));
                        }
                        if *recovered {
                            r.recovered_true += 1;
                            if asked != epoch {
                                r.violations.push(format!(
                                    "client {client} {project}: recovered: true from epoch {asked} into epoch {epoch}"
                                ));
                            }
                            *since
                        } else {
                            let reason = lost_reason.clone().unwrap_or_else(|| {
                                if asked == epoch {
                                    "out_of_range".to_owned()
                                } else {
                                    "epoch_changed".to_owned()
                                }
                            });
                            *r.recovered_false.entry(reason.clone()).or_default() += 1;
                            if asked == epoch || !loss_before(project, *t) {
                                r.violations.push(format!(
                                    "client {client} {project}: recovered: false ({reason}) from {asked}/{since} into {epoch}/{offset} without a data loss before it"
                                ));
                            }
                            *offset
                        }
                    }
                };
                chain.position = Some((epoch.clone(), start));
                let first = joined
                    .entry((project.clone(), epoch.clone()))
                    .or_insert((*t, start));
                first.1 = first.1.min(start);
            }
            Event::Msg {
                client,
                project,
                offset,
                id,
            } => {
                r.deliveries_checked += 1;
                let chain = chains.entry((*client, project.clone())).or_default();
                let Some((epoch, last)) = chain.position.clone().filter(|_| chain.open) else {
                    r.violations.push(format!(
                        "client {client} {project}: message {id} at {offset} outside a session"
                    ));
                    continue;
                };
                if !chain.ids.insert(id.clone()) {
                    r.violations.push(format!(
                        "client {client} {project}: duplicate {id} at {offset}"
                    ));
                } else if *offset <= last {
                    r.violations.push(format!(
                        "client {client} {project}: reorder: {id} at {offset} after {last}"
                    ));
                } else if *offset > last + 1 {
                    r.violations.push(format!(
                        "client {client} {project}: gap: {} message(s) missing before {id} at {offset} (epoch {epoch})",
                        offset - last - 1
                    ));
                }
                if *offset > last {
                    chain.position = Some((epoch.clone(), *offset));
                }
                let top = tops.entry((project.clone(), epoch.clone())).or_insert(0);
                *top = (*top).max(*offset);
                let key = (project.clone(), epoch.clone(), *offset);
                match at.get(&key) {
                    Some(other) if other != id => r.violations.push(format!(
                        "{project} {epoch}/{offset}: client {client} got {id}, another client got {other}"
                    )),
                    Some(_) => {}
                    None => {
                        at.insert(key.clone(), id.clone());
                    }
                }
                match placed.get(id) {
                    Some(other) if *other != key => r.violations.push(format!(
                        "{id}: at {key:?} for client {client}, at {other:?} for another"
                    )),
                    Some(_) => {}
                    None => {
                        placed.insert(id.clone(), key);
                    }
                }
            }
            Event::Unsub { client, project } => {
                if let Some(chain) = chains.get_mut(&(*client, project.clone())) {
                    chain.open = false;
                }
            }
            Event::End { client } => {
                for ((c, _), chain) in &mut chains {
                    if c == client {
                        chain.open = false;
                    }
                }
            }
            Event::ConnectFailed => r.connect_failures += 1,
            Event::Ack { .. } => {
                r.acked += 1;
                acks.push(event);
            }
            Event::Nack { why } => {
                r.nacked += 1;
                *r.nacked_by.entry(why.clone()).or_default() += 1;
            }
        }
    }
    r.clients = clients.len();

    let mut acked_ids = HashSet::new();
    for ack in acks {
        let Event::Ack {
            id,
            project,
            offset,
            sent,
        } = ack
        else {
            continue;
        };
        acked_ids.insert(id.clone());
        match placed.get(id) {
            Some((p, _, o)) if p == project && o == offset => {}
            Some(where_) => r.violations.push(format!(
                "{id}: acknowledged at {project}/{offset}, delivered at {where_:?}"
            )),
            None if faults.iter().any(|f| lost_by(f, project, *sent)) => {
                r.acked_lost_to_data_loss += 1;
                if faults
                    .iter()
                    .filter(|f| lost_by(f, project, *sent))
                    .all(Fault::is_failover)
                {
                    r.acked_lost_to_failover += 1;
                }
            }
            None if new_epoch_unwatched(&joined, faults, project, *offset, *sent) => {
                r.acked_before_anyone_in_new_epoch += 1;
            }
            None => r.violations.push(format!(
                "{id}: acknowledged at {project}/{offset}, delivered to nobody"
            )),
        }
    }
    r.delivered_unacked = placed.keys().filter(|id| !acked_ids.contains(*id)).count() as u64;

    // Each project's latest epoch and newest offset; every client must end there.
    for (project, list) in &epochs {
        r.epochs.insert(project.clone(), list.len());
        let losses = faults.iter().filter(|f| f.loses(project)).count();
        if list.len() > losses + 1 {
            r.violations.push(format!(
                "{project}: {} epochs with {losses} data loss(es)",
                list.len()
            ));
        }
    }
    let mut ends: Vec<_> = chains.iter().collect();
    ends.sort_by(|a, b| a.0.cmp(b.0));
    for ((client, project), chain) in ends {
        let latest = epochs.get(project).and_then(|l| l.last());
        let (Some(latest), Some((epoch, last))) = (latest, &chain.position) else {
            continue;
        };
        let top = tops
            .get(&(project.clone(), latest.clone()))
            .copied()
            .unwrap_or(0);
        if epoch != latest || *last != top {
            r.violations.push(format!(
                "client {client} {project}: ended at {epoch}/{last}, the newest is {latest}/{top}"
            ));
        }
    }
    r
}

/// Whether `fault` may have lost a publish of `project` sent at `sent`: it lost the project's
/// data within [`LOSS_WINDOW_MS`] after the publish, or while the publish was in it.
fn lost_by(fault: &Fault, project: &str, sent: u64) -> bool {
    fault.loses(project) && fault.until >= sent && fault.t.saturating_sub(sent) <= LOSS_WINDOW_MS
}

/// Whether the publish at `offset` of `project`, sent at `sent` after a data loss, went into
/// an epoch nobody watched at that offset: every epoch of the project first joined between
/// the latest loss before `sent` and the next one had all its sessions start at or above
/// `offset`.
fn new_epoch_unwatched(
    joined: &HashMap<(String, String), (u64, u64)>,
    faults: &[Fault],
    project: &str,
    offset: u64,
    sent: u64,
) -> bool {
    let Some(loss) = faults
        .iter()
        .filter(|f| f.loses(project) && f.t <= sent)
        .map(|f| f.t)
        .max()
    else {
        return false;
    };
    let next = faults
        .iter()
        .filter(|f| f.loses(project) && f.t > sent)
        .map(|f| f.t)
        .min()
        .unwrap_or(u64::MAX);
    joined
        .iter()
        .filter(|((p, _), (first, _))| p == project && *first >= loss && *first < next)
        .all(|(_, (_, lowest))| *lowest >= offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(client: u64, since: Option<(u64, &str)>, epoch: &str, offset: u64) -> Event {
        Event::Session {
            client,
            project: "p".to_owned(),
            since: since.map(|(s, e)| (s, e.to_owned())),
            epoch: epoch.to_owned(),
            offset,
            recovered: since.is_some_and(|(_, e)| e == epoch),
            lost_reason: None,
            t: 100,
        }
    }

    fn msg(client: u64, offset: u64, id: &str) -> Event {
        Event::Msg {
            client,
            project: "p".to_owned(),
            offset,
            id: id.to_owned(),
        }
    }

    fn ack(id: &str, offset: u64) -> Event {
        Event::Ack {
            id: id.to_owned(),
            project: "p".to_owned(),
            offset,
            sent: 50,
        }
    }

    /// Two clients, one reconnecting with recovery: the clean trace every test breaks.
    fn clean() -> Vec<Event> {
        vec![
            session(0, None, "E", 0),
            session(1, None, "E", 0),
            msg(0, 1, "a"),
            msg(1, 1, "a"),
            ack("a", 1),
            Event::End { client: 1 },
            msg(0, 2, "b"),
            ack("b", 2),
            session(1, Some((1, "E")), "E", 2),
            msg(1, 2, "b"),
            msg(0, 3, "c"),
            msg(1, 3, "c"),
            ack("c", 3),
        ]
    }

    fn violations(events: &[Event], faults: &[Fault]) -> Vec<String> {
        check(events, faults).violations
    }

    /// Fails unless one of `violations` says `what`.
    #[track_caller]
    fn assert_violation(violations: &[String], what: &str) {
        assert!(
            violations.iter().any(|v| v.contains(what)),
            "no violation says {what:?}: {violations:?}"
        );
    }

    #[test]
    fn a_clean_trace_passes() {
        let r = check(&clean(), &[]);
        assert_eq!(r.violations, Vec::<String>::new());
        assert_eq!(
            (r.clients, r.sessions, r.reconnects, r.deliveries_checked),
            (2, 3, 1, 6)
        );
        assert_eq!((r.acked, r.recovered_true), (3, 1));
    }

    #[test]
    fn a_gap_fails() {
        let mut t = clean();
        t.remove(9); // client 1 misses "b" after recovering
        let v = violations(&t, &[]);
        assert_violation(&v, "gap: 1 message(s) missing before c");
    }

    #[test]
    fn a_duplicate_fails() {
        let mut t = clean();
        t.insert(7, msg(0, 2, "b"));
        let v = violations(&t, &[]);
        assert_violation(&v, "duplicate b");
    }

    #[test]
    fn a_reorder_fails() {
        let mut t = clean();
        t.swap(10, 6); // client 0 gets c before b
        let v = violations(&t, &[]);
        assert_violation(&v, "gap");
        assert_violation(&v, "reorder: b at 2 after 3");
    }

    #[test]
    fn two_messages_at_one_offset_fail() {
        let mut t = clean();
        t[3] = msg(1, 1, "z");
        let v = violations(&t, &[]);
        assert_violation(&v, "client 1 got z, another client got a");
    }

    #[test]
    fn an_ack_at_another_offset_or_delivered_to_nobody_fails() {
        let mut t = clean();
        t[4] = ack("a", 7);
        t.push(ack("lost", 4));
        let v = violations(&t, &[]);
        assert_violation(&v, "a: acknowledged at p/7");
        assert_violation(&v, "lost: acknowledged at p/4, delivered to nobody");
        // A data loss soon after the publish excuses the lost one (not the wrong offset);
        // one long after it does not.
        let loss = |t| Fault::at("redis-wipe", t, true);
        let v = violations(&t, &[loss(60)]);
        assert_eq!(v.len(), 1, "{v:?}");
        let v = violations(&t, &[loss(50 + LOSS_WINDOW_MS + 1)]);
        assert_eq!(v.len(), 2, "{v:?}");
    }

    #[test]
    fn recovered_false_needs_a_data_loss() {
        let mut t = clean();
        t[8] = session(1, Some((1, "E")), "F", 0);
        t.truncate(9);
        let v = violations(&t, &[]);
        assert_violation(&v, "recovered: false (epoch_changed)");
        assert_violation(&v, "2 epochs with 0 data loss");
        let loss = Fault::at("redis-wipe", 90, true);
        let r = check(&t, &[loss]);
        // Client 0 stayed in the old epoch: it did not end in the newest one.
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].contains("client 0 p: ended at E/2, the newest is F/0"));
        assert_eq!(r.recovered_false.get("epoch_changed"), Some(&1));
        // Same epoch, recovered: false: out of range, never justified here.
        let mut t = clean();
        t[8] = Event::Session {
            client: 1,
            project: "p".to_owned(),
            since: Some((1, "E".to_owned())),
            epoch: "E".to_owned(),
            offset: 2,
            recovered: false,
            lost_reason: None,
            t: 100,
        };
        let v = violations(&t, &[]);
        assert_violation(&v, "recovered: false (out_of_range)");
    }

    #[test]
    fn an_ack_into_a_new_epoch_before_anyone_came_back_is_excused() {
        let loss = Fault::at("redis-wipe", 110, true);
        let after = |offset| Event::Ack {
            id: format!("n{offset}"),
            project: "p".to_owned(),
            offset,
            sent: 120,
        };
        let rejoin = |client, since, offset| Event::Session {
            client,
            project: "p".to_owned(),
            since: Some((since, "E".to_owned())),
            epoch: "F".to_owned(),
            offset,
            recovered: false,
            lost_reason: Some("epoch_changed".to_owned()),
            t: 130,
        };
        let mut t = clean();
        t.extend([
            Event::End { client: 0 },
            Event::End { client: 1 },
            after(1),
            rejoin(0, 3, 1),
            rejoin(1, 3, 1),
        ]);
        let r = check(&t, std::slice::from_ref(&loss));
        assert_eq!(r.violations, Vec::<String>::new());
        assert_eq!(r.acked_before_anyone_in_new_epoch, 1);
        // A later loss, and an epoch after it joined at 0, do not change that.
        let later = Fault::at("redis-wipe", 200, true);
        let mut t2 = t.clone();
        t2.extend([
            Event::End { client: 0 },
            Event::Session {
                client: 0,
                project: "p".to_owned(),
                since: Some((1, "F".to_owned())),
                epoch: "G".to_owned(),
                offset: 0,
                recovered: false,
                lost_reason: Some("epoch_changed".to_owned()),
                t: 210,
            },
        ]);
        let r = check(&t2, &[loss.clone(), later]);
        // (Within 10 s of the later loss, it counts as lost to it; excused either way.)
        assert_eq!(
            r.acked_before_anyone_in_new_epoch + r.acked_lost_to_data_loss,
            1,
            "{:?}",
            r.violations
        );
        assert!(
            !r.violations.iter().any(|v| v.contains("n1")),
            "{:?}",
            r.violations
        );
        // One client already in the new epoch at offset 0: it should have got it.
        t[17] = rejoin(1, 3, 0);
        let v = violations(&t, &[loss]);
        assert_violation(&v, "n1: acknowledged at p/1, delivered to nobody");
    }

    #[test]
    fn a_failover_excuses_the_losses_of_its_shards_projects_only() {
        let failover = |projects: &[&str], t, until| Fault {
            kind: "cluster-primary-sigkill".to_owned(),
            t,
            data_loss: true,
            projects: Some(projects.iter().map(|p| (*p).to_owned()).collect()),
            until,
        };
        let mut t = clean();
        t.push(ack("lost", 4));
        // Another shard's failover excuses nothing of p.
        let v = violations(&t, &[failover(&["q"], 60, 60)]);
        assert_violation(&v, "lost: acknowledged at p/4, delivered to nobody");
        // Its own shard's does, counted as a failover's loss.
        let r = check(&t, &[failover(&["q", "p"], 60, 60)]);
        assert_eq!(r.violations, Vec::<String>::new());
        assert_eq!(
            (r.acked_lost_to_data_loss, r.acked_lost_to_failover),
            (1, 1)
        );
        // A publish sent while the primary was paused (after `t`, before `until`) too.
        let r = check(&t, &[failover(&["p"], 40, 70)]);
        assert_eq!(r.violations, Vec::<String>::new());
        // Not one sent after it was over.
        let v = violations(&t, &[failover(&["p"], 30, 45)]);
        assert_eq!(v.len(), 1, "{v:?}");
        // A wiped Redis is a loss of every project, not a failover's.
        let r = check(&t, &[Fault::at("redis-wipe", 60, true)]);
        assert_eq!(
            (r.acked_lost_to_data_loss, r.acked_lost_to_failover),
            (1, 0)
        );

        // recovered: false into a new epoch: justified by its shard's failover only.
        let mut t = clean();
        t[8] = session(1, Some((1, "E")), "F", 0);
        t.truncate(9);
        let v = violations(&t, &[failover(&["q"], 90, 90)]);
        assert_violation(&v, "recovered: false (epoch_changed)");
        assert_violation(&v, "2 epochs with 0 data loss");
        let v = violations(&t, &[failover(&["p"], 90, 95)]);
        assert!(
            !v.iter()
                .any(|v| v.contains("recovered: false") || v.contains("epochs with")),
            "{v:?}"
        );
    }

    #[test]
    fn an_unsubscribed_v2_subscription_may_subscribe_again() {
        let mut t = clean();
        // Client 1's subscription ends and restarts on the same connection.
        t[5] = Event::Unsub {
            client: 1,
            project: "p".to_owned(),
        };
        let r = check(&t, &[]);
        assert_eq!(r.violations, Vec::<String>::new());
        // Without the `unsub`, a second session on an open one is a violation.
        t.remove(5);
        let v = violations(&t, &[]);
        assert_violation(&v, "a second session while one is open");
    }

    #[test]
    fn a_client_left_behind_fails() {
        let mut t = clean();
        t.remove(11); // client 1 never gets c
        let v = violations(&t, &[]);
        assert_eq!(v, ["client 1 p: ended at E/2, the newest is E/3"]);
    }

    #[test]
    fn recovering_from_the_wrong_place_fails() {
        let mut t = clean();
        t[8] = session(1, Some((0, "E")), "E", 2);
        let v = violations(&t, &[]);
        assert_violation(&v, "recovered from E/0, but it was at");
    }

    #[test]
    fn parses_the_trace_format() {
        let line = r#"{"k":"session","client":3,"node":1,"v2":true,"project":"p","since":4,"asked_epoch":"E","epoch":"E","offset":9,"recovered":true,"lost_reason":null,"t":5}"#;
        assert_eq!(
            parse_line(line),
            Ok(Event::Session {
                client: 3,
                project: "p".to_owned(),
                since: Some((4, "E".to_owned())),
                epoch: "E".to_owned(),
                offset: 9,
                recovered: true,
                lost_reason: None,
                t: 5,
            })
        );
        assert_eq!(
            parse_line(r#"{"k":"msg","client":1,"project":"p","offset":2,"id":"x"}"#),
            Ok(msg(1, 2, "x"))
        );
        assert!(parse_line(r#"{"k":"msg","client":1}"#).is_err());
        assert!(parse_line("nope").is_err());
    }
}
