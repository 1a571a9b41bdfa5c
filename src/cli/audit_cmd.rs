//! `sluice audit`: verify, tail, export and prune the audit log.

use super::*;

pub(super) fn rfc3339_utc(s: &str) -> Result<String, String> {
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    crate::store::parse_time(&full)
        .map(crate::store::utc_text)
        .ok_or_else(|| format!("{s:?} is not an RFC 3339 time or a YYYY-MM-DD date"))
}

pub(super) fn audit_command(config: Option<PathBuf>, json: bool, c: AuditCmd) -> i32 {
    let cfg = match load(config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let store = match open_store(&cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice: {e}");
            return EXIT_FAILED;
        }
    };
    let fail = |m: String| {
        eprintln!("sluice: {m}");
        if json {
            print_json(&serde_json::json!({"error": {"message": m}}));
        }
        EXIT_FAILED
    };
    let mut out = std::io::stdout().lock();
    match c {
        AuditCmd::Verify => match audit::verify_store(&store) {
            Err(e) => fail(e.to_string()),
            Ok(Ok(n)) => {
                if json {
                    print_json(&serde_json::json!({"ok": true, "records": n}));
                } else {
                    println!("audit log intact: {n} records");
                }
                0
            }
            Ok(Err(b)) => {
                if json {
                    print_json(&serde_json::json!({"ok": false, "broken": {
                        "seq": b.seq, "id": b.id, "reason": b.reason}}));
                }
                eprintln!("sluice: {b}");
                EXIT_FAILED
            }
        },
        AuditCmd::Tail {
            org,
            lines,
            after,
            follow,
        } => {
            // Readable output: sealed fields opened when the master key is at hand.
            let ring = Keyring::from_env().ok();
            if ring.is_none() {
                eprintln!("sluice: SLUICE_SECRETS_KEY is not set: org records are shown with their personal fields sealed");
            }
            let mut keys = ring.as_ref().map(audit::OrgKeys::new);
            let start = match after {
                Some(seq) if seq < 0 => {
                    return fail("--after must be a record's seq (0 or more)".into())
                }
                Some(seq) => Ok(seq),
                // Nothing old: only what is written from now on.
                None if lines <= 0 => store.audit_tail().map(|t| t.map_or(0, |(seq, _)| seq)),
                None => store.audit_seq_before_last(lines, org.as_deref()),
            };
            // A shipper stopped (SIGTERM, SIGINT) prints what was written until then first.
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            if follow {
                for sig in [libc::SIGTERM, libc::SIGINT] {
                    let stop = stop.clone();
                    // SAFETY: the action only stores to an atomic (async-signal-safe).
                    let _ = unsafe {
                        signal_hook_registry::register(sig, move || {
                            stop.store(true, std::sync::atomic::Ordering::SeqCst)
                        })
                    };
                }
            }
            let mut after = match start {
                Ok(a) => a,
                Err(e) => return fail(e.to_string()),
            };
            loop {
                // Seen before the read: a stop asked for now ends after this read finds nothing.
                let stopping = stop.load(std::sync::atomic::Ordering::SeqCst);
                let rows = match store.audit_rows(after, org.as_deref(), None, 1000) {
                    Ok(r) => r,
                    Err(e) => return fail(e.to_string()),
                };
                for r in rows.iter() {
                    after = r.seq;
                    let shown = match keys.as_mut() {
                        Some(k) => k.open_row(&store, r.clone()),
                        None => r.clone(),
                    };
                    if writeln!(out, "{}", audit::row_json(&shown)).is_err() {
                        return 0; // reader went away (e.g. `| head`)
                    }
                }
                let _ = out.flush();
                if !follow || (stopping && rows.is_empty()) {
                    return 0;
                }
                if rows.is_empty() {
                    for _ in 0..10 {
                        if stop.load(std::sync::atomic::Ordering::SeqCst) {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                }
            }
        }
        AuditCmd::Export {
            since,
            org,
            decrypt,
        } => {
            let since = match since.as_deref().map(rfc3339_utc).transpose() {
                Ok(s) => s,
                Err(m) => return fail(m),
            };
            let ring = if decrypt {
                match keyring() {
                    Ok(r) => Some(r),
                    Err(m) => return fail(m),
                }
            } else {
                None
            };
            let mut keys = ring.as_ref().map(audit::OrgKeys::new);
            match audit::export(
                &store,
                org.as_deref(),
                since.as_deref(),
                keys.as_mut(),
                &mut out,
            ) {
                Ok(_) => 0,
                Err(audit::ExportError::Write(_)) => fail("cannot write the export".into()),
                Err(e) => fail(e.to_string()),
            }
        }
        AuditCmd::Prune { before, force } => {
            let before = match rfc3339_utc(&before) {
                Ok(b) => b,
                Err(m) => return fail(m),
            };
            match admin::prune_audit(&store, &Actor::cli(), &before, force) {
                Ok(p) => {
                    if json {
                        print_json(&to_json(&p));
                    } else {
                        println!(
                            "pruned {} record(s) through seq {}; a checkpoint record keeps the chain verifiable",
                            p.pruned, p.through_seq
                        );
                    }
                    0
                }
                Err(e) => fail(e.to_string()),
            }
        }
    }
}
