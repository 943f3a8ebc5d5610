//! Console users, managed through the operator API (`vacsine user add|list|revoke`): each
//! person gets a token of their own, shown once and kept as a hash; revoking a user ends
//! their sessions at once. A child of `console`.

use super::super::extract::{ApiJson, ApiPath};
use super::super::{ApiError, ApiResult, Srv};
use super::Role;
use crate::store::UserRow;
use crate::{now_ms, rfc3339};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use vacsine_contract::proto;

/// Where users are managed.
pub const OP_USERS: &str = "/v1/users";

/// `POST /v1/users`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddUser {
    /// 1 to 64 letters, digits, `.`, `_`, `-` or `@`.
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserView {
    pub name: String,
    pub role: String,
    pub created: String,
    pub revoked: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserCreated {
    pub user: UserView,
    /// The user's token for the console's login form: shown once, kept only as a hash.
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserList {
    pub users: Vec<UserView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserRevoked {
    pub user: UserView,
    /// Console sessions of theirs that ended with the revocation.
    pub sessions_ended: usize,
}

fn view(u: &UserRow) -> UserView {
    UserView {
        name: u.name.clone(),
        role: u.role.clone(),
        created: rfc3339(u.created_ms),
        revoked: u.revoked_ms.map(rfc3339),
    }
}

fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

#[utoipa::path(post, path = "/v1/users", tag = "operator", security(("operator" = [])),
    description = "Add a console user with a role (viewer: reads every page; operator: also approves and denies; admin: as operator). The answer holds the user's token, shown once (stored hashed). A revoked user's name may be given again.",
    request_body = AddUser,
    responses((status = 200, body = UserCreated),
        (status = 400, body = proto::ErrorBody, description = "a name that is not 1 to 64 letters, digits, `.`, `_`, `-` or `@`, or an unknown role"),
        (status = 409, body = proto::ErrorBody, description = "a user of that name exists and is not revoked")))]
pub(in super::super) async fn add_user(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
    ApiJson(r): ApiJson<AddUser>,
) -> ApiResult<Json<UserCreated>> {
    s.operator(&h)?;
    if !valid_user_name(&r.name) {
        return Err(ApiError::bad(format!(
            "`name` {:?}: give 1 to 64 letters, digits, `.`, `_`, `-` or `@`",
            r.name.chars().take(80).collect::<String>()
        )));
    }
    let Some(role) = Role::parse(&r.role) else {
        return Err(ApiError::bad(format!(
            "`role` {:?}: one of viewer, operator, admin",
            r.role.chars().take(40).collect::<String>()
        )));
    };
    let token = format!("vcu_{}", super::super::random_hex(32));
    let row = UserRow {
        name: r.name.clone(),
        role: role.as_str().into(),
        token_hash: super::hash(&token),
        created_ms: now_ms(),
        revoked_ms: None,
    };
    if !s.store.put_user(&row).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "user `{}` exists; `vacsine user revoke {}` first to give the name a new token",
                r.name, r.name
            ),
        ));
    }
    tracing::info!("console user {} added ({})", row.name, row.role);
    Ok(Json(UserCreated {
        user: view(&row),
        token,
    }))
}

#[utoipa::path(get, path = "/v1/users", tag = "operator", security(("operator" = [])),
    description = "Console users by name, revoked ones too (never their tokens).",
    responses((status = 200, body = UserList)))]
pub(in super::super) async fn list_users(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
) -> ApiResult<Json<UserList>> {
    s.operator(&h)?;
    let users = s.store.users().await?.iter().map(view).collect();
    Ok(Json(UserList { users }))
}

#[utoipa::path(post, path = "/v1/users/{name}/revoke", tag = "operator", security(("operator" = [])),
    description = "Revoke a console user: their token is refused and every session of theirs ends at once (their open pages and live updates stop).",
    params(("name" = String, Path, description = "the user's name")),
    responses((status = 200, body = UserRevoked),
        (status = 404, body = proto::ErrorBody, description = "no such user, or revoked already")))]
pub(in super::super) async fn revoke_user(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<UserRevoked>> {
    s.operator(&h)?;
    let Some(ended) = s.store.revoke_user(&name, now_ms()).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no user `{name}` that is not revoked (`vacsine user list` shows them)"),
        ));
    };
    let row = s
        .store
        .users()
        .await?
        .into_iter()
        .find(|u| u.name == name)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no user `{name}`"),
            )
        })?;
    tracing::info!("console user {name} revoked: {ended} session(s) ended");
    Ok(Json(UserRevoked {
        user: view(&row),
        sessions_ended: ended,
    }))
}
