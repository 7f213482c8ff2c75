//! What the AMQP commands (`publish`, `declare-topology`) share: a
//! connection and a channel from a `--url`.

use event_pusher_backends::rabbit::AmqpUrl;
use lapin::types::LongString;
use lapin::{Channel, Connection, ConnectionProperties};

use super::CommandError;

/// Connect to `url` (named `name` in the broker's connection list) and
/// open a channel. Errors show the URL without its password.
pub async fn connect(url: &str, name: &str) -> Result<(Connection, Channel), CommandError> {
    let url = AmqpUrl::parse(url).map_err(|e| CommandError(format!("--url: {e}")))?;
    let props = ConnectionProperties::default().with_connection_name(LongString::from(name));
    let connection = Connection::connect_uri(url.uri().clone(), props)
        .await
        .map_err(|e| CommandError(format!("cannot connect to RabbitMQ at {url}: {e}")))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| CommandError(format!("cannot open a channel on {url}: {e}")))?;
    Ok((connection, channel))
}
