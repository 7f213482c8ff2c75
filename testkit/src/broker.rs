//! The shared RabbitMQ broker (started by scripts/setup.sh): its URL, a
//! client channel, and stopping / starting it (only for tests in the
//! nextest `serial` group).

/// The broker every test uses.
pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The broker's URL: `EVENT_PUSHER_TEST_AMQP_URL` when set (a broker
/// elsewhere), else [`AMQP`].
pub fn amqp_url() -> String {
    std::env::var("EVENT_PUSHER_TEST_AMQP_URL").unwrap_or_else(|_| AMQP.to_owned())
}

/// A connection and a channel on it (keep the connection while using it).
pub async fn rabbit_channel() -> (lapin::Connection, lapin::Channel) {
    try_rabbit_channel(AMQP)
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ at 127.0.0.1:5672 (scripts/setup.sh starts it): {e}"))
}

/// A connection to the broker at `url` and a channel on it.
pub async fn try_rabbit_channel(url: &str) -> Result<(lapin::Connection, lapin::Channel), String> {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let ch = conn.create_channel().await.map_err(|e| format!("channel: {e}"))?;
    Ok((conn, ch))
}

/// Stop the broker's app (`rabbitmqctl stop_app`); the node stays up, so
/// [`broker_start`] brings it back.
pub async fn broker_stop() {
    rabbitmqctl(&["stop_app"]).await;
}

/// Start the broker's app again and wait until it serves.
pub async fn broker_start() {
    rabbitmqctl(&["start_app"]).await;
    rabbitmqctl(&["await_startup"]).await;
}

async fn rabbitmqctl(args: &[&str]) {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .expect("rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
