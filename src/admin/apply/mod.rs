//! One declarative source of orgs, keys and users for many sidecars: `sluice apply -f
//! fleet.toml` and `[fleet] bundle`. The store is converged to the file: orgs, keys and users it
//! lists are created or changed to match, keys it owned and no longer lists are revoked, users
//! deleted. Only rows the bundle owns (`managed`) are ever changed or removed: an org, key or
//! user made by hand is never taken over (listing one fails the whole apply). Keys are given by
//! SHA-256 hash and display prefix, never in plaintext. All of it is one transaction
//! with one audit record per change (`"via": "apply"`).

use super::{
    audit, import_key, mcp_list, Actor, Error, KeyPatch, KeyPolicy, KeySetting, KeySpec,
    LimitsPatch, McpLists, OrgPatch, OrgSpec, Patch, Result, Setting,
};
use crate::store::{self, Managed, Store};
use crate::vault::Keyring;

mod bundle;
mod converge;
pub use bundle::*;

/// What [`apply`] would change; nothing is written.
pub fn plan(store: &Store, bundle: &Bundle, opts: Options) -> Result<Vec<Change>> {
    converge(store, None, &Actor::default(), bundle, opts)
}

/// What applying a bundle takes from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The PII setting of orgs created without one (`[pii] default`).
    pub pii_default: Setting,
    /// `[fleet] max_removal_ratio`.
    pub max_removal_ratio: f64,
}

/// Refuse what would remove too much at once, unless the bundle says it means it: a bundle
/// that lists no org (an empty or truncated file), or one that revokes more than
/// `max_removal_ratio` of the keys the bundle manages (active ones).
fn check_removals(store: &Store, bundle: &Bundle, wanted: &[WantOrg], ratio: f64) -> Result<()> {
    if bundle.allow_mass_removal {
        return Ok(());
    }
    let hint = "nothing was changed; if this is meant, set allow_mass_removal = true in the bundle";
    if bundle.orgs.is_empty() {
        return Err(Error::Invalid(format!(
            "the bundle lists no org (an empty file?): applied, it would remove every org, key and user it manages; {hint}"
        )));
    }
    let listed: std::collections::HashSet<&[u8]> = wanted
        .iter()
        .flat_map(|w| w.keys.iter().map(|k| k.hash.as_slice()))
        .collect();
    let managed = store.managed(Managed::Key)?;
    let now = time::OffsetDateTime::now_utc();
    let keys = store.keys(None)?;
    // Active: not revoked, not expired (an expired key's removal takes nothing away).
    let active: Vec<_> = keys
        .iter()
        .filter(|k| managed.contains(&k.id) && k.revoked_at.is_none())
        .filter(|k| k.expires_at.is_none_or(|e| e.0 > now))
        .collect();
    let removed = active
        .iter()
        .filter(|k| !listed.contains(k.hash.as_slice()))
        .count();
    // What the bundle adds in their place counts against it: rotating a key (a new hash for
    // an old one) removes nothing on balance.
    let known: std::collections::HashSet<&[u8]> = keys.iter().map(|k| k.hash.as_slice()).collect();
    let added = listed.iter().filter(|h| !known.contains(*h)).count();
    let net = removed.saturating_sub(added);
    if !active.is_empty() && net as f64 > ratio * active.len() as f64 {
        return Err(Error::Invalid(format!(
            "the bundle would revoke {removed} of the {} keys it manages (adding {added}), more than fleet.max_removal_ratio ({ratio}) allows; {hint}",
            active.len()
        )));
    }
    Ok(())
}

/// Converge the store to `bundle` as `actor`, in one transaction with one audit record per
/// change; returns the changes made.
pub fn apply(
    store: &Store,
    ring: &Keyring,
    actor: &Actor,
    bundle: &Bundle,
    opts: Options,
) -> Result<Vec<Change>> {
    converge(store, Some(ring), actor, bundle, opts)
}

fn converge(
    store: &Store,
    ring: Option<&Keyring>,
    actor: &Actor,
    bundle: &Bundle,
    opts: Options,
) -> Result<Vec<Change>> {
    let wanted = want(bundle, opts.pii_default)?;
    check_removals(store, bundle, &wanted, opts.max_removal_ratio)?;
    let run = |s: &Store, write: bool| -> Result<(Vec<Change>, Vec<audit::Record>)> {
        let mut pass = converge::Pass::new(s, actor, write)?;
        for w in &wanted {
            let org_id = pass.org(w, opts.pii_default)?;
            for k in &w.keys {
                pass.key(w, &org_id, k)?;
            }
            for u in &w.users {
                pass.user(w, &org_id, u)?;
            }
        }
        // What the bundle owned and no longer lists.
        pass.unlisted()?;
        Ok(pass.done())
    };
    let Some(ring) = ring else {
        return Ok(run(store, false)?.0);
    };
    let mut org_keys = audit::OrgKeys::new(ring);
    store.atomically(|s| {
        let (changes, records) = run(s, true)?;
        audit::append_in(s, &mut org_keys, &records)?;
        Ok(changes)
    })
}

/// Converge the store to the bundle at `path` now and whenever the file changes (polled every
/// `poll`), on a thread of its own, as actor `bundle`. A bundle that cannot be read or applied
/// changes nothing and is logged once per content; the store keeps what it has.
pub fn watch(
    path: std::path::PathBuf,
    poll: std::time::Duration,
    db: std::path::PathBuf,
    max_bytes: Option<u64>,
    ring: std::sync::Arc<Keyring>,
    opts: Options,
    metrics: (prometheus::IntCounterVec, prometheus::IntGauge),
) -> std::result::Result<(), store::Error> {
    let store = Store::open_limited(&db, max_bytes)?;
    let actor = Actor {
        id: "bundle".into(),
        ..Actor::default()
    };
    let mut last: Option<[u8; 32]> = None;
    let mut step = move || {
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) => {
                let digest = [0u8; 32];
                if last != Some(digest) {
                    tracing::warn!(bundle = %path.display(), error = %e.kind(), "cannot read [fleet] bundle; the store keeps what it has");
                    metrics.0.with_label_values(&["error"]).inc();
                    last = Some(digest);
                }
                return;
            }
        };
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&text).into();
        if last == Some(digest) {
            return;
        }
        last = Some(digest);
        let result = std::str::from_utf8(&text)
            .map_err(|_| Error::Invalid("the bundle is not UTF-8".into()))
            .and_then(parse)
            .and_then(|b| apply(&store, &ring, &actor, &b, opts));
        match result {
            Ok(changes) => {
                metrics.0.with_label_values(&["ok"]).inc();
                metrics
                    .1
                    .set(time::OffsetDateTime::now_utc().unix_timestamp());
                tracing::info!(bundle = %path.display(), changes = changes.len(), "store converged to [fleet] bundle");
            }
            Err(e) => {
                metrics.0.with_label_values(&["error"]).inc();
                tracing::warn!(bundle = %path.display(), error = %e, "[fleet] bundle not applied; the store keeps what it has");
                // A store error (busy, full) is retried at the next poll; a bad file when it
                // changes.
                if !matches!(e, Error::Invalid(_)) {
                    last = None;
                }
            }
        }
    };
    step();
    std::thread::Builder::new()
        .name("sluice-bundle".into())
        .spawn(move || {
            crate::supervise::run(crate::supervise::Task::Bundle, || {
                std::thread::sleep(poll);
                step();
                std::ops::ControlFlow::Continue(())
            })
        })
        .map_err(|e| store::Error::Io {
            path: std::path::PathBuf::from("sluice-bundle thread"),
            source: e,
        })?;
    Ok(())
}

#[cfg(test)]
mod quoting {
    use super::*;

    const SECRET: &str = "sk-proj-Zq3vN8xR2mT7pL5wK9yB4cD6fH1jG0sA";

    /// A value typed into the wrong field (a provider key as a number, say) is never quoted
    /// back; what was expected and the entry's place are.
    #[test]
    fn bundle_errors_name_the_place_and_never_the_value() {
        for text in [
            format!("[[orgs]]\nname = \"a\"\nrpm = \"{SECRET}\"\n"),
            format!("[[orgs]]\nname = \"a\"\n[[orgs.keys]]\nname = \"k\"\nsha256 = \"00\"\nprefix = \"sk-sluice-\"\ntpm = \"{SECRET}\"\n"),
            format!("[[orgs]]\nname = \"a\"\n{SECRET} = 1\n"),
            format!("[[orgs]]\nname = \"a\"\nregion = {{ x = \"{SECRET}\" }}\n"),
            format!("[[orgs]]\nname = \"{SECRET}\" = 1\n"),
            format!("[[orgs]]\nname = \"a\"\nrpm = \"x, expected {SECRET}\"\n"),
        ] {
            let Err(e) = parse(&text) else {
                panic!("accepted: {text}")
            };
            let e = e.to_string();
            assert!(!e.contains(SECRET) && !e.contains("sk-proj"), "{e}");
            assert!(e.contains("line"), "{e}");
        }
        let e = parse("[[orgs]]\nname = \"a\"\nrpm = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("wrong type") && e.contains("expected"), "{e}");
        let e = parse("[[orgs]]\nrpm = 1\n").unwrap_err().to_string();
        assert!(e.contains("missing field `name`"), "{e}");
        // Validation names entries by their place, never by a name or an email.
        let b = parse(
            "[[orgs]]\nname = \"acme\"\n[[orgs.users]]\nemail = \"jane.doe@example.com\"\nrole = \"owner\"\npassword_bcrypt = \"x\"\n",
        )
        .unwrap();
        let Err(e) = want(&b, Setting::On) else {
            panic!("accepted")
        };
        let e = e.to_string();
        assert!(e.starts_with("orgs[0].users[0]:"), "{e}");
        assert!(!e.contains("jane") && !e.contains("acme"), "{e}");
        // So do refused settings, regions and lists, of an org and of a key.
        let key = "[[orgs.keys]]\nname = \"k\"\nprefix = \"sk-sluice-abcd\"\nsha256 = \"";
        let key = format!("{key}{}\"\n", "0".repeat(64));
        let others = ["region", "mcp_tools", "mcp_resources", "mcp_prompts"];
        for field in crate::policy::SWITCH_NAMES.iter().chain(&others) {
            for (at, entries) in [("orgs[1]", ""), ("orgs[1].keys[0]", key.as_str())] {
                let orgs = "[[orgs]]\nname = \"a\"\n[[orgs]]\nname = \"b\"\n";
                let text = format!("{orgs}{entries}{field} = \"no canary\"\n");
                let b = parse(&text).unwrap();
                let Err(e) = want(&b, Setting::On) else {
                    panic!("accepted: {text}")
                };
                let e = e.to_string();
                assert!(e.starts_with(&format!("{at}: ")), "{text}: {e}");
                assert!(e.contains(field) && !e.contains("canary"), "{text}: {e}");
            }
        }
    }
}
