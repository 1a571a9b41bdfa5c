//! The PII recognizers' tests: examples, property tests against the regex oracles, and the
//! shortcuts that must change nothing.

use super::*;

fn red(t: &str) -> String {
    let p = Patterns::new();
    let mut c = Counts::default();
    redact(&p, t, Scan::ALL, &mut c).unwrap_or_else(|| t.to_string())
}

#[test]
fn positives() {
    for (input, token) in [
        ("mail jane.doe+x@example.co.uk now", "[REDACTED_EMAIL]"),
        ("ssn 123-45-6789.", "[REDACTED_SSN]"),
        ("ssn 123 45 6789", "[REDACTED_SSN]"),
        ("my SSN is 123456789", "[REDACTED_SSN]"),
        ("call (415) 555-0123", "[REDACTED_PHONE]"),
        ("call 415-555-0123", "[REDACTED_PHONE]"),
        ("call 415.555.0123", "[REDACTED_PHONE]"),
        ("call 415 555 0123", "[REDACTED_PHONE]"),
        ("call +1 415 555 0123", "[REDACTED_PHONE]"),
        ("call 1-415-555-0123", "[REDACTED_PHONE]"),
        ("call +44 20 7946 0958", "[REDACTED_PHONE]"),
        ("call +33 1 23 45 67 89", "[REDACTED_PHONE]"),
        ("call +81-3-1234-5678", "[REDACTED_PHONE]"),
        ("call +14155550123", "[REDACTED_PHONE]"),
        ("card 4111111111111111", "[REDACTED_CARD]"),
        ("card 4111 1111 1111 1111", "[REDACTED_CARD]"),
        ("card 4111-1111-1111-1111", "[REDACTED_CARD]"),
        ("amex 3782 822463 10005", "[REDACTED_CARD]"),
        ("mc 5555555555554444", "[REDACTED_CARD]"),
        ("card 4111 1111 1111 1111 123", "[REDACTED_CARD]"),
    ] {
        let out = red(input);
        assert!(out.contains(token), "{input} -> {out}");
    }
    assert_eq!(
        red("card 4111 1111 1111 1111 123"),
        "card [REDACTED_CARD] 123"
    );
}

#[test]
fn numbers_running_into_an_email_are_still_found() {
    // Found by the fuzzer: a digit run touching an address hid the SSN before it.
    assert_eq!(
        red("55511 1161 11111 111 11 1111 2-11eaila@b.co"),
        "55511 1161 11111 [REDACTED_SSN] [REDACTED_EMAIL]"
    );
}

#[test]
fn a_parenthesised_phone_right_after_a_word_is_found() {
    // Found by the fuzzer: "b.co(415) 220-0123" kept the phone on the first pass only.
    let once = red("a@b.co(415) 220-0123");
    assert_eq!(once, "[REDACTED_EMAIL][REDACTED_PHONE]");
    assert_eq!(red(&once), once);
}

#[test]
fn next_digit_finds_every_digit_and_nothing_else() {
    let all: Vec<u8> = (0u8..=255).collect();
    for start in 0..all.len() {
        let want = all[start..]
            .iter()
            .position(u8::is_ascii_digit)
            .map(|k| start + k);
        assert_eq!(next_digit(&all, start), want, "from {start}");
    }
    let text = b"no digits here at all, none!!\xff\x80/:@`";
    assert_eq!(next_digit(text, 0), None);
    assert_eq!(next_digit(b"abcdefghij9", 0), Some(10));
    assert_eq!(next_digit(b"abcdefgh", 8), None);
}

#[test]
fn own_tokens_are_not_context() {
    // Found by the fuzzer: the SSN token made a later 9-digit run look like an SSN.
    let once = red("mail 111 11 1111 1'333333539 cc78");
    assert_eq!(once, "mail [REDACTED_SSN] 1'333333539 cc78");
    assert_eq!(red(&once), once);
}

#[test]
fn negatives_are_left_alone() {
    for input in [
        "order 123456789 shipped",
        "ssn 000-12-3456 666-12-3456 912-12-3456 123-00-4567 123-45-0000",
        "on 2024-01-15 at 10:30:00Z",
        "id 550e8400-e29b-41d4-a716-446655440000",
        "host 192.168.100.200 and 10.0.0.1",
        "version 1.2.3 and v10.20.300",
        "price $1,234.56 or 1234.5678",
        "card 4111 1111 1111 1112",
        "number 1234567890123456",
        "bad area (123) 555-0123 and 415-155-0123",
        "a@b and @mention and user@localhost",
        "ts 1700000000123",
        "1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6",
    ] {
        assert_eq!(red(input), input);
    }
}

#[cfg(test)]
mod ssn_context {
    use super::*;

    #[test]
    fn every_word_in_any_case_within_the_window_and_not_our_own_marker() {
        for w in SSN_CONTEXT {
            for word in [w.to_string(), w.to_ascii_uppercase()] {
                let t = format!("{word}: 123456789");
                let s = t.len() - 9;
                assert!(has_ssn_context(t.as_bytes(), s), "{t}");
                // Wholly within the window: the word's last byte 40 bytes before is out.
                let far = format!("{word}{} 123456789", " ".repeat(SSN_CONTEXT_WINDOW));
                assert!(!has_ssn_context(far.as_bytes(), far.len() - 9), "{far}");
                let edge = format!(
                    "{word}{} 123456789",
                    " ".repeat(SSN_CONTEXT_WINDOW - word.len() - 1)
                );
                assert!(has_ssn_context(edge.as_bytes(), edge.len() - 9), "{edge}");
            }
        }
        // sluice's own marker is no context, but another word next to it is.
        let own = "[REDACTED_SSN] 123456789";
        assert!(!has_ssn_context(own.as_bytes(), own.len() - 9));
        let both = "ssn [REDACTED_SSN] 123456789";
        assert!(has_ssn_context(both.as_bytes(), both.len() - 9));
        let none = "order number 123456789";
        assert!(!has_ssn_context(none.as_bytes(), none.len() - 9));
    }
}

#[cfg(test)]
mod anchored {
    use super::*;
    use proptest::prelude::*;

    /// The first match of anchored searches at each position that can start one, as
    /// `numbers_in` searches.
    fn first_anchored(p: &Patterns, b: &[u8]) -> Option<(usize, usize, usize)> {
        (0..b.len())
            .filter(|&i| b[i].is_ascii_digit() || b[i] == b'(' || b[i] == b'+')
            .find_map(|i| {
                p.numbers_fallback
                    .search(&Input::new(b).range(i..).anchored(Anchored::Yes))
            })
            .map(|m| (m.start(), m.end(), m.pattern().as_usize()))
    }

    fn patterns() -> &'static Patterns {
        static P: std::sync::OnceLock<Patterns> = std::sync::OnceLock::new();
        P.get_or_init(Patterns::new)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// Anchored searches in turn find exactly the unanchored leftmost-first match, on
        /// digit groups and separators (phones, cards, SSNs and near misses) with words between.
        #[test]
        fn anchored_iteration_finds_the_leftmost_match(
            s in "(([a-z]{0,2}[ (+]?)?([0-9]{1,4}[ .()+-]?){0,8}){0,3}"
        ) {
            let p = patterns();
            let b = s.as_bytes();
            let unanchored = p
                .numbers_fallback
                .search(&Input::new(b))
                .map(|m| (m.start(), m.end(), m.pattern().as_usize()));
            prop_assert_eq!(first_anchored(p, b), unanchored);
        }
    }
}

#[cfg(test)]
mod skip_glued {
    use super::*;
    use proptest::prelude::*;

    fn both() -> &'static (Patterns, Patterns) {
        static P: std::sync::OnceLock<(Patterns, Patterns)> = std::sync::OnceLock::new();
        P.get_or_init(|| {
            let mut every_position = Patterns::new();
            every_position.skip_glued = false;
            (Patterns::new(), every_position)
        })
    }

    fn found(p: &Patterns, s: &str) -> Vec<(usize, usize, Entity)> {
        let mut out = Vec::new();
        p.find(s, Scan::ALL, &mut out);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// Skipping the positions where every candidate would be refused as glued finds the
        /// same entities as searching at every position: digit groups, separators, words,
        /// emails whose local part starts with digits, SSN context.
        #[test]
        fn skipping_glued_positions_finds_the_same(
            s in "(([a-z]{0,3}|ssn |x@y\\.io|[0-9]{1,3}@ab\\.com)[ (+]?([0-9]{1,4}[ .()+-]?){0,8}){0,4}"
        ) {
            let (fast, every) = both();
            prop_assert_eq!(found(fast, &s), found(every, &s));
        }
    }

    #[test]
    fn known_shapes_are_the_same() {
        let (fast, every) = both();
        for s in [
            "4111 1111 1111 1111",
            "x4111 1111 1111 1111 415-555-0123",
            "1+415-555-0123 +1 415 555 0123",
            "12345678901234567890123 ssn 123456789",
            "0123456789@example.com 415-555-0123@example.com",
            "(415) 555-0123 a(415) 555-0123 +44 20 7946 0958",
        ] {
            assert_eq!(found(fast, s), found(every, s), "{s}");
            assert!(!found(fast, s).is_empty(), "{s}");
        }
    }
}

#[cfg(test)]
mod settled {
    use super::*;
    use proptest::prelude::*;

    fn patterns() -> &'static Patterns {
        static P: std::sync::OnceLock<Patterns> = std::sync::OnceLock::new();
        P.get_or_init(Patterns::new)
    }

    /// Pieces that interact across a replacement: PII next to digits, words and separators,
    /// SSN context near and far, emails with digit local parts, secret anchors, tokens.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            1 => "[0-9]{1,4}",
            3 => "[ .()+,:-]|  | - ",
            1 => "[a-z_]{1,3}|é|ssn |ssn: |social security |order |secret_access_key=",
            1 => Just("lorem ipsum dolor sit amet, consectetur adipiscing elit ".to_string()),
            4 => prop::sample::select(vec![
                "4111 1111 1111 1111",
                "4111111111111111",
                "5500 0000 0000 0004",
                "123-45-6789",
                "123456789",
                "(415) 555-0123",
                "415-555-0123",
                "+1 415 555 0123",
                "+44 20 7946 0958",
                "jane.doe@example.com",
                "a.very.long.local.part.for.testing@subdomain.example-domain.com",
                "0123@ab.io",
                "x@ex.com",
                "sk-Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789",
                "AKIAWBOBYXE3TVGJGRWA",
                "tlhVGhXvNLWOBA5wqY2EFoj4J1oKzwZR5l817Uq4",
                "https://user:pass@host.example/",
                "[REDACTED_SSN]",
            ])
            .prop_map(str::to_string),
        ]
    }

    fn both(s: &str, scan: Scan) -> ((Option<String>, Counts), (Option<String>, Counts)) {
        let p = patterns();
        let (mut fast, mut every) = (Counts::default(), Counts::default());
        let a = passes(p, "", s, scan, &mut fast, true);
        let b = passes(p, "", s, scan, &mut every, false);
        ((a, fast), (b, every))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(6000))]
        /// Stopping after a pass that saw nothing a replacement could change gives exactly
        /// the text and counts of searching again until a pass finds nothing.
        #[test]
        fn a_settled_pass_is_final(pieces in prop::collection::vec(piece(), 0..16)) {
            let s = pieces.concat();
            for scan in [Scan::ALL, Scan::PII] {
                let ((a, ca), (b, cb)) = both(&s, scan);
                prop_assert_eq!(&a, &b);
                prop_assert_eq!(ca, cb);
            }
        }
    }

    /// Cases where a second pass finds more: each must still be searched again.
    #[test]
    fn unsettled_cases_are_searched_again() {
        for s in [
            // A refused 25-digit run hid the SSN before the card.
            "ssn 123456789 4111 1111 1111 1111",
            // The context word comes within reach once the email before it is a token.
            "ssn jane.doe.with.a.very.long.address@example-domain.com 123456789",
            // A phone glued to a word.
            "a(415) 555-0123",
        ] {
            let ((a, _), (b, _)) = both(s, Scan::ALL);
            assert_eq!(a, b, "{s}");
        }
        let p = patterns();
        let mut c = Counts::default();
        let once = replace_once(
            p,
            "",
            "ssn 123456789 4111 1111 1111 1111",
            Scan::ALL,
            &mut c,
        );
        assert!(once.is_some_and(|(_, unsettled)| unsettled));
        let once = replace_once(
            p,
            "",
            "Call (415) 555-0123, or mail x@ex.com.",
            Scan::ALL,
            &mut c,
        );
        assert!(once.is_some_and(|(_, unsettled)| !unsettled));
        // The dense benchmark's sentence: one pass.
        let dense = "Contact jane.doe@example.com or (415) 555-0123. SSN 123-45-6789, card 4111 \
                     1111 1111 1111. Also +44 20 7946 0958 and bob_smith+x@mail.example.co.uk \
                     about order 987654321. ";
        let once = replace_once(p, "", dense, Scan::ALL, &mut c);
        assert!(once.is_some_and(|(_, unsettled)| !unsettled));
    }
}

#[cfg(test)]
mod email_scan {
    use super::*;
    use proptest::prelude::*;

    fn patterns() -> &'static Patterns {
        static P: std::sync::OnceLock<Patterns> = std::sync::OnceLock::new();
        P.get_or_init(Patterns::new)
    }

    fn by_regex(s: &str) -> Vec<(usize, usize, Entity)> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        for m in patterns().email.find_iter(b) {
            let (s, e) = trim_email(b, m.start(), m.end());
            if s < e {
                out.push((s, e, Entity::Email));
            }
        }
        out
    }

    fn by_scan(s: &str) -> Vec<(usize, usize, Entity)> {
        let mut out = Vec::new();
        emails(s.as_bytes(), &mut out);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8000))]
        /// The scan finds exactly the regex's matches: local parts, '@'s, labels with
        /// hyphens and digits, dots, top-level domains of every length, word characters and
        /// non-ASCII after them.
        #[test]
        fn the_scan_finds_what_the_regex_finds(
            s in "([a-c0-9_%+.-]{0,4}@{0,2}([a-zA-Z0-9-]{0,5}\\.?){0,4}[a-z]{0,3}( |é|_|\\.|-)?){0,5}"
        ) {
            prop_assert_eq!(by_scan(&s), by_regex(&s));
        }

        /// Long top-level domains: 24 letters fit, 25 do not.
        #[test]
        fn long_top_level_domains(n in 1usize..30, tail in "[ 0-9_.-]?") {
            let s = format!("x@ex.{}{tail}", "a".repeat(n));
            prop_assert_eq!(by_scan(&s), by_regex(&s));
        }
    }

    #[test]
    fn known_addresses() {
        for s in [
            "jane.doe@example.com",
            "mail bob_smith+x@mail.example.co.uk now",
            "a@ex.com-foo",
            "a@ex.com.b@ex.com",
            "x@ex.c0m y@ex.io",
            "--x@ex-.com z@e-x.org.",
            "@@a@@b.cd",
        ] {
            assert_eq!(by_scan(s), by_regex(s), "{s}");
        }
        assert_eq!(by_scan("mail bob_smith+x@mail.example.co.uk now").len(), 1);
    }
}

#[cfg(test)]
mod number_scan {
    use super::*;
    use proptest::prelude::*;

    fn patterns() -> &'static Patterns {
        static P: std::sync::OnceLock<Patterns> = std::sync::OnceLock::new();
        P.get_or_init(Patterns::new)
    }

    /// Every (start, range end) pair of `b`: the scanner and the regex, anchored there.
    fn compare(b: &[u8]) -> Result<(), TestCaseError> {
        let p = patterns();
        for start in 0..b.len() {
            for end in start + 1..=b.len() {
                let input = Input::new(b).range(start..end).anchored(Anchored::Yes);
                let regex = p
                    .numbers_fallback
                    .search(&input)
                    .map(|m| (m.pattern().as_usize(), m.end()));
                prop_assert_eq!(number_at(b, start, end), regex, "at {}..{}", start, end);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// The scanner finds what the regex finds at every start and range end: digit groups
        /// with every separator, parentheses, '+', country codes, words and '_' around them.
        #[test]
        fn the_scan_matches_what_the_regex_matches(
            s in "([a_]?[ (+]?1?(([0-9]{1,4}|\\([0-9]{1,5}\\))[ .()+-]{0,2}){0,6}[a_]?){1,2}"
        ) {
            compare(s.as_bytes())?;
        }

        /// Long runs: cards and E.164 numbers at and past their unit bounds.
        #[test]
        fn long_runs(sep in "[ .-]?", n in 8usize..24, plus in any::<bool>(), tail in "[a_ )]?") {
            let digits: Vec<String> = (0..n).map(|i| ((i * 7 + 3) % 10).to_string()).collect();
            let s = format!("{}{}{tail}", if plus { "+" } else { "" }, digits.join(&sep));
            compare(s.as_bytes())?;
        }
    }

    #[test]
    fn known_shapes() {
        for s in [
            "123-45-6789",
            "(415) 555-0123",
            "+1 (415) 555-0123",
            "1-415-555-0123",
            "+44 20 7946 0958",
            "+49 (30) 1234-5678",
            "+49 (1234) 5678 90",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111-1111-1111",
            "123456789",
            "_123456789",
        ] {
            compare(s.as_bytes()).unwrap();
            assert!(
                number_at(s.as_bytes(), 0, s.len()).is_some() || s.starts_with('_'),
                "{s}"
            );
        }
    }
}

#[cfg(test)]
mod checks {
    use super::*;
    use proptest::prelude::*;

    /// Luhn as its definition reads: from the right, every second digit doubled, 9 subtracted
    /// when that is above 9.
    fn luhn_by_definition(d: &[u8]) -> bool {
        let sum: u32 = d
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &x)| match (i % 2, x as u32 * 2) {
                (1, y) if y > 9 => y - 9,
                (1, y) => y,
                _ => x as u32,
            })
            .sum();
        sum.is_multiple_of(10)
    }

    #[test]
    fn luhn_known_numbers() {
        for (n, ok) in [
            ("4111111111111111", true),
            ("4111111111111112", false),
            ("378282246310005", true),
            ("79927398713", true),
            ("79927398710", false),
            ("0", true),
        ] {
            let d: Vec<u8> = n.bytes().map(|c| c - b'0').collect();
            assert_eq!(luhn(&d), ok, "{n}");
        }
    }

    #[test]
    fn ssn_shapes() {
        for (s, ok) in [
            ("123456789", true),
            ("123-45-6789", true),
            ("123 45 6789", true),
            ("000-45-6789", false),
            ("666456789", false),
            ("900-45-6789", false),
            ("123-00-6789", false),
            ("123450000", false),
            ("12-345-6789", true),
            ("1234567890", false),
            ("12345678", false),
        ] {
            assert_eq!(valid_ssn(s.as_bytes()), ok, "{s}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]
        #[test]
        fn luhn_matches_its_definition(d in proptest::collection::vec(0u8..10, 0..20)) {
            prop_assert_eq!(luhn(&d), luhn_by_definition(&d));
        }

        /// The in-place reading of the two candidate shapes agrees with collecting the digits,
        /// on those shapes, near misses and any other span.
        #[test]
        fn ssn_shapes_match_collecting_digits(
            s in "[0-9]{9}|[0-9]{3}[- .a0-9][0-9]{2}[- .a0-9][0-9]{4}|[0-9 -]{0,12}"
        ) {
            let b = s.as_bytes();
            prop_assert_eq!(valid_ssn(b), valid_ssn_digits(b), "{}", s);
        }
    }
}

#[test]
fn json_string_escapes_are_read_as_the_characters_they_stand_for() {
    // JSON held in a string (tool-call arguments, a document), as a client decodes it.
    for (input, want) in [
        (
            r#"{\"to\":\"jane\u0040example.com\"}"#,
            r#"{\"to\":\"[REDACTED_EMAIL]\"}"#,
        ),
        (r"card \u0034111 1111 1111 1111.", "card [REDACTED_CARD]."),
        (r"\ud835\udfd2111 1111 1111 1111", "[REDACTED_CARD]"),
        (
            r"no escape here: \n \t \\ \u12",
            r"no escape here: \n \t \\ \u12",
        ),
    ] {
        assert_eq!(red(input), want, "{input}");
    }
    // A URL's credentials with its slashes escaped, as the same URL written plainly.
    let plain = red("db https://admin:hunter2@db.example.com/x");
    let escaped = red(r"db https:\/\/admin:hunter2@db.example.com\/x");
    assert!(!escaped.contains("hunter2"), "{escaped}");
    assert_eq!(escaped.replace(r"\/", "/"), plain);
}
