//! `POST /v1/mongooseim/http[/...]`: what MongooseIM's `mod_event_pusher`
//! http backend posts, taken as input, so a running MongooseIM can point its
//! http handler here unchanged.
//!
//! MongooseIM sends `application/x-www-form-urlencoded` with `author`,
//! `server`, `receiver` and `message`, where `author` and `receiver` are
//! user names on `server`. Each post becomes one `user_send_message` hook
//! call (a chat event, direction `in`) and goes through
//! [`Pipeline::accept`], the same path as `/v1/events`: the chain, every
//! backend, the fsync'd spool. MongooseIM counts any non-2xx as a failure,
//! so the answer is `200` once stored.
//!
//! [`Pipeline::accept`]: event_pusher_core::Pipeline::accept

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use event_pusher_core::{jid, Accepted, IngestError};
use serde_json::{json, Value};

use super::error;
use super::ingest::{media_type, read_body, spool_refused, unavailable};
use crate::state::AppState;

/// The one content type MongooseIM's http backend sends.
const FORM: &str = "application/x-www-form-urlencoded";

#[utoipa::path(post, path = "/v1/mongooseim/http", tag = "ingest",
    description = "MongooseIM http-backend form posts (also any path below: /v1/mongooseim/http/{path}).",
    request_body(content = super::schema::MongooseImForm, content_type = "application/x-www-form-urlencoded"),
    security(("bearer" = [])),
    responses(super::schema::FormAnswers))]
pub async fn post_form(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let resp = handle(&state, &headers, body).await;
    state.metrics.request(resp.status().as_u16());
    resp
}

async fn handle(state: &AppState, headers: &HeaderMap, body: Body) -> Response {
    if !state.accepting.load(Ordering::Acquire) {
        return unavailable("shutting down", 5);
    }
    match media_type(headers) {
        Some(t) if t == FORM => {}
        other => {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "expected Content-Type {FORM} (MongooseIM's http backend form), got {}",
                    other.as_deref().unwrap_or("none")
                ),
            )
        }
    }
    let bytes = match read_body(state, headers, body).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    let call = match FormPost::parse(&bytes) {
        Ok(post) => post.hook_call(),
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match state.pipeline.accept(&[call]).await {
        Ok(Accepted { ids, stopped, .. }) => {
            state.metrics.accepted(ids.len(), stopped);
            (StatusCode::OK, Json(json!({"accepted": ids.len(), "ids": ids}))).into_response()
        }
        Err(IngestError::Invalid { source, .. }) => error(StatusCode::BAD_REQUEST, source.to_string()),
        Err(IngestError::Spool(e)) => spool_refused(e),
        // A form post is one `user_send_message`, never a command.
        Err(e @ IngestError::CommandNeedsJson { .. }) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// One post of MongooseIM's http backend, checked.
#[derive(Debug, PartialEq)]
struct FormPost {
    author: String,
    server: String,
    receiver: String,
    message: String,
}

const FIELDS: [&str; 4] = ["author", "server", "receiver", "message"];

impl FormPost {
    /// Decode the form; the error names the field that is missing, given
    /// twice, or not usable in a JID. Other fields are ignored, so a custom
    /// MongooseIM callback module may send more.
    fn parse(body: &[u8]) -> Result<FormPost, String> {
        let mut values: [Option<String>; 4] = Default::default();
        for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
            let (name, value) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            let name = decode(name).map_err(|_| "a form field name is not valid UTF-8".to_owned())?;
            let Some(i) = FIELDS.iter().position(|f| *f == name) else {
                continue;
            };
            if values[i].is_some() {
                return Err(format!("field `{name}` is given twice"));
            }
            values[i] = Some(decode(value).map_err(|_| format!("field `{name}` is not valid UTF-8"))?);
        }
        let [author, server, receiver, message] = values;
        let missing = |field: &str| {
            format!("missing field `{field}` (MongooseIM's http backend form has author, server, receiver and message)")
        };
        let post = FormPost {
            author: author.ok_or_else(|| missing("author"))?,
            server: server.ok_or_else(|| missing("server"))?,
            receiver: receiver.ok_or_else(|| missing("receiver"))?,
            message: message.ok_or_else(|| missing("message"))?,
        };
        check_part("server", &post.server, "the domain of the JIDs")?;
        check_part("author", &post.author, "a user name on `server`")?;
        check_part("receiver", &post.receiver, "a user name on `server`")?;
        for (field, user) in [("author", &post.author), ("receiver", &post.receiver)] {
            let address = format!("{user}@{}", post.server);
            jid::validate(&address).map_err(|why| format!("field `{field}`: JID \"{address}\" {why}"))?;
        }
        Ok(post)
    }

    /// The `/v1/events` hook call this post stands for.
    fn hook_call(&self) -> Value {
        json!({
            "hook": "user_send_message",
            "from": format!("{}@{}", self.author, self.server),
            "to": format!("{}@{}", self.receiver, self.server),
            "type": "chat",
            "body": self.message,
        })
    }
}

/// A local part or domain must be non-empty and hold no `@`, `/`,
/// whitespace or control characters, or joining it into a JID would make a
/// different address.
fn check_part(field: &str, value: &str, what: &str) -> Result<(), String> {
    let problem = if value.is_empty() {
        "is empty"
    } else if value.contains(['@', '/']) {
        "contains '@' or '/'"
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "contains whitespace or control characters"
    } else {
        return Ok(());
    };
    Err(format!("field `{field}` {problem}: \"{value}\" (it must be {what})"))
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, then
/// percent-escapes; the result must be UTF-8.
fn decode(raw: &[u8]) -> Result<String, std::string::FromUtf8Error> {
    let spaced: Vec<u8> = raw.iter().map(|b| if *b == b'+' { b' ' } else { *b }).collect();
    String::from_utf8(percent_encoding::percent_decode(&spaced).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plus_and_percent_escapes() {
        let post =
            FormPost::parse(b"author=alice&server=localhost&receiver=bob&message=1+%2B+1+%26+caf%C3%A9%3D").unwrap();
        assert_eq!(post.message, "1 + 1 & café=");
        assert_eq!(
            post.hook_call(),
            json!({"hook":"user_send_message","from":"alice@localhost","to":"bob@localhost","type":"chat","body":"1 + 1 & café="})
        );
    }

    #[test]
    fn errors_name_the_field() {
        let err = |body: &str| FormPost::parse(body.as_bytes()).unwrap_err();
        assert!(err("author=a&server=s&message=m").contains("missing field `receiver`"));
        assert!(err("author=a&author=b&server=s&receiver=r&message=m").contains("`author` is given twice"));
        assert!(err("author=a%40b&server=s&receiver=r&message=m").contains("field `author` contains '@'"));
        assert!(err("author=a&server=&receiver=r&message=m").contains("field `server` is empty"));
        assert!(err("author=a&server=s&receiver=r+x&message=m").contains("field `receiver` contains whitespace"));
        assert!(err("author=a&server=s&receiver=r&message=%FF").contains("`message` is not valid UTF-8"));
    }

    #[test]
    fn extra_fields_and_an_empty_message_are_accepted() {
        let post = FormPost::parse(b"author=a&server=s&receiver=r&message=&extra=1").unwrap();
        assert_eq!(post.message, "");
    }
}
