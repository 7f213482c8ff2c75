//! `GET /v1/cluster` (admin): this node, the cluster store (`up`, last
//! error, since when) and the nodes seen in the last 30 s; 404 without
//! `[cluster]`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error;
use crate::state::AppState;

#[utoipa::path(get, path = "/v1/cluster", tag = "cluster", operation_id = "cluster_status", security(("bearer" = [])),
    responses(
        (status = 200, description = "This node, the store (`up`, last error, since when) and the nodes seen in the last 30 s",
            body = super::schema::ClusterStatus),
        (status = 401, description = "Bad or missing token", body = super::schema::ErrorBody),
        (status = 404, description = "No cluster store is configured (no [cluster] table)", body = super::schema::ErrorBody),
    ))]
pub async fn status(State(state): State<Arc<AppState>>) -> Response {
    match &state.cluster {
        Some(c) => Json(c.status()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "no cluster store is configured (the [cluster] table)",
        ),
    }
}

/// The answer to a write the cluster store did not take: 503 `cluster
/// store unavailable` (nothing changed; try again), else 500.
pub(super) fn refused(e: crate::cluster::SharedError) -> Response {
    match e {
        crate::cluster::SharedError::Unavailable => {
            let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(1u64));
            resp
        }
        crate::cluster::SharedError::Store(e) => {
            tracing::error!(error = %e, "cluster store refused a write");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}
