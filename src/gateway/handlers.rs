//! The socket event handlers: `connect`, `join`, `chat`, `disconnect`.

use serde_json::json;
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use tokio_util::sync::CancellationToken;

use super::{
    auth::{AckRequested, Session},
    delivery,
};
use crate::{
    chat::Accepted,
    config::AuthMode,
    domain::{ChatError, ClientCommand, ErrorCode, UserId, WireEvent},
    state::AppState,
};

/// This socket's delivery task, stopped on disconnect.
#[derive(Clone)]
struct Delivering {
    stop: CancellationToken,
}

/// Connect middleware that installs the event handlers before the client learns it is
/// connected (see [`super::register`]).
pub async fn install_handlers(socket: SocketRef) -> Result<(), std::convert::Infallible> {
    socket.on("chat", on_chat);
    socket.on("join", on_join);
    socket.on_disconnect(on_disconnect);
    Ok(())
}

/// A socket connected (and passed [`super::auth::authenticate`]).
pub async fn on_connect(socket: SocketRef, State(state): State<AppState>) {
    if let Some(session) = socket.extensions.get::<Session>() {
        start_delivery(&socket, &state, session.uid).await;
    }
}

/// `join`: open mode logs the uid in; token mode checks it matches the token.
async fn on_join(
    socket: SocketRef,
    TryData(data): TryData<serde_json::Value>,
    ack: AckSender,
    AckRequested(wants_ack): AckRequested,
    State(state): State<AppState>,
) {
    state.metrics.events_in.inc();
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
        Err(e) => return reply(&socket, &state, ack, wants_ack, None, Err(e)),
    };
    match socket.extensions.get::<Session>() {
        Some(session) if session.uid == claimed => {
            reply(&socket, &state, ack, wants_ack, None, Ok(None));
        }
        Some(session) => {
            tracing::warn!(session = %session.uid, claimed = %claimed, "join as another user refused");
            let refusal = ChatError::new(ErrorCode::Forbidden, "join must name the token's uid");
            reply(&socket, &state, ack, wants_ack, None, Err(refusal));
            let _ = socket.disconnect();
        }
        None if state.settings.auth == AuthMode::Open => {
            socket.extensions.insert(Session {
                uid: claimed.clone(),
            });
            start_delivery(&socket, &state, claimed).await;
            reply(&socket, &state, ack, wants_ack, None, Ok(None));
        }
        None => {
            let refusal = ChatError::new(ErrorCode::Unauthorized, "unauthorized");
            reply(&socket, &state, ack, wants_ack, None, Err(refusal));
            let _ = socket.disconnect();
        }
    }
}

/// `chat`: parse, hand to the chat service, answer.
async fn on_chat(
    socket: SocketRef,
    TryData(data): TryData<serde_json::Value>,
    ack: AckSender,
    AckRequested(wants_ack): AckRequested,
    State(state): State<AppState>,
) {
    state.metrics.events_in.inc();
    let Some(session) = socket.extensions.get::<Session>() else {
        let refusal = ChatError::new(ErrorCode::Unauthorized, "join first");
        return reply(&socket, &state, ack, wants_ack, None, Err(refusal));
    };
    let command = match data {
        Ok(value) => ClientCommand::parse(value, state.settings.max_body_bytes),
        Err(e) => Err((
            None,
            ChatError::bad_request(format!("unreadable chat payload: {e}")),
        )),
    };
    let (msg_id, result) = match command {
        Ok(command) => {
            let msg_id = command.msg_id();
            let result = state
                .chat
                .handle(&session.uid, socket.id.as_str(), command)
                .await;
            (msg_id, result.map(Some))
        }
        Err((msg_id, e)) => (msg_id, Err(e)),
    };
    reply(&socket, &state, ack, wants_ack, msg_id, result);
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
    if let Err(e) = &result {
        state.metrics.errors.inc();
        tracing::debug!(socket = %socket.id, code = e.code.as_str(), error = %e.message, "refused");
    }
    let sent = if wants_ack {
        let body = match &result {
            Ok(Some(accepted)) => {
                json!({ "ok": true, "MsgID": accepted.msg_id, "SentAt": accepted.sent_at })
            }
            Ok(None) => json!({ "ok": true }),
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
        tracing::debug!(socket = %socket.id, error = %e, "reply not sent; socket closing");
    }
}

async fn start_delivery(socket: &SocketRef, state: &AppState, uid: UserId) {
    let attachment = match state
        .router
        .attach(
            uid.as_str(),
            socket.id.as_str(),
            state.settings.socket_queue,
        )
        .await
    {
        Ok(attachment) => attachment,
        Err(e) => {
            let refusal: ChatError = e.into();
            let _ = socket.emit("chat", &WireEvent::error(None, &refusal));
            let _ = socket.clone().disconnect();
            return;
        }
    };
    let stop = state.shutdown.child_token();
    socket.extensions.insert(Delivering { stop: stop.clone() });
    state.metrics.connections.inc();
    tracing::debug!(uid = %uid, socket = %socket.id, "socket online");
    state.tasks.spawn(delivery::run(
        socket.clone(),
        uid,
        attachment,
        state.clone(),
        stop,
    ));
}

async fn on_disconnect(socket: SocketRef) {
    if let Some(delivering) = socket.extensions.get::<Delivering>() {
        delivering.stop.cancel();
    }
}
