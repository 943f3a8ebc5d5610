//! Typed inputs of the operator API whose every refusal is the API's JSON error
//! ([`proto::ErrorBody`]): a JSON body (content type, size, shape, each error located at the
//! field), a query string, a path; and the answers for a route that does not exist or a
//! method a route does not serve. axum's own rejections are plain text: none reaches a
//! client.

use super::{drain_then, ApiError};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use vacsine_contract::proto;

/// The machine name of a refusal with this status.
fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

/// One of axum's rejections (status and text) as the API's JSON error.
fn from_rejection(status: StatusCode, text: String) -> ApiError {
    ApiError::new(status, code_of(status), text)
}

/// Short name of `T` for messages (`SubmitRun`, not `vacsine_orch::proto::SubmitRun`).
fn short_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

/// Whether the request says its body is JSON (`application/json`, with parameters or not,
/// or a `+json` type).
fn is_json(h: &HeaderMap) -> bool {
    let Some(ct) = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A JSON request body of type `T`: refused with 415 when it is not sent as JSON, 413 over
/// the route's limit, 400 naming the field at fault (`job.workflow.spec.steps[0]: …`).
pub(super) struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let what = short_name::<T>();
        if !is_json(req.headers()) {
            let e = ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "the body must be a JSON `{what}` sent with `content-type: application/json`"
                ),
            );
            return Err(drain_then(req.into_body(), e).await);
        }
        let bytes = match Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(r) => {
                let status = r.status();
                let text = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    format!(
                        "request body over {} bytes, the largest an operator request may be",
                        proto::MAX_OPERATOR_BODY
                    )
                } else {
                    format!("reading the request body: {}", r.body_text())
                };
                let mut resp = from_rejection(status, text).into_response();
                // The rest of the body was not read: the connection cannot carry another
                // request.
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return Err(resp);
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad(format!(
                "the request body is empty: this operation takes a JSON `{what}` (see /v1/openapi.json)"
            ))
            .into_response());
        }
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let v = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| located(what, e).into_response())?;
        // Nothing but white space after the value.
        de.end().map_err(|e| {
            ApiError::bad(format!("the body is not a valid `{what}`: {e}")).into_response()
        })?;
        Ok(ApiJson(v))
    }
}

/// A body that is not a `what`, naming where (`job.site: invalid type …`).
fn located(what: &str, e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    if path == "." || path.is_empty() {
        ApiError::bad(format!("the body is not a valid `{what}`: {}", e.inner()))
    } else {
        ApiError::bad(format!(
            "the body is not a valid `{what}`: at `{path}`: {}",
            e.inner()
        ))
    }
}

/// The query string as `T`: refused with 400 naming the parameter.
pub(super) struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|r| from_rejection(r.status(), r.body_text()))
    }
}

/// The path's parameters as `T`.
pub(super) struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|r| from_rejection(r.status(), r.body_text()))
    }
}

/// A route that does not exist.
pub(super) async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route {method} {}; the API is described at {}",
            uri.path(),
            super::OPENAPI_PATH
        ),
    )
}

/// A method the route does not serve (axum adds the `Allow` header).
pub(super) async fn no_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not take {method} (the `allow` header lists what it takes)",
            uri.path()
        ),
    )
}
