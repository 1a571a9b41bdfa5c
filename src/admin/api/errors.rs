//! The admin API's error codes ([`Code`], each with its one status) and refusals
//! ([`ApiError`]): what a library error becomes for an API client, never quoting a value.

use super::*;

macro_rules! codes {
    ($($(#[doc = $doc:literal])* $v:ident = ($status:literal, $code:literal),)*) => {
        /// The admin API's error codes, each with its one HTTP status: the whole vocabulary
        /// (the OpenAPI document's `Error.code` enum is made from [`Code::ALL`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code {
            $($(#[doc = $doc])* $v,)*
        }

        impl Code {
            /// Every code.
            pub const ALL: &'static [Code] = &[$(Code::$v,)*];

            /// The HTTP status it is sent with.
            pub fn status(self) -> u16 {
                match self {
                    $(Code::$v => $status,)*
                }
            }

            /// The stable code, as in the body's `error.code`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$v => $code,)*
                }
            }
        }
    };
}

codes! {
    /// A value is refused (bad email, short password, unknown region, last owner, ...).
    InvalidRequest = (400, "invalid_request"),
    /// Not a JSON object, a missing or unknown field, a value of the wrong type.
    InvalidBody = (400, "invalid_body"),
    /// `DELETE /api/orgs/{id}` without `?hard=true`.
    HardDeleteRequired = (400, "hard_delete_required"),
    /// The OAuth token endpoint gave no token (nothing stored).
    OauthTokenFailed = (400, "oauth_token_failed"),
    /// An OAuth connect's callback: the state is unknown, used, expired, another operator's or
    /// another credential's, or missing with the code (nothing stored).
    OauthStateInvalid = (400, "oauth_state_invalid"),
    /// The authorization server answered the authorization request with an error (the user
    /// declined).
    OauthAuthorizationDenied = (400, "oauth_authorization_denied"),
    /// The callback's `iss` is not the connect's authorization server (RFC 9207).
    OauthIssMismatch = (400, "oauth_iss_mismatch"),
    /// Any login failure.
    InvalidCredentials = (401, "invalid_credentials"),
    /// No, malformed, expired, foreign or revoked session token.
    InvalidToken = (401, "invalid_token"),
    /// The source address is outside `[admin] allow_ips`.
    IpNotAllowed = (403, "ip_not_allowed"),
    /// The caller's role does not allow the call.
    PermissionDenied = (403, "permission_denied"),
    /// A state-changing call made with the console's session cookie without its CSRF token
    /// (`X-Sluice-CSRF`), with another session's, or from another site.
    CsrfFailed = (403, "csrf_failed"),
    /// Unknown route, or no such org, key, user or credential.
    NotFound = (404, "not_found"),
    /// A known route with another method.
    MethodNotAllowed = (405, "method_not_allowed"),
    /// The org, user (email) or credential already exists.
    Conflict = (409, "conflict"),
    /// The body is over `[admin] max_body_bytes`.
    RequestTooLarge = (413, "request_too_large"),
    /// A body without `Content-Type: application/json`.
    UnsupportedMediaType = (415, "unsupported_media_type"),
    /// Too many failed logins or password checks; `Retry-After` says when to retry.
    RateLimited = (429, "rate_limited"),
    /// The authorization server is not one sluice connects to: no PKCE S256, a plain http
    /// endpoint, metadata for another issuer or resource.
    OauthServerRefused = (422, "oauth_server_refused"),
    /// A bug or a store failure; the log has the detail.
    InternalError = (500, "internal_error"),
    /// The protected resource or authorization server metadata cannot be found or read.
    OauthDiscoveryFailed = (502, "oauth_discovery_failed"),
    /// Dynamic client registration (RFC 7591) failed, or the server offers none.
    OauthRegistrationFailed = (502, "oauth_registration_failed"),
    /// The token endpoint gave no token for the authorization code (nothing stored).
    OauthExchangeFailed = (502, "oauth_exchange_failed"),
    /// `SLUICE_JWT_SECRET` is not set.
    AdminApiDisabled = (503, "admin_api_disabled"),
}

/// A refusal: a code (which decides the status) and a message that never quotes a value.
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.code.status()
    }
}

pub(super) fn err(code: Code, message: impl Into<String>) -> ApiError {
    ApiError {
        code,
        message: message.into(),
        retry_after: None,
    }
}

pub(super) fn denied() -> ApiError {
    err(
        Code::PermissionDenied,
        "Your role does not allow this action.",
    )
}

pub(super) fn bad_token() -> ApiError {
    err(
        Code::InvalidToken,
        "Missing, invalid, expired or revoked session token. Log in again at POST /api/auth/login.",
    )
}

pub(super) const INVALID_CREDENTIALS: &str = "Invalid email, password or second factor.";

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        match e {
            Error::Invalid(m) => err(Code::InvalidRequest, m),
            e @ Error::Field { .. } => err(Code::InvalidRequest, e.to_string()),
            Error::TotpRequired { role, .. } => err(
                Code::InvalidRequest,
                format!("Role {role} requires TOTP: the user must enrol it first (POST /api/auth/totp, or `sluice users enroll-totp` on the host)."),
            ),
            Error::EmptySecret => err(Code::InvalidRequest, "secret is empty."),
            Error::Store(store::Error::NotFound { what, .. }) => {
                err(Code::NotFound, format!("No such {what}."))
            }
            Error::Store(store::Error::Duplicate { what, .. }) => {
                err(Code::Conflict, format!("That {what} already exists."))
            }
            Error::Store(e) => internal(&e),
            Error::Vault(e) => internal(&e),
            // serve checks its key at start: this is the store changing under it.
            e @ Error::WrongMasterKey { .. } => internal(&e),
            Error::OAuth { code, message } => {
                let c = Code::ALL
                    .iter()
                    .copied()
                    .find(|c| c.as_str() == code)
                    .unwrap_or(Code::InternalError);
                // A sentence: its first letter capitalised (whatever the letter), a full stop.
                let mut chars = message.chars();
                let mut m: String = chars
                    .next()
                    .map(|f| f.to_uppercase().chain(chars).collect())
                    .unwrap_or_default();
                if !m.ends_with(['.', ')', ':']) {
                    m.push('.');
                }
                err(c, m)
            }
        }
    }
}

/// A failure that is not the caller's: logged, answered with a generic message.
pub(super) fn internal(e: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "admin API operation failed");
    err(Code::InternalError, "Internal error; see the sluice log.")
}

impl From<crate::policy::Invalid> for ApiError {
    fn from(e: crate::policy::Invalid) -> ApiError {
        ApiError::from(Error::from(e))
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> ApiError {
        ApiError::from(Error::Store(e))
    }
}

pub(super) fn not_allowed() -> ApiError {
    err(Code::MethodNotAllowed, "Method not allowed on this route.")
}

pub(super) fn disabled() -> ApiError {
    err(
        Code::AdminApiDisabled,
        "The admin API is disabled: start sluice with SLUICE_JWT_SECRET (at least 32 bytes, e.g. `openssl rand -base64 48`).",
    )
}
