//! Request bodies: read strictly (one JSON object, nothing after it, unknown fields refused),
//! the request types, and the helpers that turn their values into settings.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::policy::{Choice, Switches};

use super::*;

/// A body of one struct.
pub(super) fn body<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    body_of::<(T,)>(req).map(|(t,)| t)
}

/// The body's JSON object, read strictly: JSON by its content type, one document with nothing
/// after it, no object in it naming a member twice, and an object (serde would also read a
/// struct from an array: `[null]` setting its first field).
fn object(req: &Request) -> Result<Map<String, Value>, ApiError> {
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
    match crate::json::parse(&req.body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(err(
            Code::InvalidBody,
            "Invalid JSON body: the body must be a JSON object.",
        )),
        // The reader's own words: they quote nothing of the body.
        Err(e) => Err(err(Code::InvalidBody, format!("Invalid JSON body: {e}."))),
    }
}

/// Why (part of) a body does not read as its type.
fn refusal(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    // serde's messages can quote the offending value (a password) or member name (a
    // pasted secret): only the names of declared fields are echoed.
    let inner = e.inner().to_string();
    let path = e.path().to_string();
    let message = if inner.starts_with("missing field") {
        inner
    } else if inner.starts_with("unknown field") {
        // In a nested object (the body's own members are checked before): named by the
        // object it is in.
        format!(
            "an unknown field in `{}`",
            crate::error::place(e.path(), true)
        )
    } else if path == "." {
        "the body must be a JSON object".to_string()
    } else {
        format!("invalid value for `{path}`")
    };
    err(Code::InvalidBody, format!("Invalid JSON body: {message}."))
}

/// A body made of parts: structs of their own that together make one flat JSON object, each
/// part's members declared once, by its fields (serde's `flatten` cannot be combined with
/// refusing unknown members). Each member is read by the part that declares it; one that no
/// part declares is refused, as for a body of one struct.
pub(super) trait Parts: Sized {
    /// The members the body takes, part by part.
    fn fields() -> Vec<&'static str>;
    /// Each part, read from its members of `m`. When several are refused, the refusal of the
    /// member that comes first in the body is the one returned, as for a body of one struct.
    fn read(m: &Map<String, Value>) -> Result<Self, PartError>;
}

/// A part's refusal, and where its member stands in the body (`usize::MAX`: none does, as
/// for a missing field).
type PartError = (usize, ApiError);

/// Part `T` of a body: its members of `m`, read in place (no copy of a value).
fn part<T: DeserializeOwned>(m: &Map<String, Value>) -> Result<T, PartError> {
    let fields = serde_aux::serde_introspection::serde_introspect::<T>();
    serde_path_to_error::deserialize(serde::de::value::MapDeserializer::new(
        m.iter()
            .filter(|(k, _)| fields.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v)),
    ))
    .map_err(|e| {
        let at = match e.path().iter().next() {
            Some(serde_path_to_error::Segment::Map { key }) => m.keys().position(|k| k == key),
            _ => None,
        };
        (at.unwrap_or(usize::MAX), refusal(e))
    })
}

/// The refusal of the member that comes first in the body, if any part was refused.
fn first_refusal(errors: impl IntoIterator<Item = Option<PartError>>) -> Option<PartError> {
    errors.into_iter().flatten().min_by_key(|(at, _)| *at)
}

macro_rules! parts {
    ($($p:ident),+) => {
        impl<$($p: DeserializeOwned),+> Parts for ($($p,)+) {
            fn fields() -> Vec<&'static str> {
                [$(serde_aux::serde_introspection::serde_introspect::<$p>()),+].concat()
            }
            #[allow(non_snake_case)]
            fn read(m: &Map<String, Value>) -> Result<Self, PartError> {
                $(let $p = part::<$p>(m);)+
                match ($($p,)+) {
                    ($(Ok($p),)+) => Ok(($($p,)+)),
                    ($($p,)+) => Err(first_refusal([$($p.err()),+]).unwrap_or_else(|| {
                        (usize::MAX, err(Code::InvalidBody, "Invalid JSON body."))
                    })),
                }
            }
        }
    };
}
parts!(A);
parts!(A, B);
parts!(A, B, C);
parts!(A, B, C, D);

/// A member no part declares. Its name is never echoed (it is the client's text: a secret
/// pasted in the wrong place); a declared field it matches but for ASCII case is suggested.
fn unknown_field(name: &str, fields: &[&str]) -> String {
    match fields.iter().find(|f| f.eq_ignore_ascii_case(name)) {
        Some(f) => format!("an unknown field (field names are lowercase: `{f}`)"),
        None => "an unknown field".to_string(),
    }
}

/// A body of [`Parts`]: of its refusals (a member no part declares, a part's), the one of
/// the member that comes first in the body.
pub(super) fn body_of<P: Parts>(req: &Request) -> Result<P, ApiError> {
    let mut m = object(req)?;
    let fields = P::fields();
    let unknown = m
        .keys()
        .enumerate()
        .find(|(_, k)| !fields.contains(&k.as_str()))
        .map(|(at, unknown)| {
            let expected: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
            let e = err(
                Code::InvalidBody,
                format!(
                    "Invalid JSON body: {}, expected one of {}.",
                    unknown_field(unknown, &fields),
                    expected.join(", ")
                ),
            );
            (at, e)
        });
    let read = match (P::read(&m), unknown) {
        (Ok(p), None) => Ok(p),
        // The refusal of the member first in the body.
        (Err((at, _)), Some((unknown_at, e))) if unknown_at < at => Err(e),
        (Ok(_), Some((_, e))) | (Err((_, e)), _) => Err(e),
    };
    // The parts hold copies of what they took; the object held every password and secret of
    // the body in plain strings, which are wiped before they are freed.
    wipe_map(&mut m);
    read
}

/// Overwrite every string of `m` (names and values, at any depth) before it is freed.
fn wipe_map(m: &mut Map<String, Value>) {
    use zeroize::Zeroize;
    for (mut k, mut v) in std::mem::take(m) {
        k.zeroize();
        wipe(&mut v);
    }
}

pub(super) fn wipe(v: &mut Value) {
    use zeroize::Zeroize;
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(wipe),
        Value::Object(m) => wipe_map(m),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

pub(super) fn query_params(q: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
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

/// The policy's switches as an org or key body gives them (`S`: an org's, on or off; a key's,
/// also `inherit`): each absent, or a string (`null` is refused).
pub(super) type Switched<S> = Switches<Option<Checked<S>>>;

/// The switches given, checked in order (the first refused is the one named).
fn switches<S: Choice>(s: &Switched<S>) -> Result<Switches<Option<S>>, ApiError> {
    s.try_map_named(checked)
}

/// What the org and key bodies say of a policy besides its switches: its MCP allow-lists (`L`:
/// how a list is given) and its limits. Each member is named here once, for every body that
/// has it ([`NewOrg`], [`OrgPatch`], [`NewKey`], [`KeyPatch`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, bound = "L: Deserialize<'de> + Default")]
pub(super) struct PolicyFields<L> {
    #[serde(default)]
    pub(super) mcp_tools: L,
    #[serde(default)]
    pub(super) mcp_resources: L,
    #[serde(default)]
    pub(super) mcp_prompts: L,
    #[serde(default)]
    pub(super) rpm: Patch<u64>,
    #[serde(default)]
    pub(super) tpm: Patch<u64>,
    #[serde(default)]
    pub(super) budget_tokens: Patch<u64>,
    #[serde(default, deserialize_with = "present")]
    pub(super) budget_period: Option<String>,
}

/// An MCP list that may be absent but not `null` (an org's, a key's change).
#[derive(Default)]
pub(super) struct Given(Option<String>);

impl<'de> Deserialize<'de> for Given {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        present(d).map(Given)
    }
}

/// How a body gives an MCP list: as text, or not at all (`None`).
pub(super) trait ListField {
    fn text(&self) -> Option<&str>;
}

impl ListField for Given {
    fn text(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// A new key's list, where `null` is the same as absent: the org's.
impl ListField for Option<String> {
    fn text(&self) -> Option<&str> {
        self.as_deref()
    }
}

impl<L: ListField> PolicyFields<L> {
    /// The MCP lists given, named as the API names them.
    fn mcp(&self) -> [(&'static str, Option<&str>); 3] {
        [
            ("mcp_tools", self.mcp_tools.text()),
            ("mcp_resources", self.mcp_resources.text()),
            ("mcp_prompts", self.mcp_prompts.text()),
        ]
    }

    /// The limits, read once.
    fn limits(&self) -> Result<LimitsPatch, ApiError> {
        Ok(LimitsPatch::parse(
            self.rpm,
            self.tpm,
            self.budget_tokens,
            self.budget_period.as_deref(),
        )?)
    }
}

/// An org's lists and limits in an org body.
pub(super) type OrgFields = PolicyFields<Given>;

/// A change to a key: its switches, lists and limits.
pub(super) type KeyPatch = (Switched<KeySetting>, PolicyFields<Given>);

/// An org's name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Named {
    pub(super) name: String,
}

/// An org's default region.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RegionField {
    #[serde(default, deserialize_with = "present")]
    pub(super) region: Option<Checked<Region>>,
}

/// A new org: its name, and its settings as changes to the defaults.
pub(super) type NewOrg = (Named, RegionField, Switched<Setting>, OrgFields);

/// Changes to an org.
pub(super) type OrgPatch = (RegionField, Switched<Setting>, OrgFields);

/// An org body's change to its policy; errors name the field, never quote the value.
pub(super) fn org_patch(
    region: &RegionField,
    s: &Switched<Setting>,
    f: &OrgFields,
) -> Result<policy::OrgPatch, ApiError> {
    let region = checked("region", &region.region)?;
    Ok(policy::OrgPatch {
        region,
        switches: switches(s)?,
        mcp: McpLists::parse(f.mcp())?,
        limits: f.limits()?,
    })
}

/// The change a [`KeyPatch`] asks for (a list `"inherit"` goes back to the org's); errors
/// name the field, never quote the value.
pub(super) fn key_patch((s, f): &KeyPatch) -> Result<policy::KeyPatch, ApiError> {
    Ok(policy::KeyPatch {
        switches: switches(s)?,
        mcp: McpPatch::parse(f.mcp())?,
        limits: f.limits()?,
    })
}

/// A new key's own members.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyHead {
    #[serde(default = "default_key_name")]
    pub(super) name: String,
    #[serde(default, deserialize_with = "present")]
    pub(super) region: Option<Checked<Region>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) expires_at: Option<String>,
}

/// A new key: its name, region pin and expiry, and its settings (what is not given follows
/// the org).
pub(super) type NewKey = (KeyHead, Switched<KeySetting>, PolicyFields<Option<String>>);

/// The key a [`NewKey`] asks for, of org `org_id`: a setting or list not given inherits the
/// org's.
pub(super) fn key_spec(
    (head, s, f): NewKey,
    org_id: &str,
) -> Result<crate::admin::KeySpec, ApiError> {
    let limits = f.limits()?;
    // Checked in this order: the first refused field is the one named.
    let switches = switches(&s)?;
    Ok(crate::admin::KeySpec {
        org_id: org_id.to_string(),
        policy: policy::KeyPolicy {
            switches: switches.map(|s| s.unwrap_or(KeySetting::Inherit)),
            mcp: McpLists::parse(f.mcp())?,
            region: checked("region", &head.region)?,
            limits: limits.apply(crate::limits::Limits::default()),
        },
        name: head.name,
        expires: head.expires_at,
    })
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

pub(super) fn to_value(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}
