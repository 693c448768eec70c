//! The S3 API, on its own listener, over the same store as the Manta API.
//!
//! Not built yet: every request answers `NotImplemented` in S3's XML error form, and the
//! README lists the S3 API as missing.

use std::sync::Arc;

use axum::Router;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};

use crate::state::Frontdoor;

/// The S3 API's application.
pub fn router(_fd: Arc<Frontdoor>) -> Router {
    Router::new().fallback(|| async { not_implemented() })
}

fn not_implemented() -> Response {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NotImplemented</Code>\
                <Message>The S3 API is not implemented yet</Message></Error>";
    (
        StatusCode::NOT_IMPLEMENTED,
        [(header::CONTENT_TYPE, "application/xml")],
        body,
    )
        .into_response()
}
