//! The command-line subcommands other than `run`.

#[cfg(feature = "rabbit")]
mod amqp;
pub mod check_config;
#[cfg(feature = "rabbit")]
pub mod declare_topology;
pub mod dlq;
pub mod import_mongooseim;
pub mod operations;
#[cfg(feature = "rabbit")]
pub mod publish;
pub mod status;
pub mod target;
pub mod webhooks;

/// A command failed; the message is printed and the process exits 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CommandError(pub String);

impl From<event_pusher_config::ConfigError> for CommandError {
    fn from(e: event_pusher_config::ConfigError) -> Self {
        CommandError(e.to_string())
    }
}

/// `http://` + the listen address, for commands that talk to a running sidecar.
pub(crate) fn base_url(listen: std::net::SocketAddr) -> String {
    let host = if listen.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        listen.ip().to_string()
    };
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    format!("http://{host}:{}", listen.port())
}

pub(crate) fn client(token: Option<&str>) -> Result<reqwest::Client, CommandError> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        let v = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|_| CommandError("token holds characters not allowed in a header".into()))?;
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| CommandError(format!("cannot build HTTP client: {e}")))
}

/// Turn a non-2xx answer into an error carrying the server's message.
pub(crate) async fn check(resp: reqwest::Response) -> Result<reqwest::Response, CommandError> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or(body);
    Err(CommandError(format!("server answered {status}: {msg}")))
}
