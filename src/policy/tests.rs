//! The policy model: patches, limits, lists, inheritance, and how policies are shown.

use serde::Deserialize;

use super::*;
use crate::limits::{Budget, Limits, Period};
use crate::mcp::AllowList;
use crate::residency::Region;

#[test]
fn a_patch_keeps_sets_or_clears() {
    #[derive(Deserialize)]
    struct Body {
        #[serde(default)]
        n: Patch<u32>,
    }
    let read = |j: &str| serde_json::from_str::<Body>(j).unwrap().n;
    assert_eq!(read("{}"), Patch::Keep);
    assert_eq!(read(r#"{"n": null}"#), Patch::Clear);
    assert_eq!(read(r#"{"n": 3}"#), Patch::Set(3));
    assert!(serde_json::from_str::<Body>(r#"{"n": "3"}"#).is_err());
    assert_eq!(Patch::Keep.apply(Some(1)), Some(1));
    assert_eq!(Patch::Set(2).apply(Some(1)), Some(2));
    assert_eq!(Patch::<u32>::Clear.apply(Some(1)), None);
}

#[test]
fn limits_are_read_checked_and_applied() {
    let budget = |tokens, period| Budget { tokens, period };
    let p = LimitsPatch::parse(Patch::Set(5), Patch::Clear, Patch::Set(100), None).unwrap();
    assert_eq!(p.rpm, Patch::Set(5));
    assert_eq!(p.budget, Patch::Set(budget(100, Period::Month)));
    let before = Limits {
        rpm: Some(1),
        tpm: Some(2),
        budget: None,
    };
    assert_eq!(
        p.apply(before),
        Limits {
            rpm: Some(5),
            tpm: None,
            budget: Some(budget(100, Period::Month)),
        }
    );
    assert_eq!(LimitsPatch::default().apply(before), before);
    let day = LimitsPatch::parse(Patch::Keep, Patch::Keep, Patch::Set(9), Some("day"));
    assert_eq!(day.unwrap().budget, Patch::Set(budget(9, Period::Day)));
    for (rpm, tokens, period) in [
        (Patch::Set(0), Patch::Keep, None),
        (Patch::Set(u64::from(u32::MAX) + 1), Patch::Keep, None),
        (Patch::Keep, Patch::Set(0), None),
        (Patch::Keep, Patch::Set(u64::MAX), None),
        (Patch::Keep, Patch::Keep, Some("day")),
        (Patch::Keep, Patch::Clear, Some("month")),
        (Patch::Keep, Patch::Set(1), Some("week")),
    ] {
        let e = LimitsPatch::parse(rpm, Patch::Keep, tokens, period).unwrap_err();
        assert!(!e.0.contains("week"), "{e}");
    }
}

#[test]
fn a_keys_list_inherits_or_is_a_list_and_errors_never_quote_it() {
    let p = McpPatch::parse([
        ("mcp_tools", Some("inherit")),
        ("mcp_resources", Some("docs:*")),
        ("mcp_prompts", None),
    ])
    .unwrap();
    assert_eq!(p.tools, Patch::Clear);
    assert_eq!(p.resources, Patch::Set(AllowList::parse("docs:*").unwrap()));
    assert_eq!(p.prompts, Patch::Keep);
    let e = McpLists::parse([
        ("--mcp-tools", Some("sk-secret-looking value")),
        ("--mcp-resources", None),
        ("--mcp-prompts", None),
    ])
    .unwrap_err();
    assert!(e.0.starts_with("--mcp-tools: "), "{e}");
    assert!(!e.0.contains("sk-secret"), "{e}");
}

fn list(s: &str) -> AllowList {
    AllowList::parse(s).unwrap()
}

#[test]
fn a_key_inherits_what_it_does_not_set_and_fails_closed_without_an_org() {
    // The org sets every switch against what a key gets without an org.
    let org = OrgPolicy {
        switches: SWITCHES.map(|s| match s.without_org {
            true => Setting::Off,
            false => Setting::On,
        }),
        mcp: Mcp {
            tools: list("github:*"),
            resources: list("docs:file:///a"),
            prompts: list("p:x"),
        },
        ..OrgPolicy::default()
    };
    let inheriting = KeyPolicy::default();
    let r = resolve(&inheriting, Some(&org));
    assert_eq!(r.on, SWITCHES.map(|s| !s.without_org));
    assert!(!r.on.pii && !r.on.secrets && r.on.response_redaction);
    assert_eq!(r.mcp.tools, org.mcp.tools);
    // Gone org: PII and secrets redacted, responses as off by default, nothing allowed.
    let r = resolve(&inheriting, None);
    assert_eq!(r.on, SWITCHES.map(|s| s.without_org));
    assert!(r.on.pii && r.on.secrets && !r.on.response_redaction);
    assert_eq!(r.mcp, crate::mcp::Policy::default());
    // A key's own settings win, and its own empty list allows nothing (no fallback).
    let own = KeyPolicy {
        switches: SWITCHES.map(|s| match s.without_org {
            true => KeySetting::On,
            false => KeySetting::Off,
        }),
        mcp: Mcp {
            tools: Some(AllowList::default()),
            ..Mcp::default()
        },
        ..KeyPolicy::default()
    };
    let r = resolve(&own, Some(&org));
    assert_eq!(r.on, SWITCHES.map(|s| s.without_org));
    assert!(r.on.pii && r.on.secrets && !r.on.response_redaction);
    assert_eq!(r.mcp.tools, AllowList::default());
    assert_eq!(r.mcp.resources, org.mcp.resources);
}

#[test]
fn between_then_apply_reaches_what_was_wanted() {
    let orgs = [
        OrgPolicy::default(),
        OrgPolicy {
            region: Some(Region::Eu),
            switches: Switches {
                pii: Setting::Off,
                response_redaction: Setting::On,
                ..OrgPolicy::default().switches
            },
            mcp: Mcp {
                tools: list("a:b"),
                ..Mcp::default()
            },
            limits: Limits {
                rpm: Some(3),
                tpm: Some(4),
                budget: Some(Budget {
                    tokens: 5,
                    period: Period::Day,
                }),
            },
        },
    ];
    for have in &orgs {
        for want in &orgs {
            let (patch, fields) = OrgPatch::between(have, want);
            let mut reached = patch.apply(have);
            if want.region.is_none() {
                // A region the want leaves unset is kept.
                assert_eq!(reached.region, have.region);
                reached.region = None;
            }
            assert_eq!(&reached, want);
            assert_eq!(fields.is_empty(), patch.is_empty());
            assert_eq!(fields.is_empty(), have == want);
        }
    }
    let keys = [
        KeyPolicy::default(),
        KeyPolicy {
            switches: Switches {
                pii: KeySetting::Off,
                ..KeyPolicy::default().switches
            },
            mcp: Mcp {
                prompts: Some(list("x:y")),
                resources: Some(AllowList::default()),
                ..Mcp::default()
            },
            limits: orgs[1].limits,
            ..KeyPolicy::default()
        },
    ];
    for have in &keys {
        for want in &keys {
            let (patch, fields) = KeyPatch::between(have, want);
            assert_eq!(&patch.apply(have), want);
            assert_eq!(fields.is_empty(), have == want);
        }
    }
}

#[test]
fn policies_are_shown_flat_as_the_api_always_showed_them() {
    let v = serde_json::to_value(OrgPolicy::default()).unwrap();
    // In this order (audit details are hashed as written): an org's region, then its switches;
    // a key's switches first.
    let order = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    let tail = ["mcp_tools", "mcp_resources", "mcp_prompts"];
    let limits = ["rpm", "tpm", "budget_tokens", "budget_period"];
    let names = |parts: &[&[&str]]| {
        parts
            .concat()
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        order(&v),
        names(&[&["region"], SWITCH_NAMES, &tail, &limits])
    );
    assert_eq!(
        order(&serde_json::to_value(KeyPolicy::default()).unwrap()),
        names(&[SWITCH_NAMES, &tail, &["region"], &limits])
    );
    // Each switch as its word (a new org's as the table says, PII's as given), the rest as
    // the API has always shown them.
    let with_switches = |mut rest: serde_json::Value, s: serde_json::Value| {
        let rest_map = rest.as_object_mut().unwrap();
        rest_map.extend(s.as_object().unwrap().clone());
        rest
    };
    assert_eq!(
        v,
        with_switches(
            serde_json::json!({
                "region": null, "mcp_tools": "", "mcp_resources": "", "mcp_prompts": "",
                "rpm": null, "tpm": null, "budget_tokens": null, "budget_period": null,
            }),
            serde_json::to_value(Switches::from_table(|_, s| s.new_org)).unwrap(),
        )
    );
    assert_eq!(v["pii"], "on");
    assert_eq!(v["secrets"], "on");
    assert_eq!(v["response_redaction"], "off");
    let k = KeyPolicy {
        mcp: Mcp {
            tools: Some(list("a:b,c:*")),
            ..Mcp::default()
        },
        limits: Limits {
            rpm: None,
            tpm: Some(7),
            budget: Some(Budget {
                tokens: 10,
                period: Period::Month,
            }),
        },
        ..KeyPolicy::default()
    };
    let inherit = Switches::from_table(|_, _| KeySetting::Inherit);
    assert_eq!(
        serde_json::to_value(k).unwrap(),
        with_switches(
            serde_json::json!({
                "mcp_tools": "a:b,c:*", "mcp_resources": null, "mcp_prompts": null,
                "region": null, "rpm": null, "tpm": 7, "budget_tokens": 10,
                "budget_period": "month",
            }),
            serde_json::to_value(inherit).unwrap(),
        )
    );
    assert_eq!(serde_json::to_value(inherit).unwrap()["pii"], "inherit");
}
