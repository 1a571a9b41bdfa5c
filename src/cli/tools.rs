//! `sluice redact`, `sluice check-config` and `sluice apply`.

use super::*;

pub(super) fn apply(cfg: &Config, file: &Path, dry_run: bool) -> Outcome {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {}", file.display(), e.kind()))?;
    let bundle = admin::apply::parse(&text).map_err(phrase)?;
    let store = open_store(cfg)?;
    let actor = Actor::cli();
    let opts = admin::apply::Options {
        pii_default: pii_default(cfg),
        max_removal_ratio: cfg.fleet.max_removal_ratio,
    };
    let changes = if dry_run {
        admin::apply::plan(&store, &bundle, opts)
    } else {
        admin::apply::apply(&store, &keyring_for(&store)?, &actor, &bundle, opts)
    }
    .map_err(phrase)?;
    let mut text: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
    text.push(match (dry_run, changes.len()) {
        (_, 0) => "nothing to change: the store matches the bundle".into(),
        (true, n) => format!("{n} change(s) planned; nothing was changed (--dry-run)"),
        (false, n) => format!("{n} change(s) applied"),
    });
    Ok((
        serde_json::json!({"changes": changes, "dry_run": dry_run}),
        text.join("\n"),
    ))
}

/// `sluice redact`: JSON when stdin is a JSON document, text otherwise.
pub(super) fn redact(json: bool) -> i32 {
    let mut input = Vec::new();
    let limit = 64 << 20;
    if let Err(e) = std::io::stdin()
        .lock()
        .take(limit as u64 + 1)
        .read_to_end(&mut input)
    {
        eprintln!("sluice: cannot read standard input: {e}");
        return EXIT_FAILED;
    }
    if input.len() > limit {
        eprintln!("sluice: input larger than {limit} bytes");
        return EXIT_FAILED;
    }
    let Ok(text) = String::from_utf8(input) else {
        eprintln!("sluice: input is not UTF-8");
        return EXIT_FAILED;
    };
    let engine = crate::redact::Engine::new();
    let mut counts = crate::redact::Counts::default();
    let scan = crate::redact::Scan::ALL;
    let (format, output) = match engine.redact_json(&text, scan, &mut counts) {
        Ok(r) => ("json", r.unwrap_or(text)),
        Err(_) => {
            counts = Default::default();
            let r = engine.redact_text(&text, scan, &mut counts);
            ("text", r.unwrap_or(text))
        }
    };
    if json {
        print_json(&serde_json::json!({"format": format, "output": output, "counts": counts}));
    } else {
        print!("{output}");
        let _ = std::io::stdout().flush();
        let summary = counts.header_value();
        eprintln!(
            "sluice: {format}: {}",
            if summary.is_empty() {
                "nothing redacted"
            } else {
                &summary
            }
        );
    }
    0
}

pub(super) fn check_config(config: Option<PathBuf>, json: bool) -> i32 {
    match Config::load(config.as_deref()) {
        Ok(_) => {
            if json {
                print_json(&serde_json::json!({"ok": true}));
            } else {
                println!("config ok");
            }
            0
        }
        Err(e) => {
            eprintln!("sluice: {e}");
            let code = match &e {
                LoadError::Read { .. } => EXIT_FAILED,
                LoadError::Invalid { .. } => EXIT_CONFIG,
            };
            if json {
                // Every problem with its key path, as the text lists them.
                let v = match &e {
                    LoadError::Invalid { problems, .. } => serde_json::json!({"ok": false,
                        "problems": problems.iter().map(|p| serde_json::json!({
                            "path": p.path, "message": p.message})).collect::<Vec<_>>()}),
                    LoadError::Read { .. } => {
                        serde_json::json!({"ok": false, "error": e.to_string()})
                    }
                };
                print_json(&v);
            }
            code
        }
    }
}
