//! Request bodies: read strictly (one JSON object, nothing after it, unknown fields refused),
//! the request types, and the helpers that turn their values into settings.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::*;

pub(super) fn body<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    let json_type = req.content_type.as_deref().is_some_and(|c| {
        c.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json_type {
        return Err(err(
            Code::UnsupportedMediaType,
            "Send a JSON body with Content-Type: application/json.",
        ));
    }
    // An object and nothing else: serde would also read a struct from an array (`[null]`
    // setting its first field) and ignore what follows the value.
    if req.body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(err(
            Code::InvalidBody,
            "Invalid JSON body: the body must be a JSON object.",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(&req.body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        // serde's messages can quote the offending value (a password); only field names are
        // echoed.
        let inner = e.inner().to_string();
        let path = e.path().to_string();
        let message = if inner.starts_with("missing field") || inner.starts_with("unknown field") {
            inner
                .split(" at line")
                .next()
                .unwrap_or_default()
                .to_string()
        } else if path == "." {
            "the body must be a JSON object".to_string()
        } else {
            format!("invalid value for `{path}`")
        };
        err(Code::InvalidBody, format!("Invalid JSON body: {message}."))
    })?;
    de.end().map_err(|_| {
        err(
            Code::InvalidBody,
            "Invalid JSON body: something follows the object.",
        )
    })?;
    Ok(value)
}

pub(super) fn query_params(q: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// A value a body names with a string from a fixed set: a setting, a key's setting, a region.
pub(super) trait Choice: Copy + Sized {
    /// The value `s` names, if any.
    fn read(s: &str) -> Option<Self>;
    /// Why a string that names none is refused (names the field, never quotes the value).
    fn refusal(field: &str) -> String;
}

impl Choice for Setting {
    fn read(s: &str) -> Option<Self> {
        Setting::parse(s)
    }
    fn refusal(field: &str) -> String {
        format!("{field} must be \"on\" or \"off\".")
    }
}

impl Choice for KeySetting {
    fn read(s: &str) -> Option<Self> {
        KeySetting::parse(s)
    }
    fn refusal(field: &str) -> String {
        format!("{field} must be \"on\", \"off\" or \"inherit\".")
    }
}

impl Choice for Region {
    fn read(s: &str) -> Option<Self> {
        s.parse().ok()
    }
    fn refusal(_field: &str) -> String {
        "Unknown region: use us, eu or apac.".into()
    }
}

/// A [`Choice`] field as the body gives it. What is not a string refuses the body as it is read
/// (`invalid_body`, as for any field of the wrong type); a string that names no value is kept
/// until the handler checks it ([`Checked::get`]), so that it is refused as `invalid_request`
/// naming the field, the API's answer to a value outside a field's set, in the order the
/// handler checks its fields.
pub(super) struct Checked<T>(Option<T>);

impl<'de, T: Choice> Deserialize<'de> for Checked<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        Ok(Checked(T::read(&s)))
    }
}

impl<T: Choice> Checked<T> {
    /// The value, or the refusal naming `field`.
    pub(super) fn get(&self, field: &str) -> Result<T, ApiError> {
        self.0
            .ok_or_else(|| err(Code::InvalidRequest, T::refusal(field)))
    }
}

/// An optional [`Checked`] field: absent is `None`.
fn checked<T: Choice>(field: &str, v: &Option<Checked<T>>) -> Result<Option<T>, ApiError> {
    v.as_ref().map(|c| c.get(field)).transpose()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Login {
    pub(super) email: String,
    pub(super) password: String,
    /// A string, or a number (leading zeros restored: `12345` is `"012345"`).
    #[serde(default, deserialize_with = "code_string")]
    pub(super) totp: Option<String>,
    #[serde(default)]
    pub(super) recovery_code: Option<String>,
}

pub(super) fn code_string<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Code {
        Text(String),
        Number(u32),
    }
    Ok(match Option::<Code>::deserialize(d)? {
        None => None,
        Some(Code::Text(s)) => Some(s),
        Some(Code::Number(n)) => Some(format!("{n:06}")),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PasswordChange {
    pub(super) current_password: String,
    pub(super) new_password: String,
}

/// Re-enrolling TOTP: the password and, when a TOTP is enrolled, a current code or a
/// recovery code (a stolen session plus the password must not be enough to move the second
/// factor to the attacker's device).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Reauth {
    pub(super) password: String,
    #[serde(default, deserialize_with = "code_string")]
    pub(super) totp: Option<String>,
    #[serde(default)]
    pub(super) recovery_code: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewOrg {
    pub(super) name: String,
    #[serde(default)]
    pub(super) rpm: Patch<u64>,
    #[serde(default)]
    pub(super) tpm: Patch<u64>,
    #[serde(default)]
    pub(super) budget_tokens: Patch<u64>,
    #[serde(default, deserialize_with = "present")]
    pub(super) budget_period: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub(super) region: Option<Checked<Region>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) pii: Option<Checked<Setting>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) secrets: Option<Checked<Setting>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) response_redaction: Option<Checked<Setting>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) mcp_tools: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub(super) mcp_resources: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub(super) mcp_prompts: Option<String>,
}

/// A body's MCP lists, named as the API names them.
macro_rules! mcp_fields {
    ($b:expr) => {
        [
            ("mcp_tools", $b.mcp_tools.as_deref()),
            ("mcp_resources", $b.mcp_resources.as_deref()),
            ("mcp_prompts", $b.mcp_prompts.as_deref()),
        ]
    };
}

/// A body's limits, read once.
macro_rules! limit_fields {
    ($b:expr) => {
        LimitsPatch::parse(
            $b.rpm,
            $b.tpm,
            $b.budget_tokens,
            $b.budget_period.as_deref(),
        )
    };
}

/// Changes to an org (and, with a name, a new org's settings: [`NewOrg`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OrgPatch {
    #[serde(default)]
    pub(super) rpm: Patch<u64>,
    #[serde(default)]
    pub(super) tpm: Patch<u64>,
    #[serde(default)]
    pub(super) budget_tokens: Patch<u64>,
    #[serde(default, deserialize_with = "present")]
    pub(super) budget_period: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub(super) region: Option<Checked<Region>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) pii: Option<Checked<Setting>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) secrets: Option<Checked<Setting>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) response_redaction: Option<Checked<Setting>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) mcp_tools: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub(super) mcp_resources: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub(super) mcp_prompts: Option<String>,
}

impl NewOrg {
    /// Its name, and its settings as changes to the defaults.
    pub(super) fn split(self) -> (String, OrgPatch) {
        let patch = OrgPatch {
            rpm: self.rpm,
            tpm: self.tpm,
            budget_tokens: self.budget_tokens,
            budget_period: self.budget_period,
            region: self.region,
            pii: self.pii,
            secrets: self.secrets,
            response_redaction: self.response_redaction,
            mcp_tools: self.mcp_tools,
            mcp_resources: self.mcp_resources,
            mcp_prompts: self.mcp_prompts,
        };
        (self.name, patch)
    }
}

impl OrgPatch {
    /// The change it asks for; errors name the field, never quote the value.
    pub(super) fn parse(&self) -> Result<policy::OrgPatch, ApiError> {
        Ok(policy::OrgPatch {
            region: checked("region", &self.region)?,
            pii: checked("pii", &self.pii)?,
            secrets: checked("secrets", &self.secrets)?,
            response_redaction: checked("response_redaction", &self.response_redaction)?,
            mcp: McpLists::parse(mcp_fields!(self))?,
            limits: limit_fields!(self)?,
        })
    }
}

/// Changes to a key; a list `"inherit"` goes back to the org's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyPatch {
    #[serde(default)]
    pub(super) rpm: Patch<u64>,
    #[serde(default)]
    pub(super) tpm: Patch<u64>,
    #[serde(default)]
    pub(super) budget_tokens: Patch<u64>,
    #[serde(default, deserialize_with = "present")]
    pub(super) budget_period: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub(super) pii: Option<Checked<KeySetting>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) secrets: Option<Checked<KeySetting>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) response_redaction: Option<Checked<KeySetting>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) mcp_tools: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub(super) mcp_resources: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub(super) mcp_prompts: Option<String>,
}

impl KeyPatch {
    /// The change it asks for; errors name the field, never quote the value.
    pub(super) fn parse(&self) -> Result<policy::KeyPatch, ApiError> {
        Ok(policy::KeyPatch {
            pii: checked("pii", &self.pii)?,
            secrets: checked("secrets", &self.secrets)?,
            response_redaction: checked("response_redaction", &self.response_redaction)?,
            mcp: McpPatch::parse(mcp_fields!(self))?,
            limits: limit_fields!(self)?,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewKey {
    #[serde(default = "default_key_name")]
    pub(super) name: String,
    #[serde(default, deserialize_with = "present")]
    pub(super) pii: Option<Checked<KeySetting>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) secrets: Option<Checked<KeySetting>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) response_redaction: Option<Checked<KeySetting>>,
    #[serde(default)]
    pub(super) mcp_tools: Option<String>,
    #[serde(default)]
    pub(super) mcp_resources: Option<String>,
    #[serde(default)]
    pub(super) mcp_prompts: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub(super) region: Option<Checked<Region>>,
    #[serde(default)]
    pub(super) rpm: Patch<u64>,
    #[serde(default)]
    pub(super) tpm: Patch<u64>,
    #[serde(default)]
    pub(super) budget_tokens: Patch<u64>,
    #[serde(default, deserialize_with = "present")]
    pub(super) budget_period: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub(super) expires_at: Option<String>,
}

/// A field that may be absent (`None`) but not `null`: a client's `null` is refused rather
/// than read as "absent" (unchanged, or the default), which it may not have meant.
pub(super) fn present<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

impl NewKey {
    /// The key it asks for, of org `org_id`: a setting or list not given inherits the org's.
    pub(super) fn spec(self, org_id: &str) -> Result<crate::admin::KeySpec, ApiError> {
        let limits = limit_fields!(self)?;
        Ok(crate::admin::KeySpec {
            org_id: org_id.to_string(),
            // Checked in this order: the first refused field is the one named.
            policy: policy::KeyPolicy {
                pii: inherits("pii", &self.pii)?,
                secrets: inherits("secrets", &self.secrets)?,
                response_redaction: inherits("response_redaction", &self.response_redaction)?,
                mcp: McpLists::parse(mcp_fields!(self))?,
                region: checked("region", &self.region)?,
                limits: limits.apply(crate::limits::Limits::default()),
            },
            name: self.name,
            expires: self.expires_at,
        })
    }
}

pub(super) fn default_key_name() -> String {
    "default".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewMember {
    pub(super) email: String,
    pub(super) password: String,
    pub(super) role: Role,
    #[serde(default)]
    pub(super) totp: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MemberPatch {
    pub(super) role: Role,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CredentialBody {
    pub(super) secret: String,
    #[serde(default)]
    pub(super) expires_at: Option<String>,
    #[serde(default)]
    pub(super) oauth: Option<crate::auth::oauth::Settings>,
    #[serde(default = "yes")]
    pub(super) verify: bool,
}

pub(super) fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConnectBody {
    #[serde(default)]
    pub(super) mcp_server: Option<String>,
    #[serde(default)]
    pub(super) resource: Option<String>,
    #[serde(default)]
    pub(super) issuer: Option<String>,
    #[serde(default)]
    pub(super) client_id: Option<String>,
    #[serde(default)]
    pub(super) client_secret: Option<String>,
    #[serde(default)]
    pub(super) scope: Option<String>,
    #[serde(default)]
    pub(super) redirect_uri: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConnectComplete {
    pub(super) redirect_url: String,
}

/// A new key's setting: what is not given follows the org (`inherit`).
fn inherits(field: &str, v: &Option<Checked<KeySetting>>) -> Result<KeySetting, ApiError> {
    Ok(checked(field, v)?.unwrap_or(KeySetting::Inherit))
}

pub(super) fn to_value(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}
