//! The socket event handlers: connect, `join`, `chat`, disconnect.
//!
//! socketioxide spawns one task per event, so two events from one socket could run in any
//! order. A chat client expects its messages stored in the order it sent them, so events are
//! instead queued, synchronously and in arrival order, into one inbound [`Lane`] per socket,
//! handled one at a time. The lane's bound is the socket's in-flight limit: a client that
//! sends faster than its events are stored gets `rate_limited`.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use serde_json::json;
use socketioxide::{
    adapter::LocalAdapter,
    extract::{AckSender, SocketRef, State, TryData},
    handler::{FromMessage, FromMessageParts, MessageHandler, Value},
    socket::Socket,
};
use tokio_util::sync::CancellationToken;

use super::{
    auth::{AckMode, Guest, Session},
    channel_events, connecting, delivery,
    lane::{Lane, LaneWork},
};
use crate::{
    bus::Attachment,
    chat::{Accepted, Origin},
    config::AuthMode,
    domain::{ChatError, ClientCommand, ErrorCode, UserId, WireEvent},
    limits::TokenBucket,
    state::AppState,
};

/// The events a client may send through the inbound queue (`ack` bypasses it).
#[derive(Debug, Clone, Copy)]
enum EventName {
    Join,
    Chat,
}

/// One received event, waiting its turn.
struct Inbound {
    name: EventName,
    socket: SocketRef,
    data: Result<serde_json::Value, String>,
    ack: AckSender,
    wants_ack: bool,
}

/// A socket's event-rate bucket (in its extensions; absent when the limit is off).
#[derive(Clone)]
struct EventRate(Arc<TokenBucket>);

/// A socket's inbound lane (in the socket's extensions). Opened by [`on_connect`]: socketioxide
/// marks a socket connected only after the client has heard so, and a socket not yet marked
/// cannot emit, so an event answered before then would lose its `error` event.
#[derive(Clone)]
struct InboundLane(Arc<Lane<Inbound, InboundWork>>);

/// Handles a socket's `join` and `chat` events, in order.
struct InboundWork {
    state: AppState,
}

impl LaneWork<Inbound> for InboundWork {
    async fn handle(&self, event: Inbound) {
        self.state.metrics.events_in.inc();
        match event.name {
            EventName::Join => on_join(event, &self.state).await,
            EventName::Chat => on_chat(event, &self.state).await,
        }
    }
}

/// A socket whose channel is subscribed but whose delivery task has not started yet: the
/// subscription must be active before the client hears it is connected, while emitting must
/// wait until it is.
#[derive(Clone)]
struct PendingDelivery(Arc<Mutex<Option<(UserId, Attachment)>>>);

/// This socket's delivery task, stopped on disconnect.
#[derive(Clone)]
struct Delivering {
    stop: CancellationToken,
}

/// The message handler for `join` and `chat`: queues the event in arrival order.
#[derive(Clone)]
struct Sequenced {
    name: EventName,
    state: AppState,
}

impl MessageHandler<LocalAdapter, Sequenced> for Sequenced {
    fn call(&self, socket: Arc<Socket<LocalAdapter>>, value: Value, ack_id: Option<i64>) {
        let (socket, ack, data) = unpack(socket, value, ack_id);
        let Some(InboundLane(lane)) = socket.extensions.get::<InboundLane>() else {
            return; // disconnecting
        };
        let wants_ack = ack_id.is_some();
        let Some(ack) = within_rate(&socket, &self.state, ack, wants_ack) else {
            return;
        };
        let inbound = Inbound {
            name: self.name,
            socket,
            data,
            ack,
            wants_ack,
        };
        if let Err(refused) = lane.push(inbound) {
            let limit = ChatError::new(
                ErrorCode::RateLimited,
                "too many events in flight on this socket; wait for acks",
            );
            reply(
                &refused.socket,
                &self.state,
                refused.ack,
                wants_ack,
                None,
                Err(limit),
            );
        }
    }
}

/// The handler of `ack {"Seq": N}` (contract §15): a cumulative-ack socket has processed every
/// stored event up to N. Handled at once, outside the inbound queue: it only raises a number
/// the delivery task reads when it next confirms, so it needs neither ordering with `chat`
/// events nor a task of its own.
#[derive(Clone)]
struct CumulativeAck {
    state: AppState,
}

impl MessageHandler<LocalAdapter, CumulativeAck> for CumulativeAck {
    fn call(&self, socket: Arc<Socket<LocalAdapter>>, value: Value, ack_id: Option<i64>) {
        let (socket, ack, data) = unpack(socket, value, ack_id);
        // Counted like every other event, so a flood of (bad) acks is not answered one for one.
        let Some(ack) = within_rate(&socket, &self.state, ack, ack_id.is_some()) else {
            return;
        };
        let result = match socket.extensions.get::<delivery::ClientAcks>() {
            None => Err(ChatError::bad_request(
                "ack is for sockets that connected with acks: \"cumulative\"",
            )),
            Some(client) => match data.ok().as_ref().and_then(acked_seq) {
                Some(seq) => {
                    client.ack(seq);
                    Ok(None)
                }
                None => Err(ChatError::bad_request(
                    "ack takes {\"Seq\": N}, N a non-negative integer",
                )),
            },
        };
        reply(&socket, &self.state, ack, ack_id.is_some(), None, result);
    }
}

/// The socket, ack sender and payload of one received event.
pub(super) fn unpack(
    socket: Arc<Socket<LocalAdapter>>,
    mut value: Value,
    ack_id: Option<i64>,
) -> (SocketRef, AckSender, Result<serde_json::Value, String>) {
    let Ok(ack) = AckSender::from_message_parts(&socket, &mut value, &ack_id);
    let TryData(data) =
        match TryData::<serde_json::Value>::from_message(socket.clone(), value, ack_id) {
            Ok(data) => data,
            Err(never) => match never {},
        };
    (
        SocketRef::from(socket),
        ack,
        data.map_err(|e| e.to_string()),
    )
}

/// Takes one event from the socket's rate bucket and gives `ack` back; when the bucket is
/// empty, answers `rate_limited` (into `ack` when the client asked for one) instead.
pub(super) fn within_rate(
    socket: &SocketRef,
    state: &AppState,
    ack: AckSender,
    wants_ack: bool,
) -> Option<AckSender> {
    let within = socket
        .extensions
        .get::<EventRate>()
        .is_none_or(|rate| rate.0.try_take());
    if within {
        return Some(ack);
    }
    let limit = ChatError::new(
        ErrorCode::RateLimited,
        "too many events per second on this socket; slow down",
    );
    reply(socket, state, ack, wants_ack, None, Err(limit));
    None
}

/// N of `{"Seq": N}`.
fn acked_seq(data: &serde_json::Value) -> Option<u64> {
    data.get("Seq")?.as_u64()
}

/// Connect middleware, run after authentication and before the client hears it is
/// connected: installs the handlers and, for an authenticated socket, subscribes its user's
/// channel (see [`super::register`]).
pub async fn install_handlers(
    socket: SocketRef,
    State(state): State<AppState>,
) -> Result<(), ChatError> {
    let work = InboundWork {
        state: state.clone(),
    };
    let lane = Lane::new(
        work,
        state.settings.socket_inflight,
        state.tasks.clone(),
        false,
    );
    socket.extensions.insert(InboundLane(lane));
    if state.settings.socket_rate > 0.0 {
        let bucket = TokenBucket::new(state.settings.socket_rate, state.settings.socket_burst);
        socket.extensions.insert(EventRate(Arc::new(bucket)));
    }
    for (event, name) in [("chat", EventName::Chat), ("join", EventName::Join)] {
        socket.on(
            event,
            Sequenced {
                name,
                state: state.clone(),
            },
        );
    }
    // Before the client hears it is connected, so its first `ack` always finds this.
    if socket.extensions.get::<AckMode>() == Some(AckMode::Cumulative) {
        socket.extensions.insert(delivery::ClientAcks::default());
    }
    socket.on(
        "ack",
        CumulativeAck {
            state: state.clone(),
        },
    );
    channel_events::install(&socket, &state);
    socket.on_disconnect(on_disconnect);
    // A guest too: its support tickets' answers come through its inbox (§10).
    if let Some(session) = socket.extensions.get::<Session>() {
        let attachment = match attach(&socket, &state, &session.uid).await {
            Ok(attachment) => attachment,
            Err(e) => {
                // Refused: no handler will run for this socket, so undo what the
                // authentication set up (its token index entry) here.
                release(&socket, &state);
                return Err(e);
            }
        };
        socket
            .extensions
            .insert(PendingDelivery(Arc::new(Mutex::new(Some((
                session.uid,
                attachment,
            ))))));
        // Last, with no await after it: the socket counts as connecting from here on.
        state
            .connecting
            .insert(socket.id.as_str(), socket.clone(), Instant::now());
    }
    Ok(())
}

/// Releases, every [`connecting::SWEEP_EVERY`], the sockets that hung up between the
/// middleware and the connect handler (see [`connecting`]); ends when the node shuts down.
pub async fn release_abandoned_connects(state: AppState) {
    let mut every = tokio::time::interval(connecting::SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let abandoned = state
            .connecting
            .take_abandoned(Instant::now(), |socket| socket.connected());
        for socket in abandoned {
            tracing::debug!(socket = %crate::telemetry::socket_tag(&socket.id), "releasing a socket that hung up while connecting");
            state.metrics.abandoned_connects.inc();
            release(&socket, &state);
        }
    }
}

/// Undoes what the connect middleware set up for `socket`: its token index entry and, when
/// its delivery never started, its routing entry. Idempotent.
fn release(socket: &SocketRef, state: &AppState) {
    if let Some(Session { jti: Some(jti), .. }) = socket.extensions.get::<Session>() {
        state.token_sockets.remove(&jti, socket.id.as_str());
    }
    let pending = socket
        .extensions
        .get::<PendingDelivery>()
        .and_then(|p| p.0.lock().ok().and_then(|mut slot| slot.take()));
    if let Some((uid, attachment)) = pending {
        state.router.detach(uid.as_str(), attachment.conn_id);
    }
}

/// A socket connected: start handling its events and delivering to it.
pub async fn on_connect(socket: SocketRef, State(state): State<AppState>) {
    state.connecting.remove(socket.id.as_str());
    if revoked_while_connecting(&socket, &state) {
        // Its token was revoked after the middleware indexed it, and the disconnect that
        // revocation sent came before socketioxide added the socket to the namespace, so it
        // did not stick. That disconnect may already have run `on_disconnect` (taking the
        // handler with it) before the middleware's attach finished, so release here what
        // the middleware set up, then close the socket for good.
        tracing::debug!(socket = %crate::telemetry::socket_tag(&socket.id), "closing a socket whose token was revoked while it connected");
        release(&socket, &state);
        let _ = socket.disconnect();
        return;
    }
    if let (Some(Guest), Some(session)) = (
        socket.extensions.get::<Guest>(),
        socket.extensions.get::<Session>(),
    ) {
        // First: the guest learns the uid the server made for it, and a token that brings
        // it back as the same guest (its tickets, their answers) after a reconnect.
        let token = match state.accounts.issue_guest(&session.uid) {
            Ok(issued) => Some(issued.token),
            Err(e) => {
                tracing::warn!(error = %e, "no guest token");
                None
            }
        };
        let _ = socket.emit(
            "session",
            &json!({ "uid": session.uid.as_str(), "guest": true, "token": token }),
        );
    }
    if let Some(InboundLane(lane)) = socket.extensions.get::<InboundLane>() {
        lane.open();
    }
    let pending = socket
        .extensions
        .get::<PendingDelivery>()
        .and_then(|p| p.0.lock().ok().and_then(|mut slot| slot.take()));
    if let Some((uid, attachment)) = pending {
        run_delivery(&socket, &state, uid, attachment);
    }
}

/// Whether `socket` authenticated with a token whose revocation already took it out of the
/// token index.
fn revoked_while_connecting(socket: &SocketRef, state: &AppState) -> bool {
    match socket.extensions.get::<Session>() {
        Some(Session { jti: Some(jti), .. }) => {
            !state.token_sockets.holds(&jti, socket.id.as_str())
        }
        _ => false,
    }
}

/// `join`: open mode logs the uid in; token mode checks it matches the token.
async fn on_join(event: Inbound, state: &AppState) {
    let Inbound {
        socket,
        data,
        ack,
        wants_ack,
        ..
    } = event;
    let claimed = match data {
        Ok(serde_json::Value::String(uid)) => UserId::parse(&uid),
        Ok(serde_json::Value::Object(o)) => match o.get("uid").and_then(|v| v.as_str()) {
            Some(uid) => UserId::parse(uid),
            None => Err(ChatError::bad_request("join takes a uid string")),
        },
        _ => Err(ChatError::bad_request("join takes a uid string")),
    };
    let claimed = match claimed {
        Ok(uid) => uid,
        Err(e) => return reply(&socket, state, ack, wants_ack, None, Err(e)),
    };
    match socket.extensions.get::<Session>() {
        Some(session) if session.uid == claimed => {
            reply(&socket, state, ack, wants_ack, None, Ok(None));
        }
        Some(session) => {
            tracing::warn!(session = %session.uid, claimed = %claimed, "join as another user refused");
            let refusal = ChatError::new(ErrorCode::Forbidden, "join must name the token's uid");
            reply(&socket, state, ack, wants_ack, None, Err(refusal));
            let _ = socket.disconnect();
        }
        None if state.settings.auth == AuthMode::Open => {
            if super::auth::check_socket_limit(state, &claimed).is_err() {
                let refusal =
                    ChatError::new(ErrorCode::RateLimited, "too many sockets for this user");
                reply(&socket, state, ack, wants_ack, None, Err(refusal));
                let _ = socket.disconnect();
                return;
            }
            match attach(&socket, state, &claimed).await {
                Ok(attachment) => {
                    socket.extensions.insert(Session {
                        uid: claimed.clone(),
                        jti: None,
                        expires_at: None,
                    });
                    run_delivery(&socket, state, claimed, attachment);
                    reply(&socket, state, ack, wants_ack, None, Ok(None));
                }
                Err(e) => reply(&socket, state, ack, wants_ack, None, Err(e)),
            }
        }
        None => {
            let refusal = ChatError::new(ErrorCode::Unauthorized, "unauthorized");
            reply(&socket, state, ack, wants_ack, None, Err(refusal));
            let _ = socket.disconnect();
        }
    }
}

/// `chat`: parse, hand to the chat service, answer.
async fn on_chat(event: Inbound, state: &AppState) {
    let Inbound {
        socket,
        data,
        ack,
        wants_ack,
        ..
    } = event;
    let Some(session) = socket.extensions.get::<Session>() else {
        let refusal = ChatError::new(ErrorCode::Unauthorized, "join first");
        return reply(&socket, state, ack, wants_ack, None, Err(refusal));
    };
    let guest = socket.extensions.get::<Guest>().is_some();
    let command = match data {
        Ok(value) => ClientCommand::parse(value, state.settings.max_body_bytes),
        Err(e) => Err((
            None,
            ChatError::bad_request(format!("unreadable chat payload: {e}")),
        )),
    };
    let command = command.and_then(|command| {
        if guest && !guest_may(&command) {
            let refusal = ChatError::new(
                ErrorCode::Forbidden,
                "guests may only read guest channels and talk in their own support tickets",
            );
            return Err((command.msg_id(), refusal));
        }
        Ok(command)
    });
    let (msg_id, result) = match command {
        Ok(command) => {
            let msg_id = command.msg_id();
            let origin = Origin {
                socket: socket.id.as_str(),
                others_here: state
                    .router
                    .has_socket_besides(session.uid.as_str(), Some(socket.id.as_str())),
            };
            let result = match command {
                ClientCommand::Support(command) => state
                    .support
                    .handle(&session.uid, &origin, command)
                    .await
                    .map(|done| {
                        let mut body = accepted_json(&done.accepted);
                        body["Ticket"] = json!(done.ticket);
                        body
                    }),
                command => state
                    .chat
                    .handle(&session.uid, &origin, command)
                    .await
                    .map(|accepted| accepted_json(&accepted)),
            };
            (msg_id, result)
        }
        Err((msg_id, e)) => (msg_id, Err(e)),
    };
    reply_json(&socket, state, ack, wants_ack, msg_id, result);
}

/// What a guest may send (§9, §10): support commands, and group traffic in tickets (a guest
/// is a member of its own tickets only, which the chat service checks as for anyone).
fn guest_may(command: &ClientCommand) -> bool {
    use crate::domain::{lifecycle::Target, support::is_ticket};
    match command {
        ClientCommand::Support(_) => true,
        ClientCommand::GroupMessage { gid, .. }
        | ClientCommand::GroupTyping { gid, .. }
        | ClientCommand::GroupReceipt { gid, .. }
        | ClientCommand::Rejoin { gid } => is_ticket(gid),
        ClientCommand::Lifecycle(command) => {
            matches!(&command.target, Target::Group(gid) if is_ticket(gid))
        }
        _ => false,
    }
}

/// The ack of an accepted command.
fn accepted_json(accepted: &Accepted) -> serde_json::Value {
    match &accepted.group {
        None => json!({ "ok": true, "MsgID": accepted.msg_id, "SentAt": accepted.sent_at }),
        Some(gid) => json!({
            "ok": true, "MsgID": accepted.msg_id, "SentAt": accepted.sent_at, "Group": gid
        }),
    }
}

/// Answers an event: into its ack when one was requested, else errors as an `error` event
/// (successes without an ack need no answer).
fn reply(
    socket: &SocketRef,
    state: &AppState,
    ack: AckSender,
    wants_ack: bool,
    msg_id: Option<String>,
    result: Result<Option<Accepted>, ChatError>,
) {
    let result = result.map(|accepted| match accepted {
        Some(accepted) => accepted_json(&accepted),
        None => json!({ "ok": true }),
    });
    reply_json(socket, state, ack, wants_ack, msg_id, result);
}

/// [`reply`] with the ack's body made already.
fn reply_json(
    socket: &SocketRef,
    state: &AppState,
    ack: AckSender,
    wants_ack: bool,
    msg_id: Option<String>,
    result: Result<serde_json::Value, ChatError>,
) {
    if let Err(e) = &result {
        state.metrics.errors.inc();
        tracing::debug!(socket = %crate::telemetry::socket_tag(&socket.id), code = e.code.as_str(), error = %e.message, "refused");
    }
    let sent = if wants_ack {
        let body = match &result {
            Ok(body) => body.clone(),
            Err(e) => e.to_json(),
        };
        ack.send(&body).map_err(|e| e.to_string())
    } else if let Err(e) = &result {
        socket
            .emit("chat", &WireEvent::error(msg_id, e))
            .map_err(|e| e.to_string())
    } else {
        Ok(())
    };
    if let Err(e) = sent {
        tracing::debug!(socket = %crate::telemetry::socket_tag(&socket.id), error = %e, "reply not sent; socket closing");
    }
}

/// Adds the socket to the routing table; returns once its user's channel is subscribed.
async fn attach(
    socket: &SocketRef,
    state: &AppState,
    uid: &UserId,
) -> Result<Attachment, ChatError> {
    state
        .router
        .attach(
            uid.as_str(),
            socket.id.as_str(),
            state.settings.socket_queue,
            &state.shutdown,
        )
        .await
        .map_err(ChatError::from)
}

fn run_delivery(socket: &SocketRef, state: &AppState, uid: UserId, attachment: Attachment) {
    socket.extensions.insert(Delivering {
        stop: attachment.stop.clone(),
    });
    // A disconnect handled before the line above found no delivery to stop, and the task
    // would wait for deliveries that never come. socketioxide marks the socket disconnected
    // before it runs the handler, so one of the two always sees the other; here the task is
    // not started at all (it would announce the user online first).
    if !socket.connected() {
        attachment.stop.cancel();
        state.router.detach(uid.as_str(), attachment.conn_id);
        return;
    }
    state.metrics.connections.inc();
    tracing::debug!(uid = %uid, socket = %crate::telemetry::socket_tag(&socket.id), "socket online");
    let expires_at = socket
        .extensions
        .get::<Session>()
        .and_then(|s| s.expires_at);
    state.tasks.spawn(delivery::run(
        socket.clone(),
        uid,
        attachment,
        state.clone(),
        socket.extensions.get::<delivery::ClientAcks>(),
        expires_at,
    ));
}

async fn on_disconnect(socket: SocketRef, State(state): State<AppState>) {
    state.connecting.remove(socket.id.as_str());
    // No event is queued after this; a running worker still handles what was.
    socket.extensions.remove::<InboundLane>();
    if let Some(delivering) = socket.extensions.get::<Delivering>() {
        delivering.stop.cancel();
    }
    // Also detaches a socket subscribed in the middleware whose delivery never started
    // (disconnected before on_connect ran).
    release(&socket, &state);
    channel_events::on_disconnect(&socket, &state).await;
}
