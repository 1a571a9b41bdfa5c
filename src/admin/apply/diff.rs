//! What differs between a row and what the bundle wants: the changes to make, and their names
//! for the plan.

use super::*;

/// The changes that bring org `have` to `want` (none when it matches). A region the bundle
/// leaves out is kept.
pub(super) fn org_change(have: &store::Org, want: &OrgSpec) -> (OrgPatch, Vec<&'static str>) {
    OrgPatch::between(&have.policy, &want.settings.apply(&have.policy))
}

/// The changes that bring key `have` to `want` (none when it matches; a key's region is set
/// when it is made).
pub(super) fn key_change(have: &store::Key, want: &KeySpec) -> (KeyPatch, Vec<&'static str>) {
    KeyPatch::between(&have.policy, &want.policy)
}
