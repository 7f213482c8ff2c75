//! The shared RabbitMQ broker (started by scripts/setup.sh): its URL, a
//! client channel, and stopping / starting it (only for tests in the
//! nextest `serial` group).

/// The broker every test uses.
pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A connection and a channel on it (keep the connection while using it).
pub async fn rabbit_channel() -> (lapin::Connection, lapin::Channel) {
    let conn = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default())
        .await
        .expect("RabbitMQ at 127.0.0.1:5672 (scripts/setup.sh starts it)");
    let ch = conn.create_channel().await.expect("channel");
    (conn, ch)
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
