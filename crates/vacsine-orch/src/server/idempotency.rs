//! Operator writes (POST) sent with an `Idempotency-Key` header are made once: the CLI sends one key
//! per invocation and retries with it while the orchestrator is unreachable, so a write whose
//! answer was lost (the link cut after the orchestrator made it) is answered again from the
//! store instead of being made twice.
//!
//! * The key is claimed in the store before the write (one claim per key, also across
//!   replicas sharing PostgreSQL); the write runs in a task of its own, so a client that goes
//!   away does not cut it between the change and the keeping of its answer.
//! * A success (2xx) is kept with the key and is the answer to every repeat. Anything else
//!   made no change: the claim is released and the same key may ask again.
//! * A repeat while the first is under way is answered 409 `idempotency_pending` (the client
//!   retries). A claim whose orchestrator died before answering stays pending: its write may
//!   or may not have been made, so it is never made again with that key.
//! * The same key for another request is refused (422 `idempotency_key_reused`).
//! * Keys are kept for [`KEEP_MS`].

use super::{ApiError, Srv};
use crate::now_ms;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// How long a key and its answer are kept.
pub const KEEP_MS: i64 = 24 * 3600 * 1000;
/// The largest answer kept (operator write answers are a few hundred bytes to a few KiB: a
/// run id, the versions a push made).
const MAX_ANSWER: usize = 16 << 20;

/// A key: 8 to 200 characters of letters, digits, `-` and `_` (the CLI makes `KEY-n` of a
/// given key of up to 128 for the n-th write of one invocation).
fn valid(key: &str) -> bool {
    (8..=200).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The middleware on operator routes (after the token check).
pub(super) async fn idempotent(
    State(s): State<Arc<Srv>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    // PUT (an image upload) is idempotent by content: the same archive sent again makes no
    // new version. A repeat of a large upload is not answered from here (it would have to be
    // read to be answered cleanly).
    if *req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get(HEADER) else {
        return next.run(req).await;
    };
    let key = match key.to_str() {
        Ok(k) if valid(k) => k.to_string(),
        _ => return super::drain_then(
            req.into_body(),
            ApiError::bad(
                "Idempotency-Key: give 8 to 200 letters, digits, `-` or `_` (one per submission)",
            ),
        )
        .await,
    };
    let request = format!("{} {}", req.method(), req.uri().path());
    let now = now_ms();
    let held = match s
        .store
        .claim_idempotency_key(&key, &request, now, now - KEEP_MS)
        .await
    {
        Ok(h) => h,
        Err(e) => return super::drain_then(req.into_body(), e.into()).await,
    };
    match held {
        None => {
            let store = s.store.clone();
            let made = tokio::spawn(async move {
                let r = next.run(req).await;
                keep(&*store, &key, r).await
            });
            made.await.unwrap_or_else(|e| {
                tracing::error!("an operator write failed: {e}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the write failed",
                )
                .into_response()
            })
        }
        Some(row) if row.request != request => {
            super::drain_then(
                req.into_body(),
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    format!(
                        "this Idempotency-Key was used for `{}`, not `{request}`: give each submission a key of its own",
                        row.request
                    ),
                ),
            )
            .await
        }
        Some(row) => {
            let answer = match row.answer {
                Some((status, body)) => {
                    let mut r = (
                        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                        body,
                    )
                        .into_response();
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    r.headers_mut()
                        .insert("idempotent-replayed", HeaderValue::from_static("true"));
                    r
                }
                None => ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_pending",
                    "a request with this Idempotency-Key is under way (or was cut by a stop of the orchestrator, and may have been made): ask again later; check `vacsine runs` before submitting anew",
                )
                .into_response(),
            };
            replay(req.into_body(), answer).await
        }
    }
}

/// Keep `r` as the answer to `key` when it is a success; release the key otherwise.
async fn keep(store: &dyn crate::store::Store, key: &str, r: Response) -> Response {
    let status = r.status();
    if !status.is_success() {
        if let Err(e) = store.release_idempotency_key(key).await {
            tracing::error!("releasing idempotency key {key}: {e}");
        }
        return r;
    }
    let (parts, body) = r.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_ANSWER).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("the answer to an operator write could not be read: {e}");
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the answer could not be read",
            )
            .into_response();
        }
    };
    match std::str::from_utf8(&bytes) {
        Ok(text) => {
            if let Err(e) = store
                .answer_idempotency_key(key, status.as_u16(), text)
                .await
            {
                // Made, but its answer not kept: a repeat is answered "pending", never made
                // again.
                tracing::error!("keeping the answer to idempotency key {key}: {e}");
            }
        }
        Err(_) => tracing::warn!("the answer to idempotency key {key} is not text: not kept"),
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// `answer`, after the request's body is drained (as for a refusal).
async fn replay(body: axum::body::Body, answer: Response) -> Response {
    let drained = super::drain(body).await;
    let mut r = answer;
    if !drained {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_short_plain_tokens() {
        assert!(super::valid("0123456789abcdef"));
        assert!(super::valid("a-b_c-d_e"));
        assert!(!super::valid("short"));
        assert!(super::valid(&"x".repeat(200)));
        assert!(!super::valid(&"x".repeat(201)));
        assert!(!super::valid("has space in it"));
        assert!(!super::valid("semi;colon;key"));
    }
}
