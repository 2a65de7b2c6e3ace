//! The life of one v2 connection (`GET /ws`, SPEC §10): many project subscriptions, the
//! personal stream and in-band requests over one socket.
//!
//! ```text
//!  upgrade ─► open_session (admission) ─► welcome ─► query subscriptions ─► pumps ─► unsubscribe all
//!
//!  read pump:  text ─► Client (v2: budgets) ─► Event::Request ─► Session::check ─► the request
//!              subscribe: Subscriptions::handle_subscribe ─► hub.subscribe ─► Broker::recover
//!                         ─► handle_recovered ─► `subscribed` + replay into `pending`
//!  write pump: pending first, then the outbox through Subscriptions::handle_frame
//! ```
//!
//! Every decision is `ws-core`'s: the request budgets and faults ([`Client`] with
//! [`Protocol::V2`]), what the token allows ([`Session`]), and the no-gap, no-duplicate merge
//! of each subscription's replay with its live frames ([`Subscriptions`]). Each subscription
//! is a member of its project's hub shard under a member id of its own; its frames carry
//! that id ([`Outgoing::member`]) so the write pump knows which subscription they belong to.
//!
//! Requests are handled one at a time, in the order they arrive (the read pump awaits each),
//! so a subscription's recovery is never overtaken by a later request of the same client.
//! Publishes are the exception: they are pipelined ([`InFlight`]), each sent to the broker
//! without waiting for the previous answer, up to the core's window, and answered in order;
//! any other request waits until the publishes before it are answered, so its answer
//! follows theirs.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use tracing::debug;
use tungstenite::{Message, Utf8Bytes};
use ws_core::client::{Event, Protocol};
use ws_core::envelope::code;
use ws_core::envelope::v2::{self, Recover, Request, ServerFrame, Target, with_project};
use ws_core::grants::Operation;
use ws_core::namespace::Namespaces;
use ws_core::session::{Denied, RefreshRefused};
use ws_core::subscriptions::{Output, RecoveredRange, Verdict};
use ws_core::{
    Client, Close, ConnId, Grants, IdempotencyKey, ProjectId, Session, Subscriptions, UserId,
};

use crate::broker::{Broker, HistoryQuery, Position, Publication, Published};
use crate::config::TransportConfig;
use crate::connection::{deadline, new_client_until, presence_frame, refuse};
use crate::hub::{Member, Refused, SharedHub};
use crate::outbox::{Commands, NO_MEMBER, Outbox, Outgoing};
use crate::publish::{BROKER_UNAVAILABLE_MESSAGE, InFlight, publish};
use crate::pump;
use crate::socket::PendingUpgrade;
use crate::traffic::{Traffic, Written};
use crate::tungstenite;

/// Who a v2 connection belongs to and what it asked for, decided before the upgrade.
#[derive(Debug, Clone)]
pub struct AdmittedSession {
    /// The user id (the token's `sub`).
    pub user: UserId,
    /// What the token allows (its `projects`, `caps` and `personal` claims).
    pub grants: Grants,
    /// When the token stops being valid (expiry plus leeway): 4001 then, unless a
    /// `refresh` moved it. `None` when expiry is not enforced on open connections.
    pub expires_at: Option<SystemTime>,
    /// The subscriptions of the query (`subscribe=p1,p2` with `since.<p>`/`epoch.<p>`),
    /// already checked against the grants: each is answered like an in-band `subscribe`.
    pub subscribe: Vec<(Target, Recover)>,
    /// The peer's address, for operators.
    pub remote: Option<SocketAddr>,
}

/// A token that a `refresh` presented, verified.
#[derive(Debug, Clone)]
pub struct Renewed {
    /// Its `sub`: it must be the connection's user.
    pub user: UserId,
    /// What it allows.
    pub grants: Grants,
    /// Its `exp`, seconds since the Unix epoch, repeated in the `refreshed` answer.
    pub exp: u64,
    /// When the connection must close with 4001 now (expiry plus leeway); `None` when
    /// expiry is not enforced.
    pub expires_at: Option<SystemTime>,
}

/// Verifies the token of an in-band `refresh` as the handshake would have: signature, time
/// claims, issuer, audience, and the shape of its grants. The server implements it with its
/// verifier; without one, `refresh` answers `invalid_token`.
pub trait Reauthorize: Send + Sync + fmt::Debug + 'static {
    /// The verified token, or why it is refused (said to the client in the `error` frame:
    /// never the token itself).
    fn reauthorize(&self, token: &str) -> Result<Renewed, String>;
}

/// The state of one v2 connection that both pumps reach, under one lock.
struct State {
    session: Session,
    subs: Subscriptions<Utf8Bytes>,
    /// Written before anything taken from the outbox: `subscribed` frames and replays.
    pending: Vec<Utf8Bytes>,
    /// A refreshed token's deadline, for the core (applied by the write pump).
    expiry: Option<Option<Instant>>,
}

/// The application the pumps of a v2 connection serve.
struct SessionApp<'a> {
    conn: ConnId,
    user: &'a UserId,
    hub: &'a SharedHub,
    broker: &'a dyn Broker,
    config: &'a TransportConfig,
    namespaces: &'a Namespaces,
    reauthorize: Option<&'a dyn Reauthorize>,
    outbox: &'a Arc<Outbox>,
    state: Mutex<State>,
    traffic: Traffic,
    /// The client's publishes in flight, answered in order.
    in_flight: InFlight<'a>,
}

/// The write pump's batch.
#[derive(Default)]
struct SessionBatch {
    taken: Vec<Outgoing>,
    commands: Commands,
    /// Publishes answered in this batch, for the core.
    answers: usize,
    /// The frames to write, in order, once the subscriptions had their say.
    frames: Vec<Utf8Bytes>,
    oldest: Option<Instant>,
}

impl pump::Application for SessionApp<'_> {
    type Batch = SessionBatch;
    type Written = Written;

    fn on_text(&self, client: &mut Client, now: Instant, text: Utf8Bytes) {
        self.traffic.received(self.hub, text.len());
        client.handle_text(now, text.as_str());
        self.in_flight.set_window_full(client.publish_window_full());
    }

    fn on_binary(&self, client: &mut Client, now: Instant, data: Bytes) {
        client.handle_binary(now, data.len());
    }

    fn on_event(&self, event: Event) -> impl Future<Output = ()> + Send {
        // Boxed: inline, a broker round trip's state would sit in every idle connection's
        // task. Returned as the box itself, not awaited in an `async fn`, whose state would
        // hold the event a second time next to the box, in the read pump of every
        // connection (as the v1 connection's does).
        Box::pin(async move {
            let Event::Request(request) = event else {
                return;
            };
            if matches!(request, Request::Publish { .. }) {
                self.start_publish(request);
                self.in_flight.started().await;
                return;
            }
            self.in_flight.drained().await;
            self.handle(request).await;
        })
    }

    fn take(&self, batch: &mut SessionBatch) {
        for key in self.outbox.take_ended() {
            self.end_subscription(key);
        }
        batch.commands = self.outbox.take(&mut batch.taken, self.config.batch_frames);
        if batch.commands.waiting > 0 {
            self.hub.metrics().queue_depth(batch.commands.waiting);
        }
        // Behind the frames taken from the outbox: a message the memory broker delivered
        // while publishing goes out before its ack (unless a backlog longer than a batch
        // holds it; answers never wait for the outbox to empty).
        batch.answers = self
            .in_flight
            .take(&mut batch.taken, |frame| Outgoing::answer(frame, false));
    }

    fn apply(&self, batch: &mut SessionBatch, client: &mut Client, now: Instant) {
        if batch.answers > 0 {
            for _ in 0..std::mem::take(&mut batch.answers) {
                client.handle_publish_answered();
            }
            self.in_flight.taken(client.publish_window_full());
        }
        let mut state = self.lock();
        if let Some(at) = state.expiry.take() {
            client.handle_refresh(at);
        }
        // A recovery's `subscribed` and replay go first: the frames taken with them are
        // later than the read that produced them (the merge drops the overlap). Taken, not
        // appended: the buffer of a burst is not kept.
        batch.frames.extend(std::mem::take(&mut state.pending));
        let mut overflow = false;
        let subs = &mut state.subs;
        for outgoing in batch.taken.drain(..) {
            if outgoing.member == NO_MEMBER {
                batch.frames.push(outgoing.frame);
                continue;
            }
            let bytes = outgoing.frame.len();
            match subs.handle_frame(outgoing.member, outgoing.offset, outgoing.frame, bytes) {
                Verdict::Deliver(frame) => {
                    batch.oldest = batch.oldest.or(outgoing.accepted);
                    batch.frames.push(frame);
                }
                Verdict::Held | Verdict::Drop => {}
                Verdict::Overflow => overflow = true,
            }
        }
        drop(state);
        if overflow {
            self.hub.metrics().slow_consumer();
            self.outbox.close(Close::slow_consumer());
        }
        batch.commands.apply(&mut batch.frames, client, now);
    }

    fn emit(&self, batch: &mut SessionBatch, out: &mut Vec<Message>) -> Written {
        let bytes = batch.frames.iter().map(|f| f.len()).sum();
        out.extend(batch.frames.drain(..).map(Message::Text));
        pump::release_burst(&mut batch.frames);
        pump::release_burst(&mut batch.taken);
        Written {
            bytes,
            oldest: batch.oldest.take(),
        }
    }

    fn written(&self, written: Written, frames: usize) {
        self.traffic.wrote(self.hub, written, frames);
    }

    fn has_frames(&self) -> bool {
        self.outbox.has_frames() || !self.lock().pending.is_empty() || self.in_flight.has_answers()
    }

    async fn ready(&self) {
        // The publishes in flight are driven here, while the write pump waits.
        tokio::select! {
            () = self.outbox.ready() => {}
            () = self.in_flight.progress() => {}
        }
    }
}

impl SessionApp<'_> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A `publish` that passed the core's budgets: checked, then sent to the broker without
    /// waiting for the answer, which [`InFlight`] queues in order (a refusal too).
    fn start_publish(&self, request: Request) {
        let Request::Publish {
            id,
            target,
            data,
            key,
            ephemeral,
            echo,
        } = request
        else {
            return;
        };
        let refuse = |code: &str, message: &str| {
            let frame = ServerFrame::Error {
                id: id.as_deref(),
                project: Some(target.as_str()),
                code,
                message,
            };
            self.in_flight.answer(frame.to_json().into());
        };
        let policy = match &target {
            Target::Project(project) => self.namespaces.policy(project),
            Target::Personal => self.namespaces.defaults(),
        };
        let checked = self.lock().session.check_publish(&target, &policy);
        let project = match checked {
            Ok(project) => project,
            Err(denied) => return refuse(denied.code(), denied.message()),
        };
        // The request parser checked the key's length already.
        let key = match key.as_deref().map(IdempotencyKey::parse).transpose() {
            Ok(key) => key,
            Err(e) => return refuse(code::INVALID_KEY, &e.to_string()),
        };
        let mut publication = Publication::new(self.user.as_str().to_owned(), data);
        publication.key = key;
        publication.ephemeral = ephemeral;
        publication.except = (!echo).then_some(self.conn);
        let (hub, broker) = (self.hub, self.broker);
        let answer = async move {
            let name = Session::wire_name(&project);
            let id = id.as_deref();
            let frame = match publish(hub, broker, &project, publication).await {
                Ok(Published { offset, duplicate }) => ServerFrame::Ack {
                    id,
                    project: name,
                    offset,
                    duplicate,
                }
                .to_json(),
                Err(_) => broker_unavailable(id, name),
            };
            frame.into()
        };
        self.in_flight.start(answer);
    }

    /// One request that passed the core's budgets, other than a `publish`.
    async fn handle(&self, request: Request) {
        match request {
            Request::Subscribe {
                id,
                target,
                recovery,
            } => self.subscribe(id.as_deref(), &target, &recovery).await,
            Request::Unsubscribe { id, target } => self.unsubscribe(id.as_deref(), &target),
            Request::Presence { id, target } => {
                let id = id.as_deref();
                let checked = self.lock().session.check(&target, Operation::Presence);
                let project = match checked {
                    Ok(project) => project,
                    Err(denied) => return self.deny(id, &target, denied),
                };
                let name = Session::wire_name(&project);
                let local = self.hub.presence(&project);
                let frame = match self.broker.presence(&project, local).await {
                    Ok(users) => {
                        let users = users.iter().map(|(u, _)| u.as_str()).collect();
                        ServerFrame::presence_sync(id, name, users).to_json()
                    }
                    Err(e) => {
                        debug!(error = %e, "presence request failed");
                        broker_unavailable(id, name)
                    }
                };
                self.answer(frame);
            }
            Request::History {
                id,
                target,
                since,
                limit,
                reverse,
            } => {
                let id = id.as_deref();
                let checked = self.lock().session.check(&target, Operation::History);
                let project = match checked {
                    Ok(project) => project,
                    Err(denied) => return self.deny(id, &target, denied),
                };
                let name = Session::wire_name(&project);
                let query = HistoryQuery {
                    since: since.unwrap_or(0),
                    limit: Some(limit),
                    reverse,
                };
                let frame = match self.broker.history(&project, query).await {
                    Ok(page) => {
                        let framed: Vec<String> = page
                            .messages
                            .iter()
                            .map(|m| with_project(name, &m.frame))
                            .collect();
                        let raw: Vec<&serde_json::value::RawValue> = framed
                            .iter()
                            .filter_map(|f| serde_json::from_str(f).ok())
                            .collect();
                        ServerFrame::History {
                            id,
                            project: name,
                            epoch: &page.epoch,
                            offset: page.top,
                            complete: page.complete,
                            messages: raw,
                        }
                        .to_json()
                    }
                    Err(e) => {
                        debug!(error = %e, "history request failed");
                        broker_unavailable(id, name)
                    }
                };
                self.answer(frame);
            }
            Request::Refresh { id, token } => self.refresh(id.as_deref(), &token),
            // Pings are answered by the core; nothing else is raised.
            _ => {}
        }
    }

    /// `subscribe`: the grant, the table, the hub, then the broker's recovery, merged.
    async fn subscribe(&self, id: Option<&str>, target: &Target, recovery: &Recover) {
        let ticket = {
            let mut state = self.lock();
            let project = match state.session.check(target, Operation::Subscribe) {
                Ok(project) => project,
                Err(denied) => {
                    drop(state);
                    return self.deny(id, target, denied);
                }
            };
            // The hub's id of the project, when it has one: held for as long as the
            // subscription, it then costs no allocation of its own.
            let project = self.hub.canonical(&project).unwrap_or(project);
            match state.subs.handle_subscribe(project, self.hub.next_conn()) {
                Ok(ticket) => ticket,
                Err(e) => {
                    drop(state);
                    let message = e.to_string();
                    return self.refuse_request(id, Some(target.as_str()), e.code(), &message);
                }
            }
        };
        let (key, project) = (ticket.member(), ticket.project().clone());
        // Registered first, so every publish from now on reaches the outbox; the recovery
        // read next overlaps it, and the merge drops the overlap.
        let registered = self.hub.subscribe(
            key,
            &project,
            self.user,
            Member {
                outbox: Arc::clone(self.outbox),
                conn: self.conn,
            },
        );
        if registered.announce_join && !project.is_personal() {
            self.hub.deliver(
                &project,
                None,
                presence_frame("join", self.user),
                Some(self.conn),
            );
        }
        let position = match recovery {
            Recover::Since { offset, epoch } => Position::Since {
                offset: *offset,
                epoch,
            },
            Recover::Last(n) => Position::Last(*n),
            _ => Position::Latest,
        };
        let name = Session::wire_name(&project);
        match self.broker.recover(&project, position).await {
            Ok(replay) => {
                let missed: Vec<(u64, Utf8Bytes)> = replay
                    .missed
                    .iter()
                    .map(|m| (m.offset, with_project(name, &m.frame).into()))
                    .collect();
                let subscribed: Utf8Bytes = ServerFrame::Subscribed {
                    id,
                    project: name,
                    epoch: &replay.epoch,
                    offset: replay.top,
                    recovered: replay.recovered,
                    missed: missed.len() as u64,
                    lost_reason: replay.lost,
                }
                .to_json()
                .into();
                {
                    let mut guard = self.lock();
                    let state = &mut *guard;
                    state.subs.handle_recovered(
                        ticket,
                        RecoveredRange {
                            top: replay.top,
                            missed,
                        },
                    );
                    while let Some(output) = state.subs.poll_output() {
                        match output {
                            Output::Recovered { .. } => state.pending.push(subscribed.clone()),
                            Output::Frame(frame) => state.pending.push(frame),
                            _ => {}
                        }
                    }
                }
                self.outbox.wake();
            }
            Err(e) => {
                debug!(%project, error = %e, "recovery failed; the subscription is refused");
                let removed = {
                    let mut state = self.lock();
                    state.subs.handle_recovery_failed(ticket)
                };
                if removed {
                    self.leave(key, &project);
                }
                self.answer(broker_unavailable(id, name));
            }
        }
    }

    fn unsubscribe(&self, id: Option<&str>, target: &Target) {
        let (project, key) = {
            let mut state = self.lock();
            let project = state.session.resolve(target);
            let Ok(key) = state.subs.handle_unsubscribe(&project) else {
                drop(state);
                return self.refuse_request(
                    id,
                    Some(target.as_str()),
                    code::NOT_SUBSCRIBED,
                    "not subscribed to this project",
                );
            };
            (project, key)
        };
        self.leave(key, &project);
        self.answer(
            ServerFrame::Unsubscribed {
                id,
                project: Session::wire_name(&project),
                reason: None,
            }
            .to_json(),
        );
    }

    /// `refresh`: a new token moves the 4001 deadline and may revoke subscriptions; a bad
    /// one, or another user's, changes nothing.
    fn refresh(&self, id: Option<&str>, token: &str) {
        let Some(reauthorize) = self.reauthorize else {
            return self.refuse_request(
                id,
                None,
                code::INVALID_TOKEN,
                "this server does not renew tokens in band; reconnect with the new token",
            );
        };
        let renewed = match reauthorize.reauthorize(token) {
            Ok(renewed) => renewed,
            Err(message) => return self.refuse_request(id, None, code::INVALID_TOKEN, &message),
        };
        let revoked: Vec<(ProjectId, Option<ConnId>)> = {
            let mut state = self.lock();
            let state = &mut *state;
            let subscribed: Vec<ProjectId> = state.subs.iter().map(|(_, p)| p.clone()).collect();
            let revoked =
                match state
                    .session
                    .handle_refresh(&renewed.user, renewed.grants, subscribed.iter())
                {
                    Ok(revoked) => revoked,
                    Err(refused @ RefreshRefused::OtherUser) => {
                        drop(subscribed);
                        let message = refused.to_string();
                        return self.refuse_request(id, None, code::INVALID_TOKEN, &message);
                    }
                    Err(_) => return,
                };
            state.expiry = Some(deadline(Instant::now(), renewed.expires_at));
            revoked
                .into_iter()
                .map(|project| {
                    let key = state.subs.remove(&project);
                    (project, key)
                })
                .collect()
        };
        for (project, key) in revoked {
            if let Some(key) = key {
                self.leave(key, &project);
            }
            self.answer(
                ServerFrame::Unsubscribed {
                    id: None,
                    project: Session::wire_name(&project),
                    reason: Some(v2::UnsubscribeReason::Forbidden),
                }
                .to_json(),
            );
        }
        self.answer(
            ServerFrame::Refreshed {
                id,
                exp: renewed.exp,
            }
            .to_json(),
        );
    }

    /// The hub ended the subscription it knows as `key` (an operator closed its project):
    /// it ends here too, with `unsubscribed` `closed`, and the connection carries on.
    fn end_subscription(&self, key: ConnId) {
        let project = {
            let mut state = self.lock();
            let Some(project) = state.subs.handle_ended(key) else {
                return;
            };
            project
        };
        self.leave(key, &project);
        self.answer(
            ServerFrame::Unsubscribed {
                id: None,
                project: Session::wire_name(&project),
                reason: Some(v2::UnsubscribeReason::Closed),
            }
            .to_json(),
        );
    }

    /// Unregisters one subscription, and tells the project when the user's last one left.
    fn leave(&self, key: ConnId, project: &ProjectId) {
        let Some(gone) = self.hub.unsubscribe(key, project) else {
            return;
        };
        if gone.announce_leave && !project.is_personal() {
            self.hub
                .deliver(project, None, presence_frame("leave", self.user), None);
        }
    }

    fn deny(&self, id: Option<&str>, target: &Target, denied: Denied) {
        self.refuse_request(id, Some(target.as_str()), denied.code(), denied.message());
    }

    fn refuse_request(&self, id: Option<&str>, project: Option<&str>, code: &str, message: &str) {
        self.answer(
            ServerFrame::Error {
                id,
                project,
                code,
                message,
            }
            .to_json(),
        );
    }

    /// Queues a frame for this connection alone. It counts towards the slow-consumer limits
    /// like a broadcast: a client that asks and never reads is closed with 4008.
    fn answer(&self, frame: String) {
        let depth = self.outbox.push(Outgoing::answer(frame.into(), false));
        if self.hub.is_over(depth) {
            self.hub.metrics().slow_consumer();
            self.outbox.close(Close::slow_consumer());
        }
    }
}

/// The `error` frame for a failed broker call (the cause is logged where it failed).
fn broker_unavailable(id: Option<&str>, project: &str) -> String {
    ServerFrame::Error {
        id,
        project: Some(project),
        code: code::BROKER_UNAVAILABLE,
        message: BROKER_UNAVAILABLE_MESSAGE,
    }
    .to_json()
}

/// Runs a v2 connection from the finished upgrade to its last byte.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would copy its arguments into its future"
)]
pub(crate) fn run(
    upgrade: PendingUpgrade,
    hub: SharedHub,
    broker: Arc<dyn Broker>,
    config: Arc<TransportConfig>,
    reauthorize: Option<Arc<dyn Reauthorize>>,
    conn: ConnId,
    who: AdmittedSession,
) -> impl Future<Output = ()> + Send {
    async move {
        let mut ws = match upgrade.finish().await {
            Ok(ws) => ws,
            Err(e) => {
                debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let opened_at = Instant::now();
        let outbox = Arc::new(Outbox::new(opened_at, who.remote));
        if let Err(Refused(close)) = hub.open_session(conn, &who.user, Arc::clone(&outbox)) {
            debug!(%close, "connection refused after the upgrade");
            refuse(ws, &close, &config).await;
            return;
        }
        let welcome = ServerFrame::welcome(
            conn.0,
            who.user.as_str(),
            config.client.ping_interval.as_millis() as u64,
        )
        .to_json();
        let deadline_at = Instant::now() + config.client.write_timeout;
        let sent = pump::write_all(&mut ws, [Message::text(welcome)], deadline_at).await;
        if !matches!(sent, Ok(Ok(()))) {
            debug!("the welcome could not be written");
            hub.close_session(conn);
            return;
        }
        let AdmittedSession {
            user,
            grants,
            expires_at,
            subscribe,
            remote: _,
        } = who;
        let app = SessionApp {
            conn,
            user: &user,
            hub: &hub,
            broker: &*broker,
            config: &config,
            namespaces: &config.namespaces,
            reauthorize: reauthorize.as_deref(),
            outbox: &outbox,
            state: Mutex::new(State {
                session: Session::new(user.clone(), grants),
                subs: Subscriptions::new(config.subscriptions),
                pending: Vec::new(),
                expiry: None,
            }),
            traffic: Traffic::default(),
            in_flight: InFlight::new(),
        };
        for (target, recovery) in &subscribe {
            app.subscribe(None, target, recovery).await;
        }
        drop(subscribe);
        let client = new_client_until(config.client_for(Protocol::V2), expires_at);
        let pump::Ended { closed, socket } = pump::run(ws, &app, client, config.linger).await;
        let subscriptions: Vec<(ConnId, ProjectId)> = {
            let state = app.lock();
            state.subs.iter().map(|(key, p)| (key, p.clone())).collect()
        };
        for (key, project) in &subscriptions {
            app.leave(*key, project);
        }
        hub.close_session(conn);
        // The welcome went out before the pumps.
        app.traffic.closed(&hub, &closed, opened_at.elapsed(), 1);
        if let Some(ws) = socket {
            pump::linger(ws, config.linger).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use ws_core::grants::Grants;

    use super::*;
    use crate::testing::{Parts, connection_parts, size_of_future};

    /// Every idle v2 connection is one task holding this future, the largest part of its
    /// memory. The bound fails when a change makes it grow, so that growth is a decision.
    #[tokio::test]
    async fn a_session_future_stays_small() {
        let Parts {
            hub,
            broker,
            config,
            pending,
        } = connection_parts();
        let who = AdmittedSession {
            user: UserId::new("u"),
            grants: Grants::all(),
            expires_at: None,
            subscribe: Vec::new(),
            remote: None,
        };
        let future = run(pending, hub, broker, config, None, ConnId(1), who);
        let size = size_of_future(&future);
        // 2 616 bytes when the bound was first set (2 624 in a debug build): with tokio's
        // header and trailer, the span and the tracker's token the task was in jemalloc's
        // 3 072-byte class (an idle v2 connection: 4.7 KiB of RSS in `idle-subs`). Under
        // ~2 380 it is in the 2 560-byte one: 2 320 (2 312 in a release build) since the
        // pumps lock a boxed WebSocket instead of holding `split()`'s halves and
        // `on_event` returns its box instead of awaiting it beside the event (4.2 KiB).
        assert!(size <= 2_320, "the session future grew to {size} bytes");
    }
}
