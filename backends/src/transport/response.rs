//! Reading a peer's answer body without letting the receiver decide how
//! much memory that takes.
//!
//! A peer may answer with an endless (or just huge) body. We only ever need
//! a short excerpt of an error answer, and nothing of a success; but the
//! connection can only go back to the pool once its body has been read to
//! the end. So a success body is drained up to [`SUCCESS_DRAIN_LIMIT`] (the
//! connection is reused), and anything larger, or any error body past the
//! excerpt, is cut off by dropping the response, which closes the
//! connection.

use bytes::BytesMut;

/// How much of a 2xx body is read (and thrown away) so that the connection
/// can be reused. Larger bodies cost a new connection rather than memory.
pub(crate) const SUCCESS_DRAIN_LIMIT: usize = 64 * 1024;

/// How much of an error answer's body is kept for logs and dead letters.
pub(crate) const ERROR_EXCERPT_LIMIT: usize = 512;

/// Read the body of a 2xx answer up to [`SUCCESS_DRAIN_LIMIT`] bytes and
/// discard it. Errors while draining do not matter: the event was accepted.
pub(crate) async fn drain_success(mut resp: reqwest::Response) {
    let mut seen = 0usize;
    while seen <= SUCCESS_DRAIN_LIMIT {
        match resp.chunk().await {
            Ok(Some(chunk)) => seen += chunk.len(),
            // End of body: the connection goes back to the pool.
            Ok(None) | Err(_) => return,
        }
    }
    // Over the limit: dropping `resp` here closes the connection.
}

/// Keep at most [`ERROR_EXCERPT_LIMIT`] bytes of an error answer's body, as
/// (lossy) UTF-8. Reading stops as soon as that much has arrived.
pub(crate) async fn error_excerpt(mut resp: reqwest::Response) -> String {
    let mut kept = BytesMut::new();
    while kept.len() < ERROR_EXCERPT_LIMIT {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = ERROR_EXCERPT_LIMIT - kept.len();
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}
