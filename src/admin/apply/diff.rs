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
    c.limits = limit_diff(&have_limits, &want.limits, &mut fields);
    (c, fields)
}

pub(super) fn limit_diff(
    have: &crate::limits::Limits,
    want: &crate::admin::LimitsChange,
    fields: &mut Vec<&'static str>,
) -> crate::admin::LimitsChange {
    let mut c = crate::admin::LimitsChange::default();
    let w_rpm = want.rpm.flatten();
    if w_rpm != have.rpm {
        c.rpm = Some(w_rpm);
        fields.push("rpm");
    }
    let w_tpm = want.tpm.flatten();
    if w_tpm != have.tpm {
        c.tpm = Some(w_tpm);
        fields.push("tpm");
    }
    let w_budget = want.budget.flatten();
    if w_budget != have.budget {
        c.budget = Some(w_budget);
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
                    slot: &mut Option<Option<crate::mcp::AllowList>>| {
        if w.as_ref().map(|l| l.to_string()) != *h {
            *slot = Some(w.clone());
            fields.push(name);
        }
    };
    list(
        "mcp_tools",
        &want.mcp.tools,
        &have.mcp_tools,
        &mut c.mcp_tools,
    );
    list(
        "mcp_resources",
        &want.mcp.resources,
        &have.mcp_resources,
        &mut c.mcp_resources,
    );
    list(
        "mcp_prompts",
        &want.mcp.prompts,
        &have.mcp_prompts,
        &mut c.mcp_prompts,
    );
    let want_limits = crate::admin::LimitsChange {
        rpm: Some(want.rpm),
        tpm: Some(want.tpm),
        budget: Some(want.budget),
    };
    c.limits = limit_diff(
        &crate::limits::Limits::of_key(have),
        &want_limits,
        &mut fields,
    );
    (c, fields)
}
