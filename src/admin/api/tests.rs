//! The route table, the OpenAPI document, access and body rules.

use super::*;

/// The fields a request body accepts.
fn fields<P: Parts>() -> Vec<String> {
    let mut f: Vec<String> = P::fields().into_iter().map(String::from).collect();
    f.sort();
    f
}

/// A request with JSON body `b`.
fn req(b: &str) -> Request {
    let mut r = Request::default();
    r.content_type = Some("application/json".into());
    r.body = b.as_bytes().to_vec();
    r
}

fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => doc.pointer(r.trim_start_matches('#')).expect(r),
        None => v,
    }
}

#[test]
fn the_openapi_document_is_made_from_the_routes_codes_and_request_types() {
    let doc = openapi();
    assert_eq!(doc["openapi"].as_str().unwrap().get(..2), Some("3."));
    // Exactly the routes, each once.
    let mut documented = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            if method != "parameters" {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    documented.sort();
    let mut routes: Vec<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.pattern.to_string()))
        .collect();
    routes.sort();
    let n = routes.len();
    routes.dedup();
    assert_eq!(routes.len(), n, "a route is listed twice");
    assert_eq!(documented, routes);
    // Every reference resolves.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        assert!(doc.pointer(r.trim_start_matches('#')).is_some(), "{r}");
    }
    // The error codes are the server's, with their statuses documented on every route.
    let codes =
        &doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"];
    assert_eq!(codes.as_array().unwrap().len(), Code::ALL.len());
    for r in ROUTES {
        let op = &doc["paths"][r.pattern][r.method.to_ascii_lowercase()];
        for c in Code::ALL {
            assert!(
                op["responses"][c.status().to_string()].is_object(),
                "{} {}: {}",
                r.method,
                r.pattern,
                c.as_str()
            );
        }
        // Public routes need no token; the others do (the document's default).
        assert_eq!(op["security"] == json!([]), r.access == Access::Public);
        assert_eq!(
            matches!(r.handler, Handler::Open(_)),
            r.access == Access::Public,
            "{}",
            r.pattern
        );
    }
    // Each request body schema has exactly the fields its Rust type accepts.
    let mut checked = 0;
    for r in ROUTES.iter().filter(|r| r.body.is_some()) {
        let name = r.body.unwrap();
        let rust = match name {
            "Login" => fields::<(Login,)>(),
            "PasswordChange" => fields::<(PasswordChange,)>(),
            "Reauth" => fields::<(Reauth,)>(),
            "NewOrg" => fields::<NewOrg>(),
            "OrgPatch" => fields::<OrgPatch>(),
            "NewKey" => fields::<NewKey>(),
            "KeyPatch" => fields::<KeyPatch>(),
            "NewMember" => fields::<(NewMember,)>(),
            "MemberPatch" => fields::<(MemberPatch,)>(),
            "CredentialBody" => fields::<(CredentialBody,)>(),
            "ConnectBody" => fields::<(ConnectBody,)>(),
            "ConnectComplete" => fields::<(ConnectComplete,)>(),
            other => panic!("no Rust type for request schema {other}"),
        };
        let s = resolve(&doc, &doc["components"]["schemas"][name]);
        let mut documented: Vec<String> = s["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        documented.sort();
        assert_eq!(documented, rust, "schema {name}");
        for req in s["required"].as_array().into_iter().flatten() {
            assert!(
                rust.contains(&req.as_str().unwrap().to_string()),
                "{name}: {req}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 10, "{checked}");
    // The OAuth settings nested in a credential body too.
    let s = &doc["components"]["schemas"]["OAuthSettings"];
    let mut documented: Vec<String> = s["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    documented.sort();
    assert_eq!(documented, fields::<(crate::auth::oauth::Settings,)>());
}

#[test]
fn access_follows_the_role_order() {
    let p = |operator: bool, org: Option<&str>, role: Option<Role>| Principal {
        user_id: "u".into(),
        org_id: org.map(String::from),
        role,
        operator,
    };
    let op = p(true, None, None);
    let admin = p(false, Some("o1"), Some(Role::Admin));
    let auditor = p(false, Some("o1"), Some(Role::Auditor));
    let a = Access::Org(Role::Admin);
    assert!(a.check(Some(&op), Some("o2")).is_ok());
    assert!(a.check(Some(&admin), Some("o1")).is_ok());
    assert!(a.check(Some(&admin), Some("o2")).is_err());
    assert!(a.check(Some(&auditor), Some("o1")).is_err());
    assert!(a.check(None, Some("o1")).is_err());
    assert!(Access::Operator.check(Some(&admin), None).is_err());
    assert!(Access::Operator.check(Some(&op), None).is_ok());
    assert!(Access::User.check(Some(&auditor), None).is_ok());
    assert!(Access::Public.check(None, None).is_ok());
    let q = Access::QueryOrg(Role::Auditor);
    assert!(q.check(Some(&auditor), None).is_ok());
    assert!(q.check(Some(&auditor), Some("o2")).is_err());
    assert!(q.check(Some(&op), None).is_ok());
    assert_eq!(
        Access::Org(Role::Auditor).describe(),
        "operator, owner, admin, auditor"
    );
}

#[test]
fn library_errors_are_worded_for_api_clients() {
    let e = ApiError::from(Error::Field {
        field: "client_id",
        reason: "must be 1 to 1024 printable characters".into(),
    });
    assert_eq!(e.code, Code::InvalidRequest);
    assert!(e.message.starts_with("client_id "), "{}", e.message);
    let e = ApiError::from(Error::TotpRequired {
        role: Role::Owner,
        user_id: "u1".into(),
    });
    assert!(e.message.contains("POST /api/auth/totp"), "{}", e.message);
    assert!(!e.message.contains("u1"));
    let e = ApiError::from(Error::EmptySecret);
    assert!(!e.message.contains("standard input"), "{}", e.message);
}

#[test]
fn body_errors_never_echo_values() {
    for b in [
        r#"{"email": "a@b.c", "password": 12345678901234}"#,
        r#"{"email": "a@b.c", "password": ["hunter2-canary"]}"#,
        r#"{"email": "a@b.c", "password": "x", "totp": {"hunter2-canary": 1}}"#,
        r#"["hunter2-canary"]"#,
    ] {
        let e = body::<Login>(&req(b)).err().unwrap();
        assert_eq!(e.code, Code::InvalidBody);
        assert!(
            !e.message.contains("hunter2") && !e.message.contains("12345678"),
            "{}",
            e.message
        );
    }
    let e = body::<Login>(&req(r#"{"email": "a@b.c"}"#)).err().unwrap();
    assert!(
        e.message.contains("missing field `password`"),
        "{}",
        e.message
    );
    let mut r = req("{}");
    r.content_type = Some("text/plain".into());
    assert_eq!(body::<Login>(&r).err().unwrap().status(), 415);
}

#[test]
fn a_body_is_one_json_object_and_null_is_not_absent() {
    // serde reads a struct from an array too (`[null]` would remove the first limit).
    for b in [
        "[null, null]",
        " [1]",
        "\"x\"",
        "null",
        r#"{"rpm": 5} {"rpm": 6}"#,
        r#"{"rpm": 5}x"#,
    ] {
        let e = body_of::<KeyPatch>(&req(b))
            .err()
            .unwrap_or_else(|| panic!("{b} accepted"));
        assert_eq!(e.code, Code::InvalidBody, "{b}");
    }
    // A limit's null removes it; a setting's null is refused (it is not "unchanged").
    let (_, p) = body_of::<KeyPatch>(&req(r#" {"rpm": null, "tpm": 7} "#)).unwrap();
    assert_eq!(
        (p.rpm, p.tpm, p.budget_tokens),
        (Patch::Clear, Patch::Set(7), Patch::Keep)
    );
    for field in ["pii", "budget_period", "mcp_tools"] {
        let b = format!(r#"{{"{field}": null}}"#);
        let e = body_of::<KeyPatch>(&req(&b))
            .err()
            .unwrap_or_else(|| panic!("{b} accepted"));
        assert_eq!(e.code, Code::InvalidBody, "{b}");
    }
}

#[test]
fn a_body_of_parts_is_read_as_one_object_of_one_struct() {
    // Each member goes to its part, wherever it stands in the object.
    let (named, region, s, f) = body_of::<NewOrg>(&req(
        r#"{"rpm": 5, "name": "acme", "pii": "off", "region": "eu", "mcp_tools": "a:*"}"#,
    ))
    .unwrap();
    assert_eq!(named.name, "acme");
    assert_eq!(region.region.unwrap().get("region").unwrap(), Region::Eu);
    assert_eq!(f.rpm, Patch::Set(5));
    assert_eq!(s.pii.unwrap().get("pii").unwrap(), Setting::Off);
    assert_eq!(f.mcp_tools.text(), Some("a:*"));
    // A member no part has is refused, as for a body of one struct, naming what the body
    // takes. Its own name is never echoed (the client's text: a token pasted in the wrong
    // place); a field it matches but for case is suggested.
    for (b, hint) in [
        (
            r#"{"name": "a", "expires_at": "2030-01-01T00:00:00Z"}"#,
            None,
        ),
        (
            r#"{"name": "a", "ghp_16C7e42F292c6912E7710c838347Ae178B4a": 1}"#,
            None,
        ),
        (r#"{"name": "a", "PII": "on"}"#, Some("`pii`")),
    ] {
        let e = body_of::<NewOrg>(&req(b)).err().unwrap();
        assert_eq!(e.code, Code::InvalidBody);
        assert!(
            e.message.contains("an unknown field") && e.message.contains("`budget_period`"),
            "{}",
            e.message
        );
        assert!(
            !e.message.contains("expires_at")
                && !e.message.contains("ghp_")
                && !e.message.contains("PII"),
            "{}",
            e.message
        );
        assert_eq!(hint.is_some_and(|h| e.message.contains(h)), hint.is_some());
    }
    let e = body::<Login>(&req(r#"{"email": "a", "password": "b", "sk_canary_1": 1}"#))
        .err()
        .unwrap();
    assert_eq!(e.code, Code::InvalidBody);
    assert!(
        e.message.contains("an unknown field") && !e.message.contains("canary"),
        "{}",
        e.message
    );
    // Of several refused members, in whichever parts, the one first in the body is named, as
    // for a body of one struct (an unknown one among them, unnamed).
    for (b, named) in [
        (r#"{"mcp_tools": 1, "pii": 1}"#, "`mcp_tools`"),
        (r#"{"pii": 1, "mcp_tools": 1}"#, "`pii`"),
        (r#"{"rpm": "x", "secrets": null, "region": 5}"#, "`rpm`"),
        (r#"{"region": 5, "rpm": "x", "secrets": null}"#, "`region`"),
        (
            r#"{"response_redaction": [], "region": 5}"#,
            "`response_redaction`",
        ),
        (r#"{"rpm": "x", "canary": 1}"#, "`rpm`"),
        (r#"{"canary": 1, "rpm": "x"}"#, "an unknown field"),
    ] {
        let e = body_of::<OrgPatch>(&req(b))
            .err()
            .unwrap_or_else(|| panic!("{b} accepted"));
        assert_eq!(e.code, Code::InvalidBody, "{b}");
        assert!(e.message.contains(named), "{b}: {}", e.message);
        assert!(!e.message.contains("canary"), "{b}: {}", e.message);
    }
    let e = body_of::<NewKey>(&req(r#"{"expires_at": 1, "pii": 1}"#))
        .err()
        .unwrap();
    assert!(e.message.contains("`expires_at`"), "{}", e.message);
    // A member named twice is refused, in whichever part and at whatever depth, and in
    // another spelling of the same name.
    for b in [
        r#"{"name": "a", "name": "b"}"#,
        r#"{"name": "a", "pii": "on", "pii": "off"}"#,
        r#"{"name": "a", "region": "eu", "\u0072egion": "us"}"#,
    ] {
        let e = body_of::<NewOrg>(&req(b))
            .err()
            .unwrap_or_else(|| panic!("{b} accepted"));
        assert_eq!(e.code, Code::InvalidBody, "{b}");
    }
    let e = body::<CredentialBody>(&req(
        r#"{"secret": "s", "oauth": {"token_url": "https://a/t", "token_url": "https://b/t"}}"#,
    ))
    .err()
    .unwrap();
    assert_eq!(e.code, Code::InvalidBody);
    // So is a nested object's unknown member, named by the object it is in, never by its own
    // name (whatever it holds: a backtick, dots).
    for member in [
        "scopes_canary",
        "sk-canary `, x",
        "eyJhbGciOiJIUzI1NiJ9.eyJjYW5hcnkiOjF9.sig",
    ] {
        let b = json!({"secret": "s", "oauth": {"token_url": "https://a/t", member: 1}});
        let e = body::<CredentialBody>(&req(&b.to_string())).err().unwrap();
        assert_eq!(e.code, Code::InvalidBody);
        assert!(
            e.message.ends_with("an unknown field in `oauth`."),
            "{}",
            e.message
        );
    }
    // A new key's null list is the org's (as documented); a change's null is refused.
    let (head, _, f) = body_of::<NewKey>(&req(r#"{"mcp_tools": null, "pii": "off"}"#)).unwrap();
    assert_eq!(head.name, "default");
    assert_eq!(f.mcp_tools.text(), None);
    assert!(body_of::<KeyPatch>(&req(r#"{"mcp_tools": null}"#)).is_err());
    // Every request type's fields are known by name (the bodies' unknown-member check and the
    // OpenAPI check read them so).
    let mut expected = [
        "budget_period",
        "budget_tokens",
        "expires_at",
        "mcp_prompts",
        "mcp_resources",
        "mcp_tools",
        "name",
        "region",
        "rpm",
        "tpm",
    ]
    .iter()
    .chain(policy::SWITCH_NAMES)
    .map(|f| f.to_string())
    .collect::<Vec<_>>();
    expected.sort();
    assert_eq!(fields::<NewKey>(), expected);
}

#[test]
fn a_setting_outside_its_set_is_an_invalid_request_and_a_non_string_an_invalid_body() {
    // Each body's choice fields, checked the way its handler does: the first refused field
    // (in the handler's order) is the one named; a value is never quoted.
    fn org(r: &Request) -> Result<policy::OrgPatch, ApiError> {
        let (region, switches, fields) = body_of::<OrgPatch>(r)?;
        org_patch(&region, &switches, &fields)
    }
    fn new_org(r: &Request) -> Result<policy::OrgPatch, ApiError> {
        let (_, region, switches, fields) = body_of::<NewOrg>(r)?;
        org_patch(&region, &switches, &fields)
    }
    fn key(r: &Request) -> Result<policy::KeyPatch, ApiError> {
        key_patch(&body_of::<KeyPatch>(r)?)
    }
    fn new_key(r: &Request) -> Result<policy::KeyPolicy, ApiError> {
        Ok(key_spec(body_of::<NewKey>(r)?, "org")?.policy)
    }
    let name = |b: String, with: bool| {
        if with {
            b.replacen('{', r#"{"name": "n", "#, 1)
        } else {
            b
        }
    };
    type Check = fn(&Request) -> Result<(), ApiError>;
    // Each body's choice fields in the order its handler checks them.
    let org_fields = [&["region"][..], policy::SWITCH_NAMES].concat();
    let new_key_fields = [policy::SWITCH_NAMES, &["region"]].concat();
    let bodies: [(&str, Check, bool, &[&str], &str); 4] = [
        ("org", |r| org(r).map(drop), false, &org_fields, "inherit"),
        (
            "new org",
            |r| new_org(r).map(drop),
            true,
            &org_fields,
            "inherit",
        ),
        (
            "key",
            |r| key(r).map(drop),
            false,
            policy::SWITCH_NAMES,
            "maybe",
        ),
        (
            "new key",
            |r| new_key(r).map(drop),
            false,
            &new_key_fields,
            "maybe",
        ),
    ];
    for (what, check, named, fields, outside) in bodies {
        for field in fields {
            let bad = if *field == "region" { "mars" } else { outside };
            let e = check(&req(&name(format!(r#"{{"{field}": "{bad}"}}"#), named)))
                .err()
                .unwrap_or_else(|| panic!("{what}: {field} = {bad} accepted"));
            assert_eq!(e.code, Code::InvalidRequest, "{what}: {field}");
            assert!(!e.message.contains(bad), "{what}: {}", e.message);
            // Every refusal names its field ("Unknown region: ..." names the region).
            assert!(e.message.contains(field), "{what}: {}", e.message);
            for wrong in ["5", "true", "null", r#"["on"]"#, r#"{"on": 1}"#] {
                let e = check(&req(&name(format!(r#"{{"{field}": {wrong}}}"#), named)))
                    .err()
                    .unwrap_or_else(|| panic!("{what}: {field} = {wrong} accepted"));
                assert_eq!(e.code, Code::InvalidBody, "{what}: {field} = {wrong}");
            }
        }
        // Two refused: the first the handler checks is named.
        let b = name(
            format!(r#"{{"response_redaction": "x", "{}": "x"}}"#, fields[0]),
            named,
        );
        let e = check(&req(&b)).err().unwrap();
        let first = if fields[0] == "region" {
            "Unknown region"
        } else {
            fields[0]
        };
        assert!(e.message.contains(first), "{what}: {}", e.message);
    }
    // What each names, read as typed values (a region in any case, as the header reads it).
    let p = org(&req(r#"{"pii": "off", "secrets": "on", "region": "EU"}"#)).unwrap();
    assert_eq!(
        (
            p.switches.pii,
            p.switches.secrets,
            p.switches.response_redaction,
            p.region
        ),
        (
            Some(Setting::Off),
            Some(Setting::On),
            None,
            Some(Region::Eu)
        )
    );
    let k = key(&req(r#"{"pii": "inherit", "response_redaction": "on"}"#)).unwrap();
    assert_eq!(
        (
            k.switches.pii,
            k.switches.secrets,
            k.switches.response_redaction
        ),
        (Some(KeySetting::Inherit), None, Some(KeySetting::On))
    );
    let n = new_key(&req(r#"{"secrets": "off"}"#)).unwrap();
    assert_eq!(
        (
            n.switches.pii,
            n.switches.secrets,
            n.switches.response_redaction,
            n.region
        ),
        (
            KeySetting::Inherit,
            KeySetting::Off,
            KeySetting::Inherit,
            None
        )
    );
}

#[test]
fn the_object_a_body_is_read_from_is_wiped() {
    let mut v = json!(["hunter2-canary", {"password": "hunter2-canary", "n": 1}, [{"s": "x"}]]);
    wipe(&mut v);
    // Every string overwritten and emptied; every object's members (names too) gone.
    assert_eq!(v, json!(["", {}, [{}]]));
}

#[test]
fn the_openapi_document_lists_every_switch_where_the_policy_is() {
    // Made from the switches' table: an org's take on/off, a key's also inherit; the marker
    // that asks for them is gone.
    let doc = openapi();
    let text = doc.to_string();
    assert!(!text.contains("x-switches"), "a marker is left");
    for (schema, values) in [
        ("Org", &["on", "off"][..]),
        ("NewOrg", &["on", "off"]),
        ("OrgPatch", &["on", "off"]),
        ("Key", &["on", "off", "inherit"]),
        ("NewKey", &["on", "off", "inherit"]),
        ("KeyPatch", &["on", "off", "inherit"]),
    ] {
        let props = &doc["components"]["schemas"][schema]["properties"];
        for name in policy::SWITCH_NAMES {
            let p = &props[*name];
            assert_eq!(p["enum"], json!(values), "{schema}.{name}");
            assert_eq!(p["x-switch"], json!(true), "{schema}.{name}");
            assert!(p["description"].as_str().is_some_and(|d| !d.is_empty()));
        }
    }
}
