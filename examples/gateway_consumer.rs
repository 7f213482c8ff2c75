//! A gateway consumer: connect to a sidecar's `[backends.gateway.NAME]`
//! with a client's token and intents and print every event, with the
//! previous status for presences.
//!
//! ```sh
//! cargo run --example gateway_consumer -- ws://127.0.0.1:8088/v1/gateway analytics-secret 7
//! ```
//!
//! The client heartbeats, resumes after a dropped connection and
//! identifies again when the session is gone; `consumers(2)` runs two
//! handler tasks on the one connection.

use std::process::ExitCode;

use event_pusher::gateway::{intents, Client, Dispatch, EventHandler, GatewayEvent};

/// Prints each dispatch on one line.
struct Print;

#[event_pusher::async_trait]
impl EventHandler for Print {
    async fn handle_event(&self, dispatch: Dispatch) {
        let s = dispatch.seq;
        match &dispatch.event {
            GatewayEvent::Ready { session_id } => println!("#{s} ready: session {session_id}"),
            GatewayEvent::Resumed => println!("resumed"),
            GatewayEvent::Presence { event, previous } => {
                let now = event.presence().map(|p| p.status);
                println!("#{s} presence {}: {previous:?} -> {now:?}", event.user());
            }
            GatewayEvent::DirectMessage(e) | GatewayEvent::Message(e) => {
                let chat = e.chat();
                println!(
                    "#{s} message {} -> {}: {}",
                    chat.map_or("", |c| c.from.as_str()),
                    chat.map_or("", |c| c.to.as_str()),
                    chat.and_then(|c| c.body.as_deref()).unwrap_or("")
                );
            }
            GatewayEvent::Unacked(e) => println!("#{s} unacked for {}", e.user()),
            GatewayEvent::Other { t, d } => println!("#{s} {t}: {d}"),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:8088/v1/gateway".to_owned());
    let token = args.next().unwrap_or_else(|| "analytics-secret".to_owned());
    let wanted = match args.next().map(|s| s.parse::<u64>()) {
        None => intents::PRESENCE | intents::CHAT | intents::GROUPCHAT,
        Some(Ok(bits)) => bits,
        Some(Err(e)) => {
            eprintln!("intents must be a number (bits: presence 1, chat 2, groupchat 4, ...): {e}");
            return ExitCode::FAILURE;
        }
    };
    match Client::new(url, token, wanted).consumers(2).run(Print).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
