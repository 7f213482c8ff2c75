//! The server → client side of one connection: each message as a text
//! frame, or, when the client asked for `?compress=`, through the
//! connection's own compression context as a binary frame (see
//! `event_pusher_gateway_protocol::compress`). Close frames are control
//! frames and are never compressed.
//!
//! A shared dispatch is compressed once per connection that writes it:
//! each connection's context has its own history, so the bytes differ.

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures::stream::SplitSink;
use futures::SinkExt;

use super::protocol::compress::{Compression, Encoder};

/// The write half of a connection, with its compression context.
pub struct Writer {
    sink: SplitSink<WebSocket, Message>,
    encoder: Option<Encoder>,
}

/// The connection cannot take more: it is gone (or its compression
/// context failed, which ends it the same way).
#[derive(Debug)]
pub struct Broken;

impl Writer {
    /// `None` when the compression context cannot be made (logged).
    pub fn new(sink: SplitSink<WebSocket, Message>, compression: Option<Compression>) -> Option<Writer> {
        let encoder = match compression.map(Encoder::new).transpose() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "gateway: cannot make the connection's compression context");
                return None;
            }
        };
        Some(Writer { sink, encoder })
    }

    /// Queue one message without flushing.
    pub async fn feed(&mut self, text: String) -> Result<(), Broken> {
        let m = self.message(text)?;
        self.sink.feed(m).await.map_err(|_| Broken)
    }

    /// Send one message and flush.
    pub async fn send(&mut self, text: String) -> Result<(), Broken> {
        let m = self.message(text)?;
        self.sink.send(m).await.map_err(|_| Broken)
    }

    pub async fn flush(&mut self) -> Result<(), Broken> {
        self.sink.flush().await.map_err(|_| Broken)
    }

    /// A control frame (close), as is.
    pub async fn control(&mut self, m: Message) -> Result<(), Broken> {
        self.sink.send(m).await.map_err(|_| Broken)
    }

    fn message(&mut self, text: String) -> Result<Message, Broken> {
        let Some(encoder) = &mut self.encoder else {
            return Ok(Message::Text(Utf8Bytes::from(text)));
        };
        match encoder.message(text.as_bytes()) {
            Ok(bytes) => Ok(Message::Binary(bytes.into())),
            Err(e) => {
                tracing::warn!(error = %e, "gateway: compressing a message failed; closing the connection");
                Err(Broken)
            }
        }
    }
}
