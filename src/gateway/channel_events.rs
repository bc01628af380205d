//! The channel socket events (§9): `subscribe`, `unsubscribe`, `publish`, each answered in
//! its ack (or, without one, an `error` event as for `chat`).
//!
//! socketioxide runs each event in its own task; a client expects its publishes stored in
//! the order it sent them, so a socket's channel events go through one [`Lane`], like its
//! `chat` events (a separate lane: a slow publish never holds up a message).

use std::sync::Arc;

use super::{
    auth::{Guest, Session},
    channel_hub::MAX_SUBSCRIPTIONS_PER_SOCKET,
    lane::{Lane, LaneWork},
};
use crate::{
    channels::{ChannelName, PresenceChange, Publisher, Reader, Since, Subscribed},
    domain::{ChatError, ErrorCode, MsgId, WireEvent},
    state::AppState,
};
use serde::Deserialize;
use serde_json::{json, Value};
use socketioxide::{
    adapter::LocalAdapter,
    extract::{AckSender, SocketRef},
    handler::{MessageHandler, Value as SioValue},
    socket::Socket,
};

/// The channel events a client may send.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Subscribe,
    Unsubscribe,
    Publish,
}

struct Request {
    socket: SocketRef,
    kind: Kind,
    data: Result<Value, String>,
    ack: AckSender,
    wants_ack: bool,
}

/// A socket's channel lane (in its extensions).
#[derive(Clone)]
struct ChannelLane(Arc<Lane<Request, ChannelWork>>);

/// Handles a socket's channel events, in order.
struct ChannelWork {
    state: AppState,
}

impl LaneWork<Request> for ChannelWork {
    async fn handle(&self, request: Request) {
        let state = &self.state;
        let Request {
            socket,
            kind,
            data,
            ack,
            wants_ack,
        } = request;
        state.metrics.events_in.inc();
        let handled = match data {
            Ok(data) => handle(&socket, state, kind, data).await,
            Err(e) => Handled::Answer(Err(ChatError::bad_request(format!(
                "unreadable payload: {e}"
            )))),
        };
        match handled {
            Handled::Answer(result) => answer(&socket, state, ack, wants_ack, result),
            Handled::Subscribed(channel, subscribed) => {
                finish_subscribe(&socket, state, ack, wants_ack, channel, subscribed).await
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeWire {
    channel: String,
    #[serde(default)]
    since: Option<SinceWire>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SinceWire {
    offset: u64,
    epoch: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeWire {
    channel: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishWire {
    channel: String,
    data: String,
    #[serde(default, rename = "MsgID")]
    msg_id: Option<String>,
}

/// The message handler of the channel events: queues the event in arrival order.
#[derive(Clone)]
struct Queued {
    kind: Kind,
    state: AppState,
}

impl MessageHandler<LocalAdapter, Queued> for Queued {
    fn call(&self, socket: Arc<Socket<LocalAdapter>>, value: SioValue, ack_id: Option<i64>) {
        let (socket, ack, data) = super::handlers::unpack(socket, value, ack_id);
        let wants_ack = ack_id.is_some();
        let Some(ack) = super::handlers::within_rate(&socket, &self.state, ack, wants_ack) else {
            return;
        };
        let Some(ChannelLane(lane)) = socket.extensions.get::<ChannelLane>() else {
            return; // disconnecting
        };
        let request = Request {
            socket,
            kind: self.kind,
            data,
            ack,
            wants_ack,
        };
        if let Err(refused) = lane.push(request) {
            let limit = ChatError::new(
                ErrorCode::RateLimited,
                "too many channel events in flight on this socket; wait for acks",
            );
            answer(
                &refused.socket,
                &self.state,
                refused.ack,
                refused.wants_ack,
                Err(limit),
            );
        }
    }
}

/// Registers the channel events on `socket`, with its channel lane.
pub fn install(socket: &SocketRef, state: &AppState) {
    let work = ChannelWork {
        state: state.clone(),
    };
    let lane = Lane::new(
        work,
        state.settings.socket_inflight,
        state.tasks.clone(),
        true,
    );
    socket.extensions.insert(ChannelLane(lane));
    for (event, kind) in [
        ("subscribe", Kind::Subscribe),
        ("unsubscribe", Kind::Unsubscribe),
        ("publish", Kind::Publish),
    ] {
        socket.on(
            event,
            Queued {
                kind,
                state: state.clone(),
            },
        );
    }
}

enum Handled {
    Answer(Result<Value, ChatError>),
    Subscribed(ChannelName, Subscribed),
}

fn parse<T: serde::de::DeserializeOwned>(data: Value, what: &str) -> Result<T, ChatError> {
    // Like `chat`, a payload may come JSON-encoded as a string.
    let data = match data {
        Value::String(text) => serde_json::from_str(&text)
            .map_err(|e| ChatError::bad_request(format!("unreadable {what} payload: {e}")))?,
        other => other,
    };
    serde_json::from_value(data)
        .map_err(|e| ChatError::bad_request(format!("unreadable {what} payload: {e}")))
}

async fn handle(socket: &SocketRef, state: &AppState, kind: Kind, data: Value) -> Handled {
    let Some(session) = socket.extensions.get::<Session>() else {
        return Handled::Answer(Err(ChatError::new(ErrorCode::Unauthorized, "join first")));
    };
    let guest = socket.extensions.get::<Guest>().is_some();
    let reader = if guest { Reader::Guest } else { Reader::User };
    match kind {
        Kind::Subscribe => match subscribe(socket, state, &session, reader, data).await {
            Ok((channel, subscribed)) => Handled::Subscribed(channel, subscribed),
            Err(e) => Handled::Answer(Err(e)),
        },
        Kind::Unsubscribe => Handled::Answer(unsubscribe(socket, state, data).await),
        Kind::Publish => {
            let publisher = if guest {
                Publisher::Guest(session.uid.clone())
            } else {
                Publisher::User(session.uid.clone())
            };
            Handled::Answer(publish(socket, state, publisher, data).await)
        }
    }
}

async fn subscribe(
    socket: &SocketRef,
    state: &AppState,
    session: &Session,
    reader: Reader,
    data: Value,
) -> Result<(ChannelName, Subscribed), ChatError> {
    let wire: SubscribeWire = parse(data, "subscribe")?;
    let channel = ChannelName::parse(&wire.channel)?;
    let since = wire.since.map(|s| Since {
        offset: s.offset,
        epoch: s.epoch,
    });
    let settings = state.channels.readable(&channel, reader).await?;
    let hub = &state.channel_hub;
    if !hub.is_member(socket, channel.as_str()).await
        && hub.channels_of(socket).await.len() >= MAX_SUBSCRIPTIONS_PER_SOCKET
    {
        return Err(ChatError::new(
            ErrorCode::RateLimited,
            format!("at most {MAX_SUBSCRIPTIONS_PER_SOCKET} channels per socket"),
        ));
    }
    hub.begin(socket, session.uid.as_str(), &channel, settings.bounds())
        .await?;
    match state
        .channels
        .recover(&channel, settings, since.as_ref())
        .await
    {
        Ok(subscribed) => Ok((channel, subscribed)),
        Err(e) => {
            hub.leave(socket, &channel).await;
            Err(e)
        }
    }
}

/// Sends the subscribe ack, then the buffered publications after it (see the hub), then
/// tells the channel's subscribers who joined when it shares presence.
async fn finish_subscribe(
    socket: &SocketRef,
    state: &AppState,
    ack: AckSender,
    wants_ack: bool,
    channel: ChannelName,
    subscribed: Subscribed,
) {
    let body = json!({
        "ok": true,
        "channel": channel.as_str(),
        "epoch": subscribed.epoch,
        "offset": subscribed.latest,
        "recovered": subscribed.recovered,
        "publications": subscribed.publications,
    });
    let done = state
        .channel_hub
        .complete(
            socket,
            &channel,
            &subscribed.epoch,
            subscribed.latest,
            || {
                answer(socket, state, ack, wants_ack, Ok(body));
            },
        )
        .await;
    tracing::debug!(channel = %channel, recovered = subscribed.recovered, count = subscribed.publications.len(), "subscribed");
    if done {
        if let Some(session) = socket.extensions.get::<Session>() {
            let announce = subscribed.settings.presence;
            presence_change(
                state,
                &channel,
                session.uid.as_str(),
                socket,
                true,
                announce,
            )
            .await;
        }
    }
}

async fn unsubscribe(
    socket: &SocketRef,
    state: &AppState,
    data: Value,
) -> Result<Value, ChatError> {
    let wire: UnsubscribeWire = parse(data, "unsubscribe")?;
    let channel = ChannelName::parse(&wire.channel)?;
    leave(socket, state, &channel).await;
    Ok(json!({ "ok": true }))
}

/// Takes `socket` off `channel`, telling its subscribers when it shares presence.
async fn leave(socket: &SocketRef, state: &AppState, channel: &ChannelName) {
    let Some(uid) = state.channel_hub.leave(socket, channel).await else {
        return;
    };
    let announce = state
        .channels
        .settings(channel)
        .await
        .map(|s| s.presence)
        .unwrap_or(true);
    presence_change(state, channel, &uid, socket, false, announce).await;
}

/// Records one subscription's arrival or departure (every channel counts its subscribers)
/// and, with `announce` (the channel shares presence), announces a uid's first arrival and
/// last departure (a user with two tabs joins once).
async fn presence_change(
    state: &AppState,
    channel: &ChannelName,
    uid: &str,
    socket: &SocketRef,
    joined: bool,
    announce: bool,
) {
    let store = state.channels.store();
    let socket_id = socket.id.to_string();
    let outcome = async {
        if !announce {
            return store.set_present(channel, uid, &socket_id, joined).await;
        }
        let before = store.present(channel).await?.iter().any(|u| u == uid);
        store.set_present(channel, uid, &socket_id, joined).await?;
        let after = store.present(channel).await?.iter().any(|u| u == uid);
        if before != after {
            store
                .announce(&PresenceChange {
                    channel: channel.as_str().to_owned(),
                    uid: uid.to_owned(),
                    state: if joined { "join" } else { "leave" }.to_owned(),
                })
                .await?;
        }
        Ok::<_, crate::storage::StoreError>(())
    }
    .await;
    if let Err(e) = outcome {
        tracing::warn!(channel = %channel, error = %e, "channel presence not recorded");
    }
}

async fn publish(
    socket: &SocketRef,
    state: &AppState,
    publisher: Publisher,
    data: Value,
) -> Result<Value, ChatError> {
    let wire: PublishWire = parse(data, "publish")?;
    let channel = ChannelName::parse(&wire.channel)?;
    let msg_id = wire.msg_id.as_deref().map(MsgId::parse).transpose()?;
    if !matches!(publisher, Publisher::Guest(_))
        && !state.channel_hub.is_member(socket, channel.as_str()).await
    {
        // Unknown channels first: a client learns that before it learns the rule.
        state.channels.settings(&channel).await?;
        return Err(ChatError::new(
            ErrorCode::Forbidden,
            "subscribe to a channel before publishing on it",
        ));
    }
    let published = state
        .channels
        .publish(&publisher, &channel, wire.data, msg_id)
        .await?;
    Ok(json!({ "ok": true, "offset": published.offset, "epoch": published.epoch }))
}

/// Answers into the ack when one was requested; else an error comes back as a `chat`
/// `error` event (as for `chat`, §3) and a success needs no answer.
fn answer(
    socket: &SocketRef,
    state: &AppState,
    ack: AckSender,
    wants_ack: bool,
    result: Result<Value, ChatError>,
) {
    if let Err(e) = &result {
        state.metrics.errors.inc();
        tracing::debug!(socket = %crate::telemetry::socket_tag(&socket.id), code = e.code.as_str(), error = %e.message, "channel event refused");
    }
    let sent = match (wants_ack, result) {
        (true, Ok(body)) => ack.send(&body).map_err(|e| e.to_string()),
        (true, Err(e)) => ack.send(&e.to_json()).map_err(|e| e.to_string()),
        (false, Err(e)) => socket
            .emit("chat", &WireEvent::error(None, &e))
            .map_err(|e| e.to_string()),
        (false, Ok(_)) => Ok(()),
    };
    if let Err(e) = sent {
        tracing::debug!(error = %e, "channel answer not sent; socket closing");
    }
}

/// Leaves every channel of a disconnected socket.
pub async fn on_disconnect(socket: &SocketRef, state: &AppState) {
    socket.extensions.remove::<ChannelLane>();
    for name in state.channel_hub.channels_of(socket).await {
        if let Ok(channel) = ChannelName::parse(&name) {
            leave(socket, state, &channel).await;
        }
    }
}
