//! The tamper-evident audit log. Every record is chained to the one before it: its `hash` is
//! SHA-256 over the previous record's hash and the record's own canonical encoding, so an
//! edited, deleted, reordered or inserted row breaks the chain at that row and
//! [`verify`] names it. SQLite triggers make the table append-only for ordinary writers;
//! pruning (`sluice audit prune`) removes a prefix and appends a checkpoint record that carries
//! the last pruned hash, so what remains still verifies.
//!
//! Admin actions are appended in the same transaction as the change they record
//! ([`Store::atomically`]), so an acknowledged action always has its record. Proxied requests go
//! through [`Writer`], a background thread that batches from a bounded queue (a 10 ms window,
//! 500 records per transaction) and makes the proxy wait, never drop, when the queue is full.

mod seal;
mod writer;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::store::{self, AuditRow, Store};

pub use seal::{OrgKeys, SealError, SEALED};
pub use writer::{Writer, WriterStats};

/// The `prev_hash` of the first record ever written.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An audit record before it is chained, its `details` as `D`: a JSON value while it is being
/// built ([`Record`]), the stored JSON text once bounded ([`Bounded`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Entry<D> {
    /// `admin`, `request` or `checkpoint`.
    pub kind: &'static str,
    /// e.g. `org.create`, `key.revoke`, `proxy.request`.
    pub action: String,
    /// A user id, or `cli:<os user>`, or `proxy`.
    pub actor: String,
    pub org_id: Option<String>,
    pub target_id: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// `success` or `failure`.
    pub outcome: &'static str,
    /// A JSON object. Never a secret, never a body.
    pub details: D,
    /// A proxied request's use of a key, added to the hourly roll-up (`usage_hourly`) in the
    /// transaction that appends the record. Not part of the record (nor of its hash).
    #[serde(skip)]
    pub usage: Option<Box<Usage>>,
}

/// What a `proxy.request` record adds to the hourly usage roll-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub key_id: String,
    /// As the metrics label it ([`crate::usage::model_label`]): bounded in form.
    pub model: &'static str,
    /// The model when it is not one of the fixed labels (`model` is then empty).
    pub model_name: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// A record being built: `details` is a JSON value.
pub type Record = Entry<serde_json::Value>;

/// A record ready to be chained: every field bounded ([`Record::bounded`],
/// [`Bounded::typed`]) and `details` the JSON text that is stored and hashed. The request-record
/// writer queues these, so a batch that is retried is not bounded or serialised again.
pub type Bounded = Entry<String>;

/// Longest string kept in a record's identity fields (ids, actor, action, IP), in characters.
pub const MAX_FIELD_CHARS: usize = 256;
/// Longest string kept anywhere inside `details`, in characters.
pub const MAX_DETAIL_CHARS: usize = 256;
/// Largest `details` object kept, in bytes of JSON; larger ones are replaced by a marker.
pub const MAX_DETAILS_BYTES: usize = 8 * 1024;

/// `s` cut to at most `max` characters (on a character boundary).
pub fn cap(s: &str, max: usize) -> &str {
    // No more bytes than `max`: no more characters either (the usual case, without a walk).
    if s.len() <= max {
        return s;
    }
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn cap_owned(s: &mut String, max: usize) {
    let n = cap(s, max).len();
    s.truncate(n);
}

/// Cut every string inside `v` (values and keys) to `max` characters.
fn cap_json(v: &mut serde_json::Value, max: usize) {
    match v {
        serde_json::Value::String(s) => cap_owned(s, max),
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| cap_json(x, max)),
        serde_json::Value::Object(o) => {
            let long: Vec<String> = o
                .keys()
                .filter(|k| k.chars().count() > max)
                .cloned()
                .collect();
            for k in long {
                if let Some(x) = o.remove(&k) {
                    o.insert(cap(&k, max).to_string(), x);
                }
            }
            o.values_mut().for_each(|x| cap_json(x, max));
        }
        _ => {}
    }
}

impl<D> Entry<D> {
    /// Every identity field cut to [`MAX_FIELD_CHARS`].
    fn bound_fields(&mut self) {
        for f in [&mut self.action, &mut self.actor] {
            cap_owned(f, MAX_FIELD_CHARS);
        }
        for f in [
            &mut self.org_id,
            &mut self.target_id,
            &mut self.source_ip,
            &mut self.user_agent,
            &mut self.request_id,
        ]
        .into_iter()
        .flatten()
        {
            cap_owned(f, MAX_FIELD_CHARS);
        }
    }

    /// The same record with other details.
    pub fn with_details<E>(self, details: E) -> Entry<E> {
        Entry {
            kind: self.kind,
            action: self.action,
            actor: self.actor,
            org_id: self.org_id,
            target_id: self.target_id,
            source_ip: self.source_ip,
            user_agent: self.user_agent,
            request_id: self.request_id,
            outcome: self.outcome,
            details,
            usage: self.usage,
        }
    }
}

/// `details` as stored: `text` when it fits in [`MAX_DETAILS_BYTES`], else
/// `{"truncated": true, "bytes": n}`.
fn bounded_text(text: String) -> String {
    if text.len() > MAX_DETAILS_BYTES {
        return format!(r#"{{"truncated":true,"bytes":{}}}"#, text.len());
    }
    text
}

impl Record {
    /// Bound the record's size whatever a client sent: every string field and every string in
    /// `details` is cut to a few hundred characters, and `details` as a whole to 8 KiB (an
    /// oversized one becomes `{"truncated": true, "bytes": n}`). Append-only records must never
    /// let a client fill the disk (a 5 MB `model` field, a huge user agent).
    pub fn bounded(mut self) -> Bounded {
        self.bound_fields();
        let mut details = std::mem::take(&mut self.details);
        cap_json(&mut details, MAX_DETAIL_CHARS);
        self.with_details(bounded_text(details.to_string()))
    }
}

impl Bounded {
    /// A record whose details are a typed value, serialised once (no intermediate JSON value:
    /// the data plane builds one per request). Each string `details` holds must already be cut
    /// to [`MAX_DETAIL_CHARS`] (with [`cap`]); the identity fields and the size are bounded
    /// here as for [`Record::bounded`].
    pub fn typed(record: Entry<()>, details: &impl Serialize) -> Bounded {
        let mut r = record.with_details(serde_json::to_string(details).unwrap_or_default());
        r.bound_fields();
        r.details = bounded_text(std::mem::take(&mut r.details));
        r
    }
}

/// The actor for CLI commands: `cli:` and the OS user.
pub fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid={}", unsafe { libc::getuid() }));
    format!("cli:{user}")
}

/// The canonical bytes a record's hash covers: a JSON array of every field but the hashes,
/// in a fixed order.
fn canonical_fields(r: &AuditRow) -> impl serde::Serialize + '_ {
    (
        r.seq,
        &r.id,
        &r.at,
        &r.kind,
        &r.action,
        &r.actor,
        &r.org_id,
        &r.target_id,
        &r.source_ip,
        &r.user_agent,
        &r.request_id,
        &r.outcome,
        &r.details,
    )
}

#[cfg(test)]
fn canonical(r: &AuditRow) -> Vec<u8> {
    serde_json::to_vec(&canonical_fields(r)).unwrap_or_default()
}

/// Feeds what serde_json writes straight into the hash (no intermediate buffer per record).
struct Hashing<'a>(&'a mut Sha256);

impl std::io::Write for Hashing<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn chain_hash(prev: &str, r: &AuditRow) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update([0u8]);
    // Serialising strings and integers into a writer that cannot fail does not fail.
    let _ = serde_json::to_writer(Hashing(&mut h), &canonical_fields(r));
    store::pack::hex_text(&h.finalize())
}

/// Append records, chained to the current tail, their personal fields sealed under their org's
/// data key. Must run inside [`Store::atomically`] (the tail read and the inserts are one
/// transaction, so concurrent writers cannot fork the chain).
pub fn append_in(store: &Store, keys: &mut OrgKeys, records: &[Record]) -> store::Result<()> {
    let bounded: Vec<Bounded> = records.iter().cloned().map(Record::bounded).collect();
    append_bounded_in(store, keys, &bounded)
}

/// [`append_in`] for records already bounded.
fn append_bounded_in(store: &Store, keys: &mut OrgKeys, records: &[Bounded]) -> store::Result<()> {
    keys.begin();
    let tail = store.audit_tail()?.unwrap_or((0, GENESIS.to_string()));
    append_after(store, tail, records, Some(keys))
}

fn append_after(
    store: &Store,
    tail: (i64, String),
    records: &[Bounded],
    mut keys: Option<&mut OrgKeys>,
) -> store::Result<()> {
    let (mut seq, mut prev) = tail;
    let mut usage = Rollup::default();
    for r in records {
        seq += 1;
        let r = r.clone();
        let mut row = AuditRow {
            seq,
            id: store::new_id(),
            at: store::Timestamp::now().to_string(),
            kind: r.kind.to_string(),
            action: r.action,
            actor: r.actor,
            org_id: r.org_id,
            target_id: r.target_id,
            source_ip: r.source_ip,
            user_agent: r.user_agent,
            request_id: r.request_id,
            outcome: r.outcome.to_string(),
            details: r.details,
            prev_hash: prev,
            hash: String::new(),
        };
        usage.add(row.org_id.as_ref(), r.usage.as_deref());
        if row.org_id.is_some() {
            // Fail closed: an org's record is never stored with its personal fields in clear.
            let keys = keys.as_deref_mut().ok_or_else(|| store::Error::Io {
                path: "org data key".into(),
                source: std::io::Error::other("an org's audit record needs the master key"),
            })?;
            keys.seal_row(store, &mut row)?;
        }
        row.hash = chain_hash(&row.prev_hash, &row);
        store.insert_audit(&row)?;
        prev = row.hash;
    }
    usage.write(store)
}

/// The hourly usage roll-up of a batch of request records, written in the batch's transaction
/// (`usage_hourly`, what `GET /api/usage` reads).
#[derive(Default)]
struct Rollup(std::collections::BTreeMap<(String, String, String), (u64, u64, u64)>);

impl Rollup {
    /// Count a record's [`Usage`], if it has one.
    fn add(&mut self, org_id: Option<&String>, usage: Option<&Usage>) {
        let (Some(org), Some(u)) = (org_id, usage) else {
            return;
        };
        let model = if u.model.is_empty() {
            u.model_name.clone()
        } else {
            u.model.to_string()
        };
        let e = self
            .0
            .entry((org.clone(), u.key_id.clone(), model))
            .or_default();
        e.0 = e.0.saturating_add(1);
        e.1 = e.1.saturating_add(u.input_tokens);
        e.2 = e.2.saturating_add(u.output_tokens);
    }

    fn write(self, store: &Store) -> store::Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let hour = now - now.rem_euclid(3600);
        let rows: Vec<store::UsageAdd> = self
            .0
            .into_iter()
            .map(
                |((org_id, key_id, model), (requests, i, o))| store::UsageAdd {
                    org_id,
                    key_id,
                    model,
                    hour,
                    requests,
                    input_tokens: i,
                    output_tokens: o,
                },
            )
            .collect();
        // The roll-up is a convenience for the console and `GET /api/usage`: when it cannot be
        // written (undone in its savepoint), the records still are, and the data plane goes on.
        if let Err(e) = store.add_usage(&rows) {
            // Once a minute at most: a full disk would otherwise say so for every batch.
            static WARNED: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
            let minute = now / 60;
            if WARNED.swap(minute, std::sync::atomic::Ordering::Relaxed) != minute {
                tracing::warn!(error = %e, "the hourly usage roll-up was not written for a batch of audit records (the records were)");
            }
        }
        Ok(())
    }
}

/// Append records in their own transaction.
pub fn append(store: &Store, keys: &mut OrgKeys, records: &[Record]) -> store::Result<()> {
    store.atomically(|s| append_in(s, keys, records))
}

/// Append bounded records in their own transaction (the request-record writer).
pub fn append_bounded(store: &Store, keys: &mut OrgKeys, records: &[Bounded]) -> store::Result<()> {
    store.atomically(|s| append_bounded_in(s, keys, records))
}

/// Where and why the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at record seq={seq} id={id}: {reason}")]
pub struct Broken {
    pub seq: i64,
    pub id: String,
    pub reason: &'static str,
}

/// Walk rows (oldest first, the whole table) and check the chain. `Ok(n)`: n records intact.
/// The first row may follow a pruned prefix only when a checkpoint record vouches for its
/// `prev_hash`.
pub fn verify(rows: &[AuditRow]) -> Result<usize, Broken> {
    let mut v = Verifier::new(
        rows.iter()
            .filter(|r| r.kind == "checkpoint")
            .map(|r| r.details.as_str()),
    );
    for r in rows {
        v.feed(r)?;
    }
    Ok(v.count())
}

/// Checks the chain one record at a time, oldest first, holding only the previous record's
/// seq and hash (the whole log need not be in memory).
pub struct Verifier {
    /// The `last_pruned_hash` of each pruning checkpoint: the first record may follow one.
    vouched: Vec<String>,
    prev: Option<(i64, String)>,
    count: usize,
}

impl Verifier {
    /// A verifier that accepts a first record following any of these checkpoints (their
    /// `details`, see [`Store::audit_checkpoints`]).
    pub fn new<'a>(checkpoints: impl IntoIterator<Item = &'a str>) -> Verifier {
        let vouched = checkpoints
            .into_iter()
            .filter_map(|d| {
                serde_json::from_str::<serde_json::Value>(d)
                    .ok()
                    .and_then(|d| d["last_pruned_hash"].as_str().map(String::from))
            })
            .collect();
        Verifier {
            vouched,
            prev: None,
            count: 0,
        }
    }

    /// Check the next record.
    pub fn feed(&mut self, r: &AuditRow) -> Result<(), Broken> {
        let broken = |reason| Broken {
            seq: r.seq,
            id: r.id.clone(),
            reason,
        };
        match &self.prev {
            None => {
                if r.prev_hash != GENESIS && !self.vouched.contains(&r.prev_hash) {
                    return Err(broken(
                        "the first record does not follow the genesis or a pruning checkpoint (records deleted?)",
                    ));
                }
            }
            Some((seq, hash)) => {
                if r.seq != seq + 1 {
                    return Err(broken(
                        "a gap in the sequence (records deleted or inserted)",
                    ));
                }
                if r.prev_hash != *hash {
                    return Err(broken(
                        "does not chain to the record before it (records deleted, inserted or reordered)",
                    ));
                }
            }
        }
        if chain_hash(&r.prev_hash, r) != r.hash {
            return Err(broken("its content does not match its hash (edited)"));
        }
        self.prev = Some((r.seq, r.hash.clone()));
        self.count += 1;
        Ok(())
    }

    /// Records checked so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The seq of the last record checked (0 before the first).
    pub fn last_seq(&self) -> i64 {
        self.prev.as_ref().map_or(0, |p| p.0)
    }
}

/// Verify the whole log in `store`, a page at a time.
pub fn verify_store(store: &Store) -> Result<Result<usize, Broken>, store::Error> {
    verify_pages(&store.audit_checkpoints()?, |after| {
        store.audit_rows(after, None, None, 10_000)
    })
}

/// Verify the records `page(after_seq)` reads, page by page (oldest first; an empty page ends
/// the walk), against the pruning `checkpoints` (their details): only one page is held at a
/// time, and the reader decides how (e.g. taking a lock per page) and where to stop.
pub fn verify_pages(
    checkpoints: &[String],
    mut page: impl FnMut(i64) -> store::Result<Vec<AuditRow>>,
) -> Result<Result<usize, Broken>, store::Error> {
    let mut v = Verifier::new(checkpoints.iter().map(String::as_str));
    loop {
        let rows = page(v.last_seq())?;
        if rows.is_empty() {
            return Ok(Ok(v.count()));
        }
        for r in &rows {
            if let Err(b) = v.feed(r) {
                return Ok(Err(b));
            }
        }
    }
}

/// What pruning did.
/// A stored record as JSON for people and tools (`audit tail`, `audit export`,
/// `GET /api/audit`): the row's fields, with `details` as a JSON object rather than the string
/// the hash covers.
pub fn row_json(r: &AuditRow) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(d) = v.get_mut("details") {
        if let Some(parsed) = d
            .as_str()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        {
            *d = parsed;
        }
    }
    v
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("cannot write the export: {0}")]
    Write(#[from] std::io::Error),
}

/// Write the records of `org` (all orgs when `None`) from `since` (RFC 3339 UTC) on, oldest
/// first, one JSON object per line ([`row_json`]) to `out`, their sealed fields opened with
/// `keys` when given. A complete export (no filter), once flushed, marks the records it covered
/// as exported: what [`prune`] may then remove without `force`. Returns the number written.
pub fn export(
    store: &Store,
    org: Option<&str>,
    since: Option<&str>,
    mut keys: Option<&mut OrgKeys>,
    out: &mut impl std::io::Write,
) -> Result<u64, ExportError> {
    let mut after = 0;
    let mut written = 0;
    loop {
        let rows = store.audit_rows(after, org, since, 5000)?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for r in rows {
            let shown = match keys.as_mut() {
                Some(k) => k.open_row(store, r),
                None => r,
            };
            writeln!(out, "{}", row_json(&shown))?;
            written += 1;
        }
    }
    out.flush()?;
    if since.is_none() && org.is_none() && after > 0 {
        store.mark_audit_exported(after)?;
    }
    Ok(written)
}

#[derive(Debug, Serialize)]
pub struct Pruned {
    pub pruned: usize,
    pub through_seq: i64,
}

/// Why pruning was refused.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("records up to seq {needed} are not exported yet (exported through {exported}); run `sluice audit export` first, or pass --force")]
    NotExported { needed: i64, exported: i64 },
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Remove records older than `before` (RFC 3339) and append a checkpoint carrying the last
/// pruned hash, in one transaction. Refused unless they were exported or `force`.
pub fn prune(store: &Store, before: &str, force: bool, actor: &str) -> Result<Pruned, PruneError> {
    store.atomically(|s| {
        let Some((through, last_hash)) = s.audit_last_before(before)? else {
            return Ok(Pruned {
                pruned: 0,
                through_seq: 0,
            });
        };
        let exported = s.audit_exported_through()?;
        if exported < through && !force {
            return Err(PruneError::NotExported {
                needed: through,
                exported,
            });
        }
        let pruned = s.delete_audit_through(through)?;
        let mut r = Record {
            kind: "checkpoint",
            action: "audit.prune".into(),
            actor: actor.into(),
            outcome: "success",
            ..Default::default()
        };
        r.details = serde_json::json!({
            "before": before, "pruned": pruned, "through_seq": through,
            "last_pruned_hash": last_hash.clone(), "forced": force,
        });
        // The chain continues from the last pruned record even when nothing is left.
        let tail = s.audit_tail()?.unwrap_or((through, last_hash));
        append_after(s, tail, &[r.bounded()], None)?;
        Ok(Pruned {
            pruned,
            through_seq: through,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_counts_characters_not_bytes() {
        assert_eq!(cap("abc", 3), "abc");
        assert_eq!(cap("abcd", 3), "abc");
        assert_eq!(cap("", 0), "");
        // Over `max` bytes but not over `max` characters: kept whole.
        assert_eq!(cap("é", 1), "é");
        assert_eq!(cap("日本語", 3), "日本語");
        // Over in characters: cut on a character boundary.
        assert_eq!(cap("日本語", 2), "日本");
        assert_eq!(cap("aé€😀b", 4), "aé€😀");
        assert_eq!(cap("😀😀", 0), "");
    }

    fn actor(id: &str) -> crate::admin::Actor {
        crate::admin::Actor {
            id: id.into(),
            ..Default::default()
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("a.db")).unwrap();
        (d, s)
    }

    fn fill(s: &Store, n: usize) {
        let ring = crate::vault::Keyring::new(&crate::vault::Keyring::generate(), &[]).unwrap();
        for i in 0..n {
            let mut r = actor("cli:test").record("org.create", None);
            r.target_id = Some(format!("t{i}"));
            append(s, &mut OrgKeys::new(&ring), &[r]).unwrap();
        }
    }

    fn all(s: &Store) -> Vec<AuditRow> {
        s.audit_rows(0, None, None, 1000).unwrap()
    }

    fn fixed_row(details: &str) -> AuditRow {
        AuditRow {
            seq: 7,
            id: "01a23cd3-922b-7642-b1ca-23babdb58c42".into(),
            at: "2026-12-03T16:53:48.203663305Z".into(),
            kind: "request".into(),
            action: "proxy.request".into(),
            actor: "key:k1".into(),
            org_id: Some("o1".into()),
            target_id: None,
            source_ip: Some("sealed:v1:abc+/=".into()),
            user_agent: Some("ua \"quoted\" \u{e9}\u{1}".into()),
            request_id: Some("r1".into()),
            outcome: "success".into(),
            details: details.into(),
            prev_hash: GENESIS.into(),
            hash: String::new(),
        }
    }

    #[test]
    fn the_chain_hash_is_the_hash_of_the_canonical_encoding() {
        // Chains written by earlier builds (which hashed a buffered encoding) must still
        // verify: the streamed hash is pinned to a value and to the buffered definition.
        let row = fixed_row(r#"{"method":"POST","path":"/v1/chat/completions","n":[1,2]}"#);
        assert_eq!(
            chain_hash(GENESIS, &row),
            "3b345ce71cbb131ed4edbca9c397de4ed8f58ab97a850b4886d873de383407d8"
        );
        for details in ["", "{}", "\\\"\n\t\u{7f}\u{10ffff}", &"x".repeat(5000)] {
            let row = fixed_row(details);
            let mut h = Sha256::new();
            h.update(GENESIS.as_bytes());
            h.update([0u8]);
            h.update(canonical(&row));
            assert_eq!(
                chain_hash(GENESIS, &row),
                hex::encode(h.finalize()),
                "{details:?}"
            );
        }
    }

    #[test]
    fn text_rows_of_earlier_builds_and_packed_rows_are_one_chain_read_and_filtered_alike() {
        let (d, s) = store();
        let ring = crate::vault::Keyring::new(&crate::vault::Keyring::generate(), &[]).unwrap();
        let org = s
            .insert_org("acme", &crate::policy::OrgPolicy::default())
            .unwrap();
        let key = format!("key:{}", store::new_id());
        let record = |ip: &str| {
            let mut r = actor(&key).record("proxy.request", Some(&org.id));
            r.kind = "request";
            r.source_ip = Some(ip.into());
            r.request_id = Some(store::new_id());
            r.details = serde_json::json!({"method": "POST", "status": 200, "ip_note": ip});
            r
        };
        // A record as an earlier build stored it: every field text.
        let mut keys = OrgKeys::new(&ring);
        let old = s
            .atomically(|st| {
                keys.begin();
                let mut row = AuditRow {
                    seq: 1,
                    id: store::new_id(),
                    at: store::Timestamp::now().to_string(),
                    kind: "request".into(),
                    action: "proxy.request".into(),
                    actor: key.clone(),
                    org_id: Some(org.id.clone()),
                    target_id: None,
                    source_ip: Some("198.51.100.1".into()),
                    user_agent: None,
                    request_id: Some(store::new_id()),
                    outcome: "success".into(),
                    details: r#"{"method":"POST","status":200}"#.into(),
                    prev_hash: GENESIS.into(),
                    hash: String::new(),
                };
                keys.seal_row(st, &mut row)?;
                row.hash = chain_hash(&row.prev_hash, &row);
                Ok::<_, store::Error>(row)
            })
            .unwrap();
        let c = rusqlite::Connection::open(d.path().join("a.db")).unwrap();
        c.execute(
            "INSERT INTO audit VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15)",
            rusqlite::params![
                old.seq,
                old.id,
                old.at,
                old.kind,
                old.action,
                old.actor,
                old.org_id,
                old.target_id,
                old.source_ip,
                old.user_agent,
                old.request_id,
                old.outcome,
                old.details,
                old.prev_hash,
                old.hash
            ],
        )
        .unwrap();
        append(
            &s,
            &mut keys,
            &[record("198.51.100.2"), record("198.51.100.3")],
        )
        .unwrap();
        let mut admin = actor("cli:test").record("org.create", None);
        admin.details = serde_json::json!({"name": "a name to compress, a name to compress"});
        append(&s, &mut keys, &[admin]).unwrap();

        let rows = all(&s);
        assert_eq!(rows[0], old, "an earlier build's row reads as written");
        assert_eq!(verify(&rows), Ok(4));
        let types: Vec<(String, String, String)> = c
            .prepare("SELECT typeof(id), typeof(hash), typeof(details) FROM audit ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(types[0], ("text".into(), "text".into(), "text".into()));
        for t in &types[1..] {
            assert_eq!(t, &("blob".into(), "blob".into(), "blob".into()));
        }
        // Filters find a value in both of its stored forms.
        let by_org = s.audit_rows(0, Some(&org.id), None, 10).unwrap();
        assert_eq!(by_org.len(), 3);
        let f = crate::store::AuditFilter {
            actor: Some(&key),
            ..Default::default()
        };
        assert_eq!(s.audit_page(0, &f, 10).unwrap().len(), 3);
        assert_eq!(s.audit_seq_before_last(2, Some(&org.id)).unwrap(), 1);
        // Sealed fields open (details were compressed before sealing).
        let opened = keys.open_row(&s, rows[2].clone());
        assert_eq!(opened.source_ip.as_deref(), Some("198.51.100.3"));
        let details: serde_json::Value = serde_json::from_str(&opened.details).unwrap();
        assert_eq!(details["ip_note"], "198.51.100.3");
        assert!(rows[3].details.contains("a name to compress"));

        // A packed field edited by hand reads as unreadable and breaks the chain at its row.
        c.execute_batch(
            "DROP TRIGGER audit_no_update;
             UPDATE audit SET request_id = x'6301' WHERE seq = 3;",
        )
        .unwrap();
        let rows = all(&s);
        assert!(rows[2]
            .request_id
            .as_deref()
            .unwrap()
            .starts_with("unreadable:"));
        assert_eq!(verify(&rows).unwrap_err().seq, 3);
    }

    #[test]
    fn the_table_is_append_only() {
        let (d, s) = store();
        fill(&s, 2);
        let c = rusqlite::Connection::open(d.path().join("a.db")).unwrap();
        assert!(c.execute("UPDATE audit SET actor = 'x'", []).is_err());
        assert!(c.execute("DELETE FROM audit", []).is_err());
        assert_eq!(verify(&all(&s)), Ok(2));
    }

    #[test]
    fn tampering_is_detected_and_named() {
        let (_d, s) = store();
        fill(&s, 5);
        let rows = all(&s);
        assert_eq!(verify(&rows), Ok(5));

        let mut edited = rows.clone();
        edited[2].actor = "cli:mallory".into();
        assert_eq!(verify(&edited).unwrap_err().seq, 3);

        let mut deleted = rows.clone();
        deleted.remove(1);
        assert_eq!(verify(&deleted).unwrap_err().seq, 3);

        let mut swapped = rows.clone();
        swapped.swap(1, 2);
        assert!(verify(&swapped).is_err());

        let mut inserted = rows.clone();
        let mut extra = rows[1].clone();
        extra.id = "forged".into();
        inserted.insert(2, extra);
        assert!(verify(&inserted).is_err());

        let first_gone = rows[1..].to_vec();
        assert_eq!(verify(&first_gone).unwrap_err().seq, 2);
    }

    #[test]
    fn records_are_bounded_whatever_the_client_sent() {
        let (d, s) = store();
        let huge = "m".repeat(5 * 1024 * 1024);
        let mut r = actor("key:k").record("proxy.request", None);
        r.kind = "request";
        r.user_agent = Some(huge.clone());
        r.request_id = Some(huge.clone());
        r.details = serde_json::json!({"model": huge.clone(), "path": format!("/v1/{huge}")});
        let mut many = actor("key:k").record("proxy.request", None);
        many.details = serde_json::json!({"list": vec!["x".repeat(200); 1000]});
        let ring = crate::vault::Keyring::new(&crate::vault::Keyring::generate(), &[]).unwrap();
        for _ in 0..3 {
            append(&s, &mut OrgKeys::new(&ring), &[r.clone(), many.clone()]).unwrap();
        }
        let rows = all(&s);
        assert!(
            rows.iter()
                .all(|r| r.details.len() <= MAX_DETAILS_BYTES + 64),
            "{}",
            rows[0].details.len()
        );
        let d0: serde_json::Value = serde_json::from_str(&rows[0].details).unwrap();
        assert_eq!(d0["model"].as_str().unwrap().len(), MAX_DETAIL_CHARS);
        assert_eq!(
            rows[0].user_agent.as_deref().unwrap().len(),
            MAX_FIELD_CHARS
        );
        let d1: serde_json::Value = serde_json::from_str(&rows[1].details).unwrap();
        assert_eq!(d1["truncated"], true);
        assert_eq!(verify(&rows), Ok(6));
        drop(s);
        let size: u64 = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(size < 2 * 1024 * 1024, "six records took {size} bytes");
    }

    #[test]
    fn pruning_needs_an_export_and_keeps_the_rest_verifiable() {
        let (_d, s) = store();
        fill(&s, 4);
        let future = "2999-01-01T00:00:00Z";
        assert!(matches!(
            prune(&s, future, false, "cli:t"),
            Err(PruneError::NotExported { .. })
        ));
        s.mark_audit_exported(4).unwrap();
        let p = prune(&s, future, false, "cli:t").unwrap();
        assert_eq!((p.pruned, p.through_seq), (4, 4));
        fill(&s, 2);
        let rows = all(&s);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].kind, "checkpoint");
        assert_eq!(verify(&rows), Ok(3));
    }
}
