//! The web console (issue 17): server-rendered HTML pages over the same handlers the JSON API
//! serves (what a page shows, the API answers too), for people who log in with a token of
//! their own (`vacsine user add NAME --role R`).
//!
//! Security, in one place:
//! * every page is rendered with `maud`, which escapes every interpolated value (text and
//!   attributes); the Content-Security-Policy allows only this origin's script and style, so
//!   a string that escaped anyway could still not run;
//! * the session cookie is `__Host-` prefixed, `HttpOnly; Secure; SameSite=Strict`; the store
//!   keeps only its hash, and revoking a user deletes their sessions;
//! * every form that changes something carries the session's CSRF token, checked here before
//!   the role; the login form carries one bound to a cookie of its own (double submit);
//! * roles are checked on the server for every page and action: [`Role`].
//!
//! A child of `server`.

use super::{ApiError, Srv};
use crate::now_ms;
use axum::extract::{FromRequestParts, State};
use axum::http::header::{self, HeaderValue};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
use std::sync::Arc;

mod gantt;
mod pages;
mod posture;
pub mod users;

pub use users::{AddUser, UserCreated, UserList, UserRevoked, UserView};

/// Where the console is served.
pub const PREFIX: &str = "/console";
/// The session cookie (`__Host-`: Secure, path `/`, no domain: only this origin sets it).
const SESSION_COOKIE: &str = "__Host-vacsine_session";
/// The login form's CSRF cookie (double submit: the form's hidden field must equal it).
const LOGIN_COOKIE: &str = "__Host-vacsine_login";
/// How long a session lasts (log in again after).
const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;

const CSS: &str = include_str!("console/assets/console.css");
const JS: &str = include_str!("console/assets/console.js");

/// What a console user may do, each role including the ones before it: a viewer reads every
/// page; an operator also approves and denies; an admin is an operator (users are managed
/// with the orchestrator's operator token: `vacsine user`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// The console's routes (merged into the orchestrator's router).
pub(super) fn router() -> Router<Arc<Srv>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route(PREFIX, get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(pages::sites))
        .route("/console/login", get(login_form).post(login))
        .route("/console/logout", post(logout))
        .route("/console/runs", get(pages::runs))
        .route("/console/runs/{id}", get(pages::run))
        .route("/console/runs/{id}/report", get(pages::report))
        .route("/console/events", get(pages::events))
        .route("/console/events/live", get(pages::live))
        .route("/console/approvals/{id}", post(pages::settle))
        .route("/console/posture", get(posture::page))
        .route("/console/registry", get(pages::registry))
        .route("/console/registry/{kind}/{name}", get(pages::document))
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
        .layer(axum::middleware::from_fn(security_headers))
}

/// On every console answer: no script, style or frame from anywhere else, no sniffing, no
/// caching of pages holding data.
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "private, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// A logged-in user, from the session cookie (see [`Session::from_request_parts`]).
pub(super) struct Session {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    id_hash: String,
}

impl Session {
    /// Refused unless the user's role is `need` or above.
    fn require(&self, need: Role, what: &str) -> Result<(), Response> {
        if self.role >= need {
            Ok(())
        } else {
            Err(refusal(
                StatusCode::FORBIDDEN,
                Some(self),
                &format!(
                    "{what} needs the {} role; you ({}) are a {}",
                    need.as_str(),
                    self.user,
                    self.role.as_str()
                ),
            ))
        }
    }

    /// Refused unless `given` is this session's CSRF token.
    fn check_csrf(&self, given: Option<&str>) -> Result<(), Response> {
        match given {
            Some(g) if vacsine_wire::constant_time_eq(g.as_bytes(), self.csrf.as_bytes()) => Ok(()),
            _ => Err(refusal(
                StatusCode::FORBIDDEN,
                Some(self),
                "this form's CSRF token is missing or wrong: reload the page and send it again",
            )),
        }
    }
}

/// The value of cookie `name` in the request.
fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn hash(secret: &str) -> String {
    vacsine_wire::sha256_pin(secret.trim().as_bytes())
}

impl FromRequestParts<Arc<Srv>> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<Srv>) -> Result<Self, Response> {
        let found = match cookie(&parts.headers, SESSION_COOKIE) {
            Some(v) => s
                .store
                .session(&hash(v), now_ms())
                .await
                .map_err(|e| store_failed(ApiError::from(e)))?,
            None => None,
        };
        let Some((row, user)) = found else {
            // Pages send the browser to the login form; anything else is refused.
            return Err(
                if parts.method == Method::GET && !is_stream(&parts.headers) {
                    Redirect::to("/console/login").into_response()
                } else {
                    refusal(
                    StatusCode::UNAUTHORIZED,
                    None,
                    "not logged in, or the session ended (logout, expiry or the user revoked): log in again",
                )
                },
            );
        };
        let Some(role) = Role::parse(&user.role) else {
            return Err(refusal(
                StatusCode::FORBIDDEN,
                None,
                &format!("user {} has an unknown role", user.name),
            ));
        };
        Ok(Session {
            user: user.name,
            role,
            csrf: row.csrf,
            id_hash: row.id_hash,
        })
    }
}

fn is_stream(h: &HeaderMap) -> bool {
    h.get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// A page in the console's frame: navigation, who is logged in, the logout form.
fn frame(title: &str, who: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Vacsine" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/console/" { "Vacsine" }
                    @if let Some(s) = who {
                        nav {
                            a href="/console/" { "Sites" }
                            a href="/console/runs" { "Runs" }
                            a href="/console/events" { "Events" }
                            a href="/console/posture" { "Posture" }
                            a href="/console/registry" { "Registry" }
                        }
                        div.who {
                            span #whoami { (s.user) " · " (s.role.as_str()) }
                            form method="post" action="/console/logout" {
                                input type="hidden" name="csrf" value=(s.csrf);
                                button #logout type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

fn render(status: StatusCode, m: Markup) -> Response {
    (status, Html(m.into_string())).into_response()
}

/// A refusal as a page (its reason escaped like everything else).
fn refusal(status: StatusCode, who: Option<&Session>, why: &str) -> Response {
    render(
        status,
        frame(
            status.canonical_reason().unwrap_or("Refused"),
            who,
            html! { p.error #refusal { (why) } },
        ),
    )
}

/// An API error met while rendering a page, shown with its status and message.
fn api_failed(who: &Session, e: ApiError) -> Response {
    refusal(e.status, Some(who), &e.message)
}

fn store_failed(e: ApiError) -> Response {
    refusal(e.status, None, &e.message)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    token: String,
}

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: Option<String>,
}

fn login_page(status: StatusCode, csrf: &str, error: Option<&str>) -> Response {
    let page = frame(
        "Log in",
        None,
        html! {
            @if let Some(e) = error { p.error #refusal { (e) } }
            form.login method="post" action="/console/login" {
                input type="hidden" name="csrf" value=(csrf);
                label for="token" { "Your token (" code { "vacsine user add" } " printed it)" }
                input #token type="password" name="token" autocomplete="current-password" required;
                button #login type="submit" { "Log in" }
            }
        },
    );
    let mut r = render(status, page);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={csrf}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=3600"
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

async fn login_form() -> Response {
    login_page(StatusCode::OK, &super::random_hex(32), None)
}

async fn login(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let fresh = super::random_hex(32);
    let Ok(Form(f)) = form else {
        return login_page(
            StatusCode::BAD_REQUEST,
            &fresh,
            Some("the login form could not be read: send it again"),
        );
    };
    let bound = cookie(&h, LOGIN_COOKIE);
    let csrf_ok = matches!((&f.csrf, bound), (Some(a), Some(b)) if !b.is_empty() && vacsine_wire::constant_time_eq(a.as_bytes(), b.as_bytes()));
    if !csrf_ok {
        return login_page(
            StatusCode::FORBIDDEN,
            &fresh,
            Some("this form's CSRF token is missing or wrong: send the form again"),
        );
    }
    let user = match s.store.user_by_token(&hash(&f.token)).await {
        Ok(u) => u,
        Err(e) => return store_failed(e.into()),
    };
    let Some(user) = user else {
        tracing::info!("console: a login with an unknown or revoked token was refused");
        return login_page(
            StatusCode::UNAUTHORIZED,
            &fresh,
            Some("unknown or revoked token (an admin makes one with `vacsine user add NAME --role R`)"),
        );
    };
    let id = super::random_hex(32);
    let now = now_ms();
    let row = crate::store::SessionRow {
        id_hash: hash(&id),
        user: user.name.clone(),
        csrf: super::random_hex(32),
        created_ms: now,
        expires_ms: now + SESSION_TTL_MS,
    };
    if let Err(e) = s.store.put_session(&row, now).await {
        return store_failed(e.into());
    }
    tracing::info!("console: user {} ({}) logged in", user.name, user.role);
    let mut r = Redirect::to("/console/").into_response();
    for c in [
        format!(
            "{SESSION_COOKIE}={id}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
            SESSION_TTL_MS / 1000
        ),
        format!("{LOGIN_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0"),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

async fn logout(
    State(s): State<Arc<Srv>>,
    who: Session,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let csrf = form.ok().and_then(|Form(f)| f.csrf);
    if let Err(r) = who.check_csrf(csrf.as_deref()) {
        return r;
    }
    if let Err(e) = s.store.delete_session(&who.id_hash).await {
        return api_failed(&who, e.into());
    }
    tracing::info!("console: user {} logged out", who.user);
    let mut r = Redirect::to("/console/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0"
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

impl Srv {
    /// The operator's credentials, for the console's calls to the API's own handlers (made
    /// after the console checked the session and its role).
    fn as_operator(&self) -> Result<HeaderMap, ApiError> {
        let mut h = HeaderMap::new();
        let v = HeaderValue::from_str(&format!("Bearer {}", self.token)).map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the operator token holds characters a header cannot",
            )
        })?;
        h.insert(header::AUTHORIZATION, v);
        Ok(h)
    }
}

#[cfg(test)]
mod tests;
