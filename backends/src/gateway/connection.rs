//! One WebSocket connection: Hello, the handshake (Identify or Resume),
//! then the live loop writing dispatches and answering heartbeats until the
//! client goes, times out, falls behind, or the sidecar drains.

use super::extra_close;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::stream::SplitStream;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::dispatch::Payload;
use super::hub::{ConnectionGuard, Hub, Pending, SessionSlot};
use super::protocol::compress::Compression;
use super::protocol::{self, close, control, dispatch, op, Frame};
use super::session::{Outgoing, ResumeCheck, Session};
use super::writer::Writer;

/// How long op 7 and the close frame may wait on a client that is not
/// reading, at the least; a kicked client gets 1.5 heartbeat intervals to
/// read what is buffered and reach its close frame.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Frames written per flush in the live loop.
const WRITE_BATCH: usize = 64;

type Stream = SplitStream<WebSocket>;

/// How a connection ended, for the close frame and metrics.
enum End {
    /// The server closes with this code.
    Close(u16, &'static str),
    /// Shutdown: op 7, then close.
    Reconnect,
    /// The client went away (close frame, EOF, I/O error).
    Gone,
}

/// The session a handshake produced, with its connection's queue.
struct Live {
    session: Arc<Session>,
    outbox: mpsc::Sender<Outgoing>,
    queue: mpsc::Receiver<Outgoing>,
    kicked: oneshot::Receiver<u16>,
    /// Resume only: what to write before going live.
    replay: Option<Vec<Outgoing>>,
    /// Its place among `max_sessions`, held while it is live.
    _slot: SessionSlot,
}

/// Serve one upgraded connection to its end; every server message goes
/// through `compression` when the client asked for one.
pub async fn serve(
    hub: Arc<Hub>,
    socket: WebSocket,
    resume_url: String,
    compression: Option<Compression>,
    _guard: ConnectionGuard,
    pending: Pending,
) {
    let (sink, mut stream) = socket.split();
    let Some(mut sink) = Writer::new(sink, compression) else {
        return;
    };
    let mut draining = hub.draining();
    let hello = control(
        op::HELLO,
        json!({"heartbeat_interval": hub.limits.heartbeat_interval.as_millis() as u64}),
    );
    if sink.send(hello).await.is_err() {
        return;
    }
    let end = match handshake(&hub, &mut sink, &mut stream, &resume_url, &mut draining, pending).await {
        Err(end) => end,
        Ok(live) => {
            let outbox = live.outbox.clone();
            let session = live.session.clone();
            let end = run_live(&hub, &mut sink, &mut stream, live, &mut draining).await;
            session.detach_if(&outbox);
            // On shutdown the record keeps saying attached: after the
            // restart it is resumable for the whole timeout.
            if !hub.is_draining() {
                hub.save_soon(&session).await;
            }
            end
        }
    };
    finish(&hub, &mut sink, end).await;
}

/// Hello is sent; wait for Identify or Resume (heartbeats allowed) within
/// one heartbeat interval.
async fn handshake(
    hub: &Arc<Hub>,
    sink: &mut Writer,
    stream: &mut Stream,
    resume_url: &str,
    draining: &mut tokio::sync::watch::Receiver<bool>,
    mut pending: Pending,
) -> Result<Live, End> {
    let deadline = Instant::now() + hub.limits.heartbeat_interval;
    loop {
        let frame = tokio::select! {
            _ = drain_signal(draining) => return Err(End::Reconnect),
            Ok(()) = &mut pending.evicted => {
                return Err(End::Close(extra_close::TRY_AGAIN_LATER, "too many unidentified connections"))
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Err(End::Close(close::NOT_AUTHENTICATED, "no identify within the heartbeat interval"))
            }
            m = stream.next() => read_frame(m)?,
        };
        let Some(frame) = frame else { continue };
        match frame.op {
            op::HEARTBEAT => send(sink, control(op::HEARTBEAT_ACK, Value::Null)).await?,
            op::IDENTIFY => return identify(hub, frame.d, resume_url, session_slot(hub)?).await,
            op::RESUME => {
                if let Some(live) = resume(hub, frame.d, session_slot(hub)?)? {
                    hub.save_soon(&live.session).await;
                    return Ok(live);
                }
                // Cannot resume: op 9 false, and the client identifies again.
                send(sink, control(op::INVALID_SESSION, Value::Bool(false))).await?;
            }
            // A known op other than Heartbeat, Identify or Resume.
            op::DISPATCH
            | op::PRESENCE_UPDATE
            | op::RECONNECT
            | op::INVALID_SESSION
            | op::HELLO
            | op::HEARTBEAT_ACK => return Err(End::Close(close::NOT_AUTHENTICATED, "identify first")),
            _ => return Err(End::Close(close::UNKNOWN_OPCODE, "unknown opcode")),
        }
    }
}

/// A place among `max_sessions` for a connection that identifies or
/// resumes (it leaves the unidentified when the handshake returns).
fn session_slot(hub: &Arc<Hub>) -> Result<SessionSlot, End> {
    hub.take_session_slot()
        .ok_or(End::Close(extra_close::TRY_AGAIN_LATER, "too many gateway sessions"))
}

async fn identify(hub: &Arc<Hub>, d: Value, resume_url: &str, slot: SessionSlot) -> Result<Live, End> {
    // Intents that are a number but no i64 (2^63 and up, negative beyond
    // i64, fractions) are invalid intents, not a decode error.
    if d.get("intents").is_some_and(|i| i.is_number() && i.as_i64().is_none()) {
        return Err(End::Close(close::INVALID_INTENTS, "invalid intents"));
    }
    let identify: protocol::Identify =
        serde_json::from_value(d).map_err(|_| End::Close(close::DECODE_ERROR, "bad identify payload"))?;
    let client = hub
        .client_by_token(&identify.token)
        .ok_or(End::Close(close::AUTHENTICATION_FAILED, "authentication failed"))?;
    let intents = u64::try_from(identify.intents)
        .ok()
        .filter(|i| i & !protocol::ALL_INTENTS == 0)
        .ok_or(End::Close(close::INVALID_INTENTS, "invalid intents"))?;
    if intents & !hub.clients[client].intents != 0 {
        return Err(End::Close(close::DISALLOWED_INTENTS, "disallowed intents"));
    }
    hub.sweep();
    let session = Arc::new(Session::new(
        event_pusher_core::Event::new_id(),
        client,
        intents,
        hub.limits.resume_buffer,
    ));
    let (outbox, queue) = mpsc::channel(hub.limits.max_queued);
    let (kick, kicked) = oneshot::channel();
    session.attach(outbox.clone(), kick);
    // READY is s = 1 before the session can see any event.
    let ready = json!({"session_id": session.id, "resume_gateway_url": resume_url});
    session.push(&Payload::new(dispatch::READY, &ready.to_string()));
    hub.insert(session.clone());
    // On disk before READY goes out: a client told a session id can
    // resume it after a crash.
    if let Err(e) = hub.save_now(&session).await {
        tracing::warn!(error = %e, session = %session.id, "gateway: cannot keep the session for resume");
    }
    Ok(Live {
        session,
        outbox,
        queue,
        kicked,
        replay: None,
        _slot: slot,
    })
}

/// `Ok(None)`: the session cannot be resumed (op 9).
fn resume(hub: &Arc<Hub>, d: Value, slot: SessionSlot) -> Result<Option<Live>, End> {
    let resume: protocol::Resume =
        serde_json::from_value(d).map_err(|_| End::Close(close::DECODE_ERROR, "bad resume payload"))?;
    let client = hub
        .client_by_token(&resume.token)
        .ok_or(End::Close(close::AUTHENTICATION_FAILED, "authentication failed"))?;
    let Some(session) = hub.session(&resume.session_id).filter(|s| s.client == client) else {
        return Ok(None);
    };
    let (outbox, queue) = mpsc::channel(hub.limits.max_queued);
    let (kick, kicked) = oneshot::channel();
    match session.resume(resume.seq, hub.limits.resume_timeout, outbox.clone(), kick) {
        ResumeCheck::Replay(replay) => {
            hub.metrics.resumed();
            Ok(Some(Live {
                session,
                outbox,
                queue,
                kicked,
                replay: Some(replay),
                _slot: slot,
            }))
        }
        ResumeCheck::InvalidSeq => Err(End::Close(close::INVALID_SEQ, "invalid seq")),
        ResumeCheck::Gone => {
            hub.remove(&session.id);
            Ok(None)
        }
    }
}

/// Write dispatches as they come and answer the client until the end.
async fn run_live(
    hub: &Hub,
    sink: &mut Writer,
    stream: &mut Stream,
    mut live: Live,
    draining: &mut tokio::sync::watch::Receiver<bool>,
) -> End {
    // 1.5 × the interval, from the last heartbeat (or from going live).
    let allowance = hub.limits.heartbeat_interval * 3 / 2;
    if let Some(mut replay) = live.replay.take() {
        // Written straight to the socket (it may be longer than the queue);
        // a client that stops reading meanwhile is cut like in the loop.
        let resumed = format!("{{\"op\":0,\"s\":null,\"t\":\"{}\",\"d\":null}}", dispatch::RESUMED);
        let write = async {
            write_frames(sink, &mut replay).await?;
            send(sink, resumed).await
        };
        tokio::select! {
            written = write => {
                if let Err(end) = written {
                    return end;
                }
            }
            code = &mut live.kicked => {
                return End::Close(code.unwrap_or(close::QUEUE_OVERFLOW), "reconnect and resume");
            }
            _ = tokio::time::sleep(allowance) => {
                return End::Close(close::SESSION_TIMED_OUT, "session timed out");
            }
        }
    }
    let mut heartbeat_due = Instant::now() + allowance;
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        tokio::select! {
            biased;
            _ = drain_signal(draining) => return End::Reconnect,
            code = &mut live.kicked => {
                return End::Close(code.unwrap_or(close::QUEUE_OVERFLOW), "reconnect and resume");
            }
            // The client's frames first: they are few, and under a steady
            // stream of dispatches its heartbeats must still be read.
            m = stream.next() => {
                let frame = match read_frame(m) {
                    Ok(Some(f)) => f,
                    Ok(None) => continue,
                    Err(end) => return end,
                };
                match frame.op {
                    op::HEARTBEAT => {
                        heartbeat_due = Instant::now() + allowance;
                        if let Err(end) = send(sink, control(op::HEARTBEAT_ACK, Value::Null)).await {
                            return end;
                        }
                    }
                    op::IDENTIFY | op::RESUME => {
                        return End::Close(close::ALREADY_AUTHENTICATED, "already authenticated");
                    }
                    // Accepted and ignored (contract).
                    op::PRESENCE_UPDATE => {}
                    _ => return End::Close(close::UNKNOWN_OPCODE, "unknown opcode"),
                }
            }
            n = live.queue.recv_many(&mut batch, WRITE_BATCH) => {
                if n == 0 {
                    return End::Close(close::QUEUE_OVERFLOW, "reconnect and resume");
                }
                // A client that stops reading blocks this write; its queue
                // then overflows and the kick must still get through.
                tokio::select! {
                    written = write_frames(sink, &mut batch) => {
                        if let Err(end) = written {
                            return end;
                        }
                    }
                    code = &mut live.kicked => {
                        return End::Close(code.unwrap_or(close::QUEUE_OVERFLOW), "reconnect and resume");
                    }
                    // Heartbeats are not read while a write is stuck: a
                    // client that reads nothing for this long is gone.
                    _ = tokio::time::sleep_until(heartbeat_due) => {
                        return End::Close(close::SESSION_TIMED_OUT, "session timed out");
                    }
                }
            }
            _ = tokio::time::sleep_until(heartbeat_due) => {
                return End::Close(close::SESSION_TIMED_OUT, "session timed out");
            }
        }
    }
}

/// Completes once the hub drains (never, if the hub is gone).
async fn drain_signal(draining: &mut tokio::sync::watch::Receiver<bool>) {
    if draining.wait_for(|d| *d).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Read the next frame: `Ok(None)` for frames to skip (ping/pong), `Err`
/// when the connection ends or the frame cannot be decoded.
fn read_frame(message: Option<Result<Message, axum::Error>>) -> Result<Option<Frame>, End> {
    match message {
        None | Some(Ok(Message::Close(_))) => Err(End::Gone),
        Some(Err(e)) => Err(read_error(&e)),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(None),
        Some(Ok(Message::Binary(_))) => Err(End::Close(close::DECODE_ERROR, "frames are JSON text")),
        Some(Ok(Message::Text(t))) => serde_json::from_str::<Frame>(t.as_str())
            .map(Some)
            .map_err(|_| End::Close(close::DECODE_ERROR, "decode error")),
    }
}

/// A read that failed: a frame the WebSocket layer refused gets its close
/// code (1009 too big, 1007 not UTF-8, 1002 protocol violation) and a close
/// frame; a connection that broke is gone. axum hides the WebSocket
/// library's error type, so its message is what tells them apart.
fn read_error(e: &axum::Error) -> End {
    let msg = e.to_string();
    if msg.starts_with("Space limit exceeded") {
        End::Close(extra_close::MESSAGE_TOO_BIG, "message too big")
    } else if msg.starts_with("UTF-8 encoding error") {
        End::Close(extra_close::INVALID_PAYLOAD, "text frame is not UTF-8")
    } else if msg.starts_with("WebSocket protocol error") && !msg.contains("without closing handshake") {
        End::Close(extra_close::PROTOCOL_ERROR, "protocol error")
    } else {
        End::Gone
    }
}

/// Send the last words and close.
async fn finish(hub: &Hub, sink: &mut Writer, end: End) {
    let (code, reason) = match end {
        End::Gone => return,
        End::Close(code, reason) => (code, reason),
        End::Reconnect => {
            let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, sink.send(control(op::RECONNECT, Value::Null))).await;
            (close::SERVICE_RESTART, "reconnect and resume")
        }
    };
    hub.metrics.closed(code);
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }));
    let wait = if code == close::QUEUE_OVERFLOW {
        (hub.limits.heartbeat_interval * 3 / 2).max(CLOSE_WRITE_TIMEOUT)
    } else {
        CLOSE_WRITE_TIMEOUT
    };
    let _ = tokio::time::timeout(wait, sink.control(frame)).await;
}

async fn write_frames(sink: &mut Writer, batch: &mut Vec<Outgoing>) -> Result<(), End> {
    for (seq, payload) in batch.drain(..) {
        feed(sink, payload.frame(seq)).await?;
    }
    sink.flush().await.map_err(|_| End::Gone)
}

async fn send(sink: &mut Writer, frame: String) -> Result<(), End> {
    sink.send(frame).await.map_err(|_| End::Gone)
}

async fn feed(sink: &mut Writer, frame: String) -> Result<(), End> {
    sink.feed(frame).await.map_err(|_| End::Gone)
}
