//! The one error type of the API, written in the shape of the API that was called:
//! OpenAI's `{"error": {"message", "type", "param", "code"}}` or Anthropic's
//! `{"type": "error", "error": {"type", "message"}}`, with the matching status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Which API's error shape to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI (`/v1/chat/completions`, `/v1/completions`, `/v1/models`, the rest).
    OpenAi,
    /// Anthropic (`/v1/messages`).
    Anthropic,
}

/// What went wrong, and how to tell the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// 400: the request is malformed or asks for something unsupported.
    Invalid,
    /// 401: no key, or the wrong one.
    Unauthorized,
    /// 404: no such model or route.
    NotFound,
    /// 405: the route exists with another method.
    MethodNotAllowed,
    /// 413: the body or the prompt is too large.
    TooLarge,
    /// 429: the queue is full; retry after a second.
    QueueFull,
    /// 503: shutting down.
    Unavailable,
    /// 500: the engine failed.
    Internal,
}

/// An API error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Its kind (and so its status).
    pub kind: Kind,
    /// One line for the user.
    pub message: String,
    /// The request field at fault.
    pub param: Option<String>,
    /// A machine-readable code (OpenAI's `code`).
    pub code: Option<&'static str>,
    /// Which shape to answer in.
    pub dialect: Dialect,
}

impl ApiError {
    /// An error of `kind` saying `message`, in OpenAI's shape until told otherwise.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            param: None,
            code: None,
            dialect: Dialect::OpenAi,
        }
    }

    /// 400 naming the field at fault.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self::new(Kind::Invalid, message).param(param)
    }

    /// Names the request field at fault.
    pub fn param(mut self, p: &str) -> Self {
        self.param = Some(p.to_string());
        self
    }

    /// Sets the machine-readable code.
    pub fn code(mut self, c: &'static str) -> Self {
        self.code = Some(c);
        self
    }

    /// Answers in `d`'s shape.
    pub fn dialect(mut self, d: Dialect) -> Self {
        self.dialect = d;
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            Kind::Invalid => StatusCode::BAD_REQUEST,
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::QueueFull => StatusCode::TOO_MANY_REQUESTS,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The body, in the dialect's shape.
    pub fn body(&self) -> serde_json::Value {
        match self.dialect {
            Dialect::OpenAi => {
                let kind = match self.kind {
                    Kind::Invalid | Kind::TooLarge | Kind::MethodNotAllowed => {
                        "invalid_request_error"
                    }
                    Kind::Unauthorized => "authentication_error",
                    Kind::NotFound => "not_found_error",
                    Kind::QueueFull => "rate_limit_error",
                    Kind::Unavailable => "server_unavailable",
                    Kind::Internal => "server_error",
                };
                json!({"error": {
                    "message": self.message,
                    "type": kind,
                    "param": self.param,
                    "code": self.code,
                }})
            }
            Dialect::Anthropic => {
                let kind = match self.kind {
                    Kind::Invalid | Kind::MethodNotAllowed => "invalid_request_error",
                    Kind::Unauthorized => "authentication_error",
                    Kind::NotFound => "not_found_error",
                    Kind::TooLarge => "request_too_large",
                    Kind::QueueFull => "rate_limit_error",
                    Kind::Unavailable => "overloaded_error",
                    Kind::Internal => "api_error",
                };
                json!({"type": "error", "error": {"type": kind, "message": self.message}})
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status(), axum::Json(self.body())).into_response();
        if self.kind == Kind::QueueFull {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

/// A JSON body that did not parse, as one line naming the problem (serde's message
/// names the field and the position).
pub fn bad_json(e: serde_json::Error) -> ApiError {
    let msg = e.to_string();
    let param = msg
        .split('`')
        .nth(1)
        .filter(|_| msg.starts_with("unknown field") || msg.starts_with("missing field"));
    let mut err = ApiError::new(Kind::Invalid, format!("invalid request body: {msg}"));
    if let Some(p) = param {
        err = err.param(p);
    }
    err
}
