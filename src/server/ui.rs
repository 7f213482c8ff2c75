//! The operator's status page at `/ui`: one HTML page with its script,
//! stylesheet and icon, embedded in the binary at compile time so it works
//! with no network and no build step. The page only calls the public admin
//! API (with the operator's token), so it is served without a token itself,
//! like `/health`.

use axum::http::header::{self, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");
const ICON_SVG: &str = include_str!("ui/icon.svg");

/// Only same-origin files and API calls: no inline script or style (the page
/// keeps both in `/ui/app.js` and `/ui/app.css` so this can forbid them), no
/// plugins, no framing (clickjacking of the pause and replay buttons).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page with its cluster section switched on (`[cluster]` configured):
/// the page then asks `/v1/cluster`, which answers 404 otherwise.
static INDEX_HTML_CLUSTER: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    INDEX_HTML.replacen(
        "data-role=\"cluster\"",
        "data-role=\"cluster\" data-configured=\"true\"",
        1,
    )
});

/// The page's routes; merged into the main router outside the token layer.
/// `cluster`: whether this sidecar has a cluster store to show.
pub fn routes<S: Clone + Send + Sync + 'static>(cluster: bool) -> Router<S> {
    let index: &'static str = if cluster {
        INDEX_HTML_CLUSTER.as_str()
    } else {
        INDEX_HTML
    };
    Router::new()
        .route(
            "/ui",
            get(move || async move { asset("text/html; charset=utf-8", index) }),
        )
        // Relative, so it also works behind a proxy that mounts us under a prefix.
        .route("/ui/", get(|| async { Redirect::permanent("../ui") }))
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/ui/icon.svg", get(|| async { asset("image/svg+xml", ICON_SVG) }))
}

/// One embedded file with the page's security headers. `no-cache` (revalidate
/// every time) because the files change with the binary, not with their URL.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    (headers, body).into_response()
}
