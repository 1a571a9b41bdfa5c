use super::*;

/// A key glued to a PEM block: the block is not left behind the key's span.
#[test]
fn a_pem_block_glued_to_a_key_is_redacted_with_it() {
    let key = "sk-Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789";
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo\n-----END RSA PRIVATE KEY-----";
    let text = format!("x {key}{pem} y");
    assert_eq!(secrets(&text), vec![format!("{key}{pem}").as_str()]);
    let e = crate::redact::Engine::new();
    let out = e.redact_text(&text, crate::redact::Scan::ALL, &mut Default::default());
    assert_eq!(out.as_deref(), Some("x [REDACTED_SECRET] y"));
}

fn secrets(text: &str) -> Vec<&str> {
    let r = Rules::new();
    let mut out = Vec::new();
    r.find(text, &mut out);
    out.iter().map(|&(s, e, _)| &text[s..e]).collect()
}

#[test]
fn published_token_formats_are_found() {
    let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo\n4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u\n-----END RSA PRIVATE KEY-----";
    for (text, want) in [
        ("key sk-proj-Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGh end", "sk-proj-Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGh"),
        ("old sk-T3BlbkFJa1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8 x", "sk-T3BlbkFJa1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"),
        ("anthropic sk-ant-api03-Abc123Def456Ghi789Jkl012Mno345Pqr678Stu901Vwx", "sk-ant-api03-Abc123Def456Ghi789Jkl012Mno345Pqr678Stu901Vwx"),
        ("sluice sk-sluice-0a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0uV", "sk-sluice-0a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0uV"),
        ("aws AKIAWBOBYXE3TVGJGRWA.", "AKIAWBOBYXE3TVGJGRWA"),
        ("sts ASIAY34FZKBOKMUTVV7A", "ASIAY34FZKBOKMUTVV7A"),
        ("google AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe"),
        ("gh ghp_1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R", "ghp_1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R"),
        ("pat github_pat_11ABCDEFG0123456789abc_ABCdefGHIjklMNOpqrSTUvwxYZ0123456789abcdefghijABCDEFGHIJKLMNOP", "github_pat_11ABCDEFG0123456789abc_ABCdefGHIjklMNOpqrSTUvwxYZ0123456789abcdefghijABCDEFGHIJKLMNOP"),
        ("gl glpat-xYz123AbC456dEf789gH", "glpat-xYz123AbC456dEf789gH"),
        ("slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
        ("hook https://hooks.slack.com/services/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 done", "https://hooks.slack.com/services/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"),
        ("stripe sk_live_51H8xYzAbCdEfGhIjKlMnOpQr", "sk_live_51H8xYzAbCdEfGhIjKlMnOpQr"),
        ("restricted rk_live_51H8xYzAbCdEfGhIjKlMnOpQr", "rk_live_51H8xYzAbCdEfGhIjKlMnOpQr"),
        ("twilio SK0123456789abcdef0123456789abcdef", "SK0123456789abcdef0123456789abcdef"),
        ("sg SG.abcdefghijklmnopqrstuv.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq", "SG.abcdefghijklmnopqrstuv.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq"),
        ("npm 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", "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"),
        ("pypi pypi-AgEIcHlwaS5vcmcCJDAwMDAwMDAwLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMAACKlsz", "pypi-AgEIcHlwaS5vcmcCJDAwMDAwMDAwLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMAACKlsz"),
        (&format!("token {jwt} ok"), jwt),
        (&format!("here:\n{pem}\nthanks"), pem),
        ("db postgres://admin:hunter2@db.internal:5432/app", "admin:hunter2"),
    ] {
        assert_eq!(secrets(text), vec![want], "{text}");
    }
    // An AWS secret key next to its access key id, and after its name.
    let t = "AKIAWBOBYXE3TVGJGRWA tlhVGhXvNLWOBA5wqY2EFoj4J1oKzwZR5l817Uq4";
    assert_eq!(
        secrets(t),
        vec![
            "AKIAWBOBYXE3TVGJGRWA",
            "tlhVGhXvNLWOBA5wqY2EFoj4J1oKzwZR5l817Uq4"
        ]
    );
    let t = "aws_secret_access_key = tlhVGhXvNLWOBA5wqY2EFoj4J1oKzwZR5l817Uq4";
    assert_eq!(secrets(t), vec!["tlhVGhXvNLWOBA5wqY2EFoj4J1oKzwZR5l817Uq4"]);
    // A private key without its END line runs to the end.
    let cut = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU";
    assert_eq!(secrets(cut), vec![cut]);
}

/// One sample of every rule, with a part of it that must never survive redaction.
const SAMPLES: &[(&str, &str)] = &[
    ("sk-proj-Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGh", "Yz0123456789AbCdEfGh"),
    ("sk-ant-api03-Abc123Def456Ghi789Jkl012Mno345Pqr678Stu901Vwx", "Pqr678Stu901Vwx"),
    ("AKIAWBOBYXE3TVGJGRWA", "WBOBYXE3TVGJGRWA"),
    ("AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", "ISLn_3namBGewQe"),
    ("ghp_1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R", "3m4N5o6P7q8R"),
    ("github_pat_11ABCDEFG0123456789abc_ABCdefGHIjklMNOpqrSTUvwxYZ0123456789abcdefghijABCDEFGHIJKLMNOP", "abcdefghijABCDEFGHIJKLMNOP"),
    ("glpat-xYz123AbC456dEf789gH", "AbC456dEf789gH"),
    ("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "IjKlMnOpQrStUvWx"),
    ("sk_live_51H8xYzAbCdEfGhIjKlMnOpQr", "AbCdEfGhIjKlMnOpQr"),
    ("SK0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdef"),
    ("SG.abcdefghijklmnopqrstuv.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq", "UVWXYZabcdefghijklmnopq"),
    ("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", "qrstuvwxyz01232LolCm"),
    ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo\n-----END RSA PRIVATE KEY-----", "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo"),
];

#[test]
fn secrets_next_to_each_other_are_all_redacted() {
    let e = crate::redact::Engine::new();
    let mut leaks = Vec::new();
    for (a, ma) in SAMPLES {
        for (b, mb) in SAMPLES {
            for glue in ["", " ", "-", "_", ".", "/", ":", "=", ",", "\n", "\"", "'"] {
                let text = format!("x {a}{glue}{b} y");
                let out = e
                    .redact_text(&text, crate::redact::Scan::ALL, &mut Default::default())
                    .unwrap_or_else(|| text.clone());
                if out.contains(ma) || out.contains(mb) {
                    leaks.push(format!("{glue:?}: {text:?} -> {out:?}"));
                }
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}

#[test]
fn a_key_after_a_separator_is_found() {
    let e = crate::redact::Engine::new();
    for (key, marker) in SAMPLES {
        for before in [
            "jane.doe@example.com",
            "4111111111111111",
            "123-45-6789",
            "id",
            "x",
        ] {
            for sep in ["-", "_", "."] {
                let text = format!("a {before}{sep}{key} z");
                let out = e
                    .redact_text(&text, crate::redact::Scan::ALL, &mut Default::default())
                    .unwrap_or_else(|| text.clone());
                assert!(!out.contains(marker), "{text:?} -> {out:?}");
                assert!(
                    out.contains("[REDACTED_SECRET]") || out.contains("[REDACTED_EMAIL]"),
                    "{text:?} -> {out:?}"
                );
            }
        }
    }
}

/// An email whose domain runs into a key (`.sk` is a top-level domain): the overlapping
/// matches are replaced as one, nothing of the key is left.
#[test]
fn a_key_overlapping_an_email_is_redacted_with_it() {
    let e = crate::redact::Engine::new();
    let text = "mail jane.doe@example.com.sk-proj-Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGh now";
    let out = e.redact_text(text, crate::redact::Scan::ALL, &mut Default::default());
    assert_eq!(out.as_deref(), Some("mail [REDACTED_EMAIL] now"));
}

#[test]
fn placeholders_and_documented_examples_are_not_keys() {
    let x36 = "x".repeat(36);
    for text in [
        format!("ghp_{x36}"),
        format!("npm_{}", "0".repeat(36)),
        "glpat-xxxxxxxxxxxxxxxxxxxx".to_string(),
        "AKIAXXXXXXXXXXXXXXXX".to_string(),
        "xoxb-your-bot-token".to_string(),
        "sk_live_000000000000000000000000".to_string(),
        format!("sk-proj-{}", "X".repeat(48)),
        "AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_string(),
        "aws_secret_access_key = je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY".to_string(),
        "gho_16C7e42F292c6912E7710c838347Ae178B4a".to_string(),
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc".to_string(),
        "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX".to_string(),
        "hf_yourhuggingfacetokenhereplease1234".to_string(),
        "postgres://app:${DB_PASSWORD}@db/app".to_string(),
        "password = <your-password>".to_string(),
    ] {
        assert_eq!(secrets(&text), Vec::<&str>::new(), "{text}");
    }
}

#[test]
fn a_token_whose_checksum_holds_is_a_key_whatever_it_looks_like() {
    // Valid CRC32 checksums (GitHub's published test tokens; one computed here).
    for t in [
        "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",
        "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",
        "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",
    ] {
        assert!(checksum_holds(&t.as_bytes()[4..]), "{t}");
        assert_eq!(secrets(&format!("key {t} end")), vec![t]);
    }
    assert!(!checksum_holds(b"M7H4jxUDDWHP4kZ6A4dxlQYsQIWJuq11T4V3"));
    // A token whose checksum fails is still a key unless it is a placeholder.
    assert_eq!(
        secrets("ghp_M7H4jxUDDWHP4kZ6A4dxlQYsQIWJuq11T4V3"),
        vec!["ghp_M7H4jxUDDWHP4kZ6A4dxlQYsQIWJuq11T4V3"]
    );
}

#[test]
fn credentials_in_urls_whatever_the_password_holds() {
    for (text, want) in [
        ("redis://:s3cretPass@cache:6379/0", ":s3cretPass"),
        (
            "postgres://u:p@ss~!*%40w0rd@db.internal/app",
            "u:p@ss~!*%40w0rd",
        ),
        ("amqp://rabbit:Gu3st!pw@mq/vhost", "rabbit:Gu3st!pw"),
        (
            "mongodb+srv://app:Xy9%2Fz@cluster0.example.net/db",
            "app:Xy9%2Fz",
        ),
        ("at the end mysql://root:toor9", ""),
    ] {
        let got = secrets(text);
        if want.is_empty() {
            assert!(got.is_empty(), "{text}: {got:?}");
        } else {
            assert_eq!(got, vec![want], "{text}");
        }
    }
}

#[test]
fn encoded_and_assigned_secrets_are_found() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let key = "sk-proj-Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGh";
    let env = b64(&format!("OPENAI_API_KEY={key}\nDEBUG=1\n"));
    assert_eq!(
        secrets(&format!("data:\n  env: {env}\n")),
        vec![env.as_str()]
    );
    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("token={key}"));
    assert_eq!(secrets(&format!("x {url_safe} y")), vec![url_safe.as_str()]);
    let basic = b64("deploy:hunter2");
    assert_eq!(
        secrets(&format!("Authorization: Basic {basic}")),
        vec![basic.as_str()]
    );
    let docker = format!(r#"{{"auths":{{"ghcr.io":{{"auth":"{basic}"}}}}}}"#);
    assert_eq!(secrets(&docker), vec![basic.as_str()]);
    for (text, want) in [
        (r#""aws_secret_access_key": "q8Xv2LmN4pR7tY1wZ3bC5dF9gH0jK6sU/eW+aQoI""#, "q8Xv2LmN4pR7tY1wZ3bC5dF9gH0jK6sU/eW+aQoI"),
        ("DB_PASSWORD=Tr0ub4dor&3x", "Tr0ub4dor&3x"),
        ("api-key: 0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdef"),
        ("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=K3yK3yAbCdEfGh1JkLmNoPqRsTuVwXyZ0123456789aBcDeFgHiJkLmNoPqRsTuVwXyZ+/AbCdEfGhIjKlMnOpQrSt==;EndpointSuffix=core.windows.net", "K3yK3yAbCdEfGh1JkLmNoPqRsTuVwXyZ0123456789aBcDeFgHiJkLmNoPqRsTuVwXyZ+/AbCdEfGhIjKlMnOpQrSt=="),
    ] {
        assert_eq!(secrets(text), vec![want], "{text}");
    }
    for text in [
        "max_tokens=4096",
        "the password is wrong: try again",
        "api_key = os.environ[\"OPENAI_API_KEY\"]",
        "token_expires_at: 2024-05-01T10:00:00Z",
        "hello aGVsbG8gd29ybGQsIHRoaXMgaXMganVzdCB0ZXh0 there",
    ] {
        assert_eq!(secrets(text), Vec::<&str>::new(), "{text}");
    }
}

/// What a cold review found: each input leaked or was masked wrongly before.
#[test]
fn review_findings_hold() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    // Keys whose random body holds a placeholder word, and passwords that look like
    // templates but are not.
    for (text, want) in [
        (
            "sk-proj-Ab3dyourEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGh",
            "sk-proj-Ab3dyourEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGh",
        ),
        ("password: $ecureP4ss!", "$ecureP4ss!"),
        ("password: Yourself#2024", "Yourself#2024"),
        ("DB_PASSWORD=\"Xk9;mQ2#vL\"", "Xk9;mQ2#vL"),
        (
            "postgres://admin:s3cr#tPa55@db.internal:5432/app",
            "admin:s3cr#tPa55",
        ),
        (
            "Authorization: Basic am9objpww6Rzc3dvcmQ",
            "am9objpww6Rzc3dvcmQ",
        ),
    ] {
        assert_eq!(secrets(text), vec![want], "{text}");
    }
    // An Azure AI services key in its 88-character form, and a storage key after `=`.
    let ai = format!(
        "{}JQQJ99{}AAABACOG{}==",
        "a1B2".repeat(13),
        "Q".repeat(14),
        "Zz9yXw"
    );
    assert_eq!(ai.len(), 88);
    assert_eq!(secrets(&format!("key1: {ai}")), vec![ai.as_str()]);
    let storage = format!("{}+ASt{}A==", "Ab3/".repeat(19), "Kq9+x");
    assert_eq!(storage.len(), 88);
    let t = format!("AZURE_STORAGE_KEY={storage}");
    assert_eq!(secrets(&t), vec![storage.as_str()]);
    // `base64` wraps at 76 columns: the lines are one run.
    let env = b64(&format!(
        "OPENAI_API_KEY=sk-proj-{}\nDEBUG=false\n",
        "Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGh".repeat(2)
    ));
    let wrapped: Vec<&str> = env
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let text = format!("data:\n  env: {}\n", wrapped.join("\n       "));
    let found = secrets(&text);
    assert_eq!(found.len(), 1, "{text}: {found:?}");
    assert!(found[0].ends_with(wrapped.last().unwrap()), "{found:?}");
    // Identifiers that are not credentials.
    for text in [
        r#"{"nextPageToken":"CiAKGjBpNDd2Nmp2Zml2cXRwYjBpOXA"}"#,
        r#"{"progressToken":"7f3c2a10-4b1e-4c7d-9a2b-1c2d3e4f5a6b"}"#,
        r#"{"token_endpoint":"https://oauth2.googleapis.com/token"}"#,
        r#"{"authority":"https://login.microsoftonline.com/72f988bf"}"#,
        "PWD=/home/user/project2",
        r#""tokenizer":"meta-llama/Llama-3.1-8B-Instruct""#,
    ] {
        assert_eq!(secrets(text), Vec::<&str>::new(), "{text}");
    }
}

proptest::proptest! {
    #[test]
    fn every_long_run_is_found_once(parts in proptest::collection::vec(
        (0usize..40, proptest::prop_oneof![
            proptest::strategy::Just(" "), proptest::strategy::Just("\n"),
            proptest::strategy::Just("é"), proptest::strategy::Just("\""),
        ]),
        0..30,
    ), offset in 0usize..16) {
        let mut text = "x".repeat(offset);
        for (n, sep) in &parts {
            text.push_str(&"aB3+/=_-.~".chars().cycle().take(*n).collect::<String>());
            text.push_str(sep);
        }
        let b = text.as_bytes();
        let mut want = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if is_run_char(b[i]) {
                let e = i + b[i..].iter().take_while(|&&c| is_run_char(c)).count();
                if e - i >= RUN_MIN {
                    want.push((i, e));
                }
                i = e;
            } else {
                i += 1;
            }
        }
        let mut got = Vec::new();
        for_each_run(b, |s, e| {
            got.push((s, e));
            e
        });
        proptest::prop_assert_eq!(got, want);
    }
}

/// What a second cold review found.
#[test]
fn second_review_findings_hold() {
    use base64::Engine as _;
    let long = "0.AVYA".to_string() + &"Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789-_".repeat(20);
    for (text, want) in [
        (format!(r#"{{"refresh_token":"{long}"}}"#), long.clone()),
        (format!("export AWS_SESSION_TOKEN={long}"), long.clone()),
        (
            "SECRET_KEY_BASE=".to_string() + &"9f8e7d6c5b4a3210".repeat(8),
            "9f8e7d6c5b4a3210".repeat(8),
        ),
        ("DB_PASSWORD_PROD=Xk9mQ2vLp7".into(), "Xk9mQ2vLp7".into()),
        ("password2: Hunter42!x".into(), "Hunter42!x".into()),
        (
            "CURSOR_API_KEY=key_8f3a9c2e7b1d44e0a9c7".into(),
            "key_8f3a9c2e7b1d44e0a9c7".into(),
        ),
        ("DB_PASSWORD=$ummer2024".into(), "$ummer2024".into()),
        ("password: Welcome1(2024)".into(), "Welcome1(2024".into()),
    ] {
        assert_eq!(secrets(&text), vec![want.as_str()], "{text}");
    }
    // Glued without a separator to a long-prefix token, in both orders.
    let ghp = "ghp_1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R";
    let hf = "hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh";
    assert_eq!(secrets(&format!("x {ghp}{hf} y")), vec![ghp, hf]);
    assert_eq!(secrets(&format!("x {hf}{ghp} y")), vec![hf, ghp]);
    // A wrapped base64 block whose last line is full, then a word on the next line.
    let plain = format!(
        "# production settings for the api\nOPENAI_API_KEY=sk-proj-{}\n",
        "Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789".repeat(4)
    );
    let mut plain = plain.into_bytes();
    while plain.len() % 57 != 0 {
        plain.push(b'#');
    }
    let enc = base64::engine::general_purpose::STANDARD.encode(&plain);
    let lines: Vec<&str> = enc
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let text = format!("base64 -d <<EOF\n{}\nEOF\n", lines.join("\n"));
    let found = secrets(&text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with(lines[0]) && found[0].ends_with(lines[lines.len() - 1]));
    // A key with an invisible character inside it.
    let e = crate::redact::Engine::new();
    let t = "key ghp_1a\u{200B}2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R end";
    let out = e.redact_text(t, crate::redact::Scan::ALL, &mut Default::default());
    assert_eq!(out.as_deref(), Some("key [REDACTED_SECRET] end"));
    // Not secrets: a port before a path's `@`, a sentence under a secret's name.
    for text in [
        "http://localhost:3000/@vite/client",
        r#"{"password":"Password must be at least 8 characters"}"#,
        r#"{"token":"Enter your 6-digit code"}"#,
        r#"{"pageToken":"CiAKGjBpNDd2Nmp2"}"#,
    ] {
        assert_eq!(secrets(text), Vec::<&str>::new(), "{text}");
    }
}

#[test]
fn hard_negatives_survive() {
    let sha =
        "git 3f786850e387550fdab836ed7e6dc881de23001b and 9fceb02d0ae598e95dc970b74767f19372d61af8";
    let image = format!(
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg{}AKIAWBOBYXE3TVGJGRWAeyJhbGciOiJIUzI1NiJ9sk-proj-Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789",
        "x".repeat(10)
    );
    for text in [
        "I use sk-learn for machine learning",
        "sk-learn-is-a-python-library-for-machine-learning-in-python",
        "id sk-550e8400-e29b-41d4-a716-446655440000-0123456789",
        "uuid 550e8400-e29b-41d4-a716-446655440000",
        sha,
        &image,
        "after AKIAWBOBYXE3TVGJGRWA the commit 3f786850e387550fdab836ed7e6dc881de23001b",
        "AKIA is an acronym; ASIA is a continent; ASIANS; SKIING",
        "see https://example.com:8080/path?q=1 and mailto:bob@example.com",
        "ftp://anonymous@ftp.example.com/pub",
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUY\n-----END CERTIFICATE-----",
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYI\n-----END PUBLIC KEY-----",
        "eyJ is how base64 of {\" starts; eyJub3QiOiJhIGp3dCJ9.x lacks alg",
        "SKU SK-1234 TASK SG.1 xoxo-gossip npm_install",
        "[REDACTED_SECRET] stays as it is",
    ] {
        let found = secrets(text);
        // The AWS id in the mixed line is real; only it may be found there.
        let allowed: &[&str] = if text.starts_with("after AKIA") {
            &["AKIAWBOBYXE3TVGJGRWA"]
        } else {
            &[]
        };
        assert_eq!(found, allowed, "{text}");
    }
}
