//! What differs between a row and what the bundle wants: the changes to make, and their names
//! for the plan.

use super::*;

/// The changes that bring org `have` to `want` (none when it matches).
pub(super) fn org_change(have: &store::Org, want: &OrgSpec) -> (OrgChange, Vec<&'static str>) {
    let mut c = OrgChange::default();
    let mut fields = Vec::new();
    if want.region.is_some() && want.region != have.region {
        c.region = want.region;
        fields.push("region");
    }
    let mut on_off = |name, w: Option<Setting>, h: Setting, slot: &mut Option<Setting>| {
        if let Some(w) = w.filter(|w| *w != h) {
            *slot = Some(w);
            fields.push(name);
        }
    };
    on_off("pii", want.pii, have.pii, &mut c.pii);
    on_off("secrets", want.secrets, have.secrets, &mut c.secrets);
    on_off(
        "response_redaction",
        want.response_redaction,
        have.response_redaction,
        &mut c.response_redaction,
    );
    let mut list = |name, w: &Option<crate::mcp::AllowList>, h: &str, slot: &mut Option<_>| {
        if let Some(w) = w.as_ref().filter(|w| w.to_string() != h) {
            *slot = Some(w.clone());
            fields.push(name);
        }
    };
    list(
        "mcp_tools",
        &want.mcp.tools,
        &have.mcp_tools,
        &mut c.mcp.tools,
    );
    list(
        "mcp_resources",
        &want.mcp.resources,
        &have.mcp_resources,
        &mut c.mcp.resources,
    );
    list(
        "mcp_prompts",
        &want.mcp.prompts,
        &have.mcp_prompts,
        &mut c.mcp.prompts,
    );
    let have_limits = crate::limits::Limits::of_org(have);
    let want_limits = want.limits.apply(crate::limits::Limits::default());
    c.limits = limit_diff(&have_limits, &want_limits, &mut fields);
    (c, fields)
}

/// The change from `have` to exactly `want` (a limit `want` does not set is removed).
pub(super) fn limit_diff(
    have: &crate::limits::Limits,
    want: &crate::limits::Limits,
    fields: &mut Vec<&'static str>,
) -> LimitsPatch {
    let mut c = LimitsPatch::default();
    if want.rpm != have.rpm {
        c.rpm = Patch::replace(want.rpm);
        fields.push("rpm");
    }
    if want.tpm != have.tpm {
        c.tpm = Patch::replace(want.tpm);
        fields.push("tpm");
    }
    if want.budget != have.budget {
        c.budget = Patch::replace(want.budget);
        fields.push("budget");
    }
    c
}

pub(super) fn key_change(
    have: &store::Key,
    want: &KeySpec,
) -> (crate::admin::KeyChange, Vec<&'static str>) {
    let mut c = crate::admin::KeyChange::default();
    let mut fields = Vec::new();
    let mut setting = |name, w: KeySetting, h: KeySetting, slot: &mut Option<KeySetting>| {
        if w != h {
            *slot = Some(w);
            fields.push(name);
        }
    };
    setting("pii", want.pii, have.pii, &mut c.pii);
    setting("secrets", want.secrets, have.secrets, &mut c.secrets);
    setting(
        "response_redaction",
        want.response_redaction,
        have.response_redaction,
        &mut c.response_redaction,
    );
    let mut list = |name,
                    w: &Option<crate::mcp::AllowList>,
                    h: &Option<String>,
                    slot: &mut Patch<crate::mcp::AllowList>| {
        if w.as_ref().map(|l| l.to_string()) != *h {
            *slot = Patch::replace(w.clone());
            fields.push(name);
        }
    };
    list(
        "mcp_tools",
        &want.mcp.tools,
        &have.mcp_tools,
        &mut c.mcp.tools,
    );
    list(
        "mcp_resources",
        &want.mcp.resources,
        &have.mcp_resources,
        &mut c.mcp.resources,
    );
    list(
        "mcp_prompts",
        &want.mcp.prompts,
        &have.mcp_prompts,
        &mut c.mcp.prompts,
    );
    let want_limits = crate::limits::Limits {
        rpm: want.rpm,
        tpm: want.tpm,
        budget: want.budget,
    };
    c.limits = limit_diff(
        &crate::limits::Limits::of_key(have),
        &want_limits,
        &mut fields,
    );
    (c, fields)
}
