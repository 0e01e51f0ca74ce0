//! `/v1/conversations`: chat. Non-members get 404 on every route.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::input::{JsonBody, Query, path_id, query};
use crate::{
    app::AppState,
    auth::AuthUser,
    domain::{
        UserId,
        chat::{Conversation, ConversationUnread, Message, MessageEdit, MessagePage, NewConversation, NewMember, NewMessage, ReadMark, TypingUpdate},
    },
    error::{ApiError, ErrorBody},
};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show))
        .routes(routes!(add_member))
        .routes(routes!(remove_member))
        .routes(routes!(send, history))
        .routes(routes!(edit, delete_message))
        .routes(routes!(typing))
        .routes(routes!(read))
}

/// Creates a conversation; the caller is a member.
#[utoipa::path(post, path = "/v1/conversations", tag = "chat", security(("bearer" = [])), request_body = NewConversation,
    responses((status = 201, body = Conversation), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create(State(state): State<AppState>, AuthUser(user): AuthUser, body: JsonBody<NewConversation>) -> Result<(StatusCode, Json<Conversation>), ApiError> {
    Ok((StatusCode::CREATED, Json(state.chat.create(&user.user, body.value).await?)))
}

/// The caller's conversations, most recent activity first.
#[utoipa::path(get, path = "/v1/conversations", tag = "chat", security(("bearer" = [])),
    responses((status = 200, body = Vec<Conversation>), (status = 401, body = ErrorBody)))]
async fn list(State(state): State<AppState>, AuthUser(user): AuthUser) -> Result<Json<Vec<Conversation>>, ApiError> {
    Ok(Json(state.chat.list(&user.user).await?))
}

/// One conversation.
#[utoipa::path(get, path = "/v1/conversations/{id}", tag = "chat", security(("bearer" = [])), params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = Conversation), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn show(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<String>) -> Result<Json<Conversation>, ApiError> {
    Ok(Json(state.chat.get(&user.user, path_id(&id)?).await?))
}

/// Adds a member (any member may); the new member receives the
/// conversation's events from now on. A user who left this conversation
/// cannot be added back by others (403).
#[utoipa::path(post, path = "/v1/conversations/{id}/members", tag = "chat", security(("bearer" = [])), params(("id" = i64, Path, minimum = 1)), request_body = NewMember,
    responses((status = 200, body = Conversation), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "The user left this conversation"), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn add_member(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<String>, body: JsonBody<NewMember>) -> Result<Json<Conversation>, ApiError> {
    let member = UserId::parse(body.value.user_id).map_err(|why| ApiError::invalid_field("user_id", format!("user id {why}")))?;
    Ok(Json(state.chat.add_member(&user.user, path_id(&id)?, member).await?))
}

/// Leaves a conversation: `user_id` must be the caller.
#[utoipa::path(delete, path = "/v1/conversations/{id}/members/{user_id}", tag = "chat", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1), ("user_id" = String, Path, min_length = 1, max_length = 255, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")),
    responses((status = 204, description = "Left"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn remove_member(State(state): State<AppState>, AuthUser(user): AuthUser, Path((id, member)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    let member = UserId::parse(member).map_err(|_| ApiError::NotFound)?;
    state.chat.leave(&user.user, path_id(&id)?, &member).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a message. The same `client_message_id` again from the same sender
/// answers 200 with the stored message and sends nothing.
#[utoipa::path(post, path = "/v1/conversations/{id}/messages", tag = "chat", security(("bearer" = [])), params(("id" = i64, Path, minimum = 1)), request_body = NewMessage,
    responses((status = 201, body = Message), (status = 200, body = Message, description = "A retry: the message already stored"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn send(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<String>, body: JsonBody<NewMessage>) -> Result<Response, ApiError> {
    let sent = state.chat.send(&user.user, path_id(&id)?, body.value).await?;
    let status = if sent.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(sent.message)).into_response())
}

/// Messages, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/conversations/{id}/messages", tag = "chat", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1), ("before" = Option<String>, Query, pattern = r"^[1-9][0-9]{0,17}$", description = "`next_cursor` of the previous page"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1-100, default 50")),
    responses((status = 200, body = MessagePage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn history(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<String>, Query(page): Query<HistoryParams>) -> Result<Json<MessagePage>, ApiError> {
    Ok(Json(state.chat.history(&user.user, path_id(&id)?, page.before, page.limit).await?))
}

/// The query of [`history`].
#[derive(serde::Deserialize)]
struct HistoryParams {
    #[serde(default, deserialize_with = "query::cursor")]
    before: Option<i64>,
    #[serde(default = "query::default_limit", deserialize_with = "query::limit")]
    limit: u64,
}

/// Edits a message (its sender only).
#[utoipa::path(patch, path = "/v1/conversations/{id}/messages/{message_id}", tag = "chat", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1), ("message_id" = i64, Path, minimum = 1)), request_body = MessageEdit,
    responses((status = 200, body = Message), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn edit(State(state): State<AppState>, AuthUser(user): AuthUser, Path((id, message_id)): Path<(String, String)>, body: JsonBody<MessageEdit>) -> Result<Json<Message>, ApiError> {
    Ok(Json(state.chat.edit(&user.user, path_id(&id)?, path_id(&message_id)?, body.value.content).await?))
}

/// Deletes a message (its sender only); a tombstone with `content: null` stays.
#[utoipa::path(delete, path = "/v1/conversations/{id}/messages/{message_id}", tag = "chat", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1), ("message_id" = i64, Path, minimum = 1)),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_message(State(state): State<AppState>, AuthUser(user): AuthUser, Path((id, message_id)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    state.chat.delete(&user.user, path_id(&id)?, path_id(&message_id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Says whether the caller is typing. Without renewal, `true` ends by itself
/// after 5 s with an `is_typing: false` event.
#[utoipa::path(post, path = "/v1/conversations/{id}/typing", tag = "chat", security(("bearer" = [])), params(("id" = i64, Path, minimum = 1)), request_body = TypingUpdate,
    responses((status = 204, description = "Announced"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn typing(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<String>, body: JsonBody<TypingUpdate>) -> Result<StatusCode, ApiError> {
    state.chat.typing(&user.user, path_id(&id)?, body.value.is_typing).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Moves the caller's read mark forward; the other members get a `read` receipt.
#[utoipa::path(post, path = "/v1/conversations/{id}/read", tag = "chat", security(("bearer" = [])), params(("id" = i64, Path, minimum = 1)), request_body = ReadMark,
    responses((status = 200, body = ConversationUnread), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn read(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<String>, body: JsonBody<ReadMark>) -> Result<Json<ConversationUnread>, ApiError> {
    Ok(Json(state.chat.read(&user.user, path_id(&id)?, body.value.message_id).await?))
}
