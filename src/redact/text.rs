//! Finding PII in text: candidates from two patterns written as regexes ([`EMAIL_PATTERN`],
//! and [`NUMBER_PATTERNS`] for digit-shaped entities, searched only in clusters of digits),
//! then validation in code (Luhn and issuer prefixes for cards, SSA rules and context for
//! SSNs, NANP and E.164 digit counts for phones). The patterns are matched by hand-written
//! scanners ([`emails`], [`number_at`]) that find exactly what the regexes find (property
//! tests compare them with `regex-automata` on generated text); every scanner is bounded, so
//! time stays linear in the input, whatever the input.

#[cfg(test)]
use regex_automata::meta::Regex;
#[cfg(test)]
use regex_automata::util::syntax;
#[cfg(test)]
use regex_automata::{Anchored, Input};

use super::{fold, secret, Counts, Entity, Scan};

/// Compiled patterns. Build once ([`super::Engine::new`]) and share.
pub struct Patterns {
    /// The email regex [`emails`] implements, kept as the oracle of its property test.
    #[cfg(test)]
    email: Regex,
    /// The digit-shaped patterns as a regex: [`number_at`]'s oracle in its property test.
    #[cfg(test)]
    numbers_fallback: Regex,
    secrets: secret::Rules,
    /// [`may_start`]'s shortcut, always on outside the test that checks it changes nothing.
    skip_glued: bool,
}

// Pattern ids in `numbers`, in priority order (leftmost-first between equal starts). The
// exact shapes (SSN, phones) come before the card's loose digit run, so a phone followed by a
// card is read as a phone and then a card, not as one long rejected digit run.
const SSN_GROUPED: usize = 0;
const PHONE_US: usize = 1;
const PHONE_E164: usize = 2;
const CARD: usize = 3;
const NINE_DIGITS: usize = 4;

/// The digit-shaped patterns, as regexes: what [`number_at`] matches (and its oracle).
#[cfg(test)]
const NUMBER_PATTERNS: &[&str] = &[
    r"\b[0-9]{3}[- ][0-9]{2}[- ][0-9]{4}\b",
    r"(?:\+?1[ .-]?)?(?:\([0-9]{3}\)[ ]?|\b[0-9]{3}[ .-])[0-9]{3}[ .-][0-9]{4}\b",
    r"\+[1-9](?:[ .-]?(?:\([0-9]{1,4}\)|[0-9])){6,16}\b",
    r"\b[0-9](?:[ -]?[0-9]){12,18}\b",
    r"\b[0-9]{9}\b",
];

/// The email pattern, as a regex: [`emails`] finds what it finds (the property test's oracle).
#[cfg(test)]
const EMAIL_PATTERN: &str = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}\b";

/// Words that make a plain 9-digit number an SSN when they appear shortly before it.
const SSN_CONTEXT: &[&str] = &[
    "ssn",
    "social security",
    // JSON keys and identifiers: "social_security_number", "socialSecurityNumber".
    "social_security",
    "social-security",
    "socialsecurity",
    "social sec",
    "soc sec",
    "soc. sec",
    "ss#",
    "ss #",
    "ss no",
    "ss num",
];
const SSN_CONTEXT_WINDOW: usize = 40;

impl Patterns {
    pub fn new() -> Patterns {
        #[cfg(test)]
        let build = |pats: &[&str]| {
            // ASCII-only classes and word boundaries, as the scanners read them.
            let syn = syntax::Config::new().unicode(false).utf8(false);
            Regex::builder()
                .syntax(syn)
                .build_many(pats)
                .expect("the built-in PII patterns compile (checked by unit tests)")
        };
        Patterns {
            #[cfg(test)]
            email: build(&[EMAIL_PATTERN]),
            #[cfg(test)]
            numbers_fallback: build(NUMBER_PATTERNS),
            secrets: secret::Rules::new(),
            skip_glued: true,
        }
    }

    /// Whether `text` ends inside a value assigned to a secret's name (see
    /// `secret::Rules::open_assignment`).
    pub fn open_assignment(&self, text: &[u8]) -> bool {
        self.secrets.open_assignment(text)
    }

    /// The validated matches of what `scan` asks for in `text`, in order (by start, the
    /// longest first); overlapping ones are resolved by the replacement (the first wins).
    pub fn find(&self, text: &str, scan: Scan, out: &mut Vec<(usize, usize, Entity)>) {
        self.find_in(text, scan, out);
    }

    /// [`Patterns::find`], and whether replacing the matches could let a search of the output
    /// find more: a secret anchor was seen (secret rules look far around their anchor), a
    /// digit-shaped candidate was refused where a later match overlaps it (without the match
    /// a shorter candidate could fit), or a 9-digit number was refused for want of SSN
    /// context within reach of a match (a replacement changes what comes before it).
    ///
    /// Text that folds to something else ([`fold`]) is searched folded, and the matches are
    /// mapped back to the original spans they cover; secrets are also searched in the text
    /// as written (a key's characters are ASCII, and an escape inside a URL's password must
    /// not end it). A replacement there can always change what follows: searched again.
    fn find_in(&self, text: &str, scan: Scan, out: &mut Vec<(usize, usize, Entity)>) -> bool {
        let Some(f) = fold::fold(text) else {
            return self.find_plain(text, scan, out);
        };
        let mut folded = Vec::new();
        self.find_plain(&f.text, scan, &mut folded);
        out.extend(folded.into_iter().map(|(s, e, entity)| {
            let (a, z) = f.span(s, e);
            (a, z, entity)
        }));
        if scan.secrets {
            self.secrets.find(text, out);
            // A key with an invisible character inside (`ghp_1a\u{200B}2B...`): read with the
            // character removed, not as a digit group's `-`.
            if let Some(g) = f.dashed.then(|| fold::fold_with(text, false)).flatten() {
                let mut keys = Vec::new();
                self.secrets.find(&g.text, &mut keys);
                out.extend(keys.into_iter().map(|(s, e, entity)| {
                    let (a, z) = g.span(s, e);
                    (a, z, entity)
                }));
            }
        }
        out.sort_by_key(|&(s, e, _)| (s, std::cmp::Reverse(e)));
        true
    }

    /// [`Patterns::find_in`] on text as it is.
    fn find_plain(&self, text: &str, scan: Scan, out: &mut Vec<(usize, usize, Entity)>) -> bool {
        let mut unsettled = false;
        if scan.pii {
            unsettled |= self.find_pii(text, out);
        }
        if scan.secrets {
            unsettled |= self.secrets.find(text, out);
        }
        if out.len() > 1 {
            // Emails, numbers and secrets each come out in order: a stable (run-merging) sort
            // merges the runs in linear time where an unstable one sorts from scratch.
            out.sort_by_key(|&(s, e, _)| (s, std::cmp::Reverse(e)));
        }
        unsettled
    }

    /// Emails and digit-shaped entities; `true` when a replacement could change what a
    /// later search finds (see [`Patterns::find_in`]).
    fn find_pii(&self, text: &str, out: &mut Vec<(usize, usize, Entity)>) -> bool {
        let bytes = text.as_bytes();
        emails(bytes, out);
        let emails = out.len();
        // Every digit-shaped entity is a run of at least 8 digits (E.164, with its '+') or 9
        // digits (SSN, US phone, card) mixed only with separators (space - . ( ) +). Find such
        // clusters with a cheap byte scan and run the regex on them alone, so prose with short
        // numbers (years, prices, versions) never reaches the regex.
        let mut search = Search {
            emails,
            next_email: 0,
            skip_glued: self.skip_glued,
            refused_end: 0,
            found_end: 0,
            unsettled: false,
        };
        let mut i = 0;
        let n = bytes.len();
        while i < n {
            // Skip to the next digit.
            match next_digit(bytes, i) {
                Some(k) => i = k,
                None => break,
            }
            // Extend back over separators (a leading '(' or '+') and forward over the cluster.
            let mut start = i;
            while start > 0 && matches!(bytes[start - 1], b'(' | b'+') {
                start -= 1;
            }
            let mut end = i;
            let mut count = 0;
            while let Some(&c) = bytes.get(end) {
                let class = CLUSTER[c as usize];
                if class == 0 {
                    break;
                }
                count += usize::from(class & 1);
                end += 1;
            }
            if count >= 8 {
                self.numbers_in(&mut search, bytes, start, end, out);
            }
            i = end.max(i + 1);
        }
        search.unsettled
    }

    /// Digit-shaped entities starting in `at..end`. Not find_iter: a rejected or shortened
    /// candidate resumes the search inside it, so "4111 1111 1111 1112 415-555-0123" still
    /// finds the phone, and the part of a candidate before a card found inside it is searched
    /// on its own. Every pattern is bounded in length, so this costs a bounded factor at worst.
    fn numbers_in(
        &self,
        search: &mut Search,
        bytes: &[u8],
        mut at: usize,
        end: usize,
        out: &mut Vec<(usize, usize, Entity)>,
    ) {
        let emails = search.emails;
        while at < end {
            // Every pattern starts with a digit, '(' or '+'. An anchored search at each such
            // position in turn finds the same leftmost-first match as an unanchored search
            // from `at` (the first position where one starts), without the reverse pass an
            // unanchored search needs to find where its match starts.
            let Some(p) = (at..end).find(|&i| may_start(bytes, i, search.skip_glued)) else {
                break;
            };
            let Some((pattern, e)) = number_at(bytes, p, end) else {
                at = p + 1;
                continue;
            };
            // Emails are sorted and disjoint, and candidates come in order of their start:
            // the first email that ends after this candidate's start only moves forward.
            let ix = &mut search.next_email;
            while *ix < emails && out[*ix].1 <= p {
                *ix += 1;
            }
            let covered = out[..emails]
                .get(*ix)
                .filter(|&&(s, _, _)| s < e)
                .map(|&(s, e, _)| (s, e));
            if let Some((es, ee)) = covered {
                // The candidate runs into an email address (whose local part can start with
                // digits): search the part before the address on its own, then skip it.
                if es > p {
                    self.numbers_in(search, bytes, p, es, out);
                }
                at = ee.max(p + 1);
                continue;
            }
            match classify(bytes, pattern, p, e) {
                Ok(found) => {
                    if found.0 > p {
                        self.numbers_in(search, bytes, p, found.0, out);
                    }
                    // A refused candidate that reaches into this match: once the match is
                    // replaced, a shorter candidate there may fit.
                    search.unsettled |= found.0 < search.refused_end;
                    search.found_end = search.found_end.max(found.1);
                    at = found.1;
                    out.push(found);
                }
                Err(Refused { wants_context }) => {
                    search.refused_end = search.refused_end.max(e);
                    if wants_context {
                        // Refused for want of context: a replacement within the context
                        // window before it changes what the window holds.
                        let before = search
                            .found_end
                            .max(out[..search.next_email].last().map_or(0, |&(_, e, _)| e));
                        search.unsettled |= before > 0 && p < before + SSN_CONTEXT_WINDOW;
                    }
                    at = p + 1;
                }
            }
        }
    }
}

/// The state of one text's search for digit-shaped entities.
struct Search {
    /// How many of the found matches (at the front) are emails.
    emails: usize,
    /// The first email that may still overlap a candidate (candidates come in order).
    next_email: usize,
    /// Skip positions where any match would be refused as glued to what precedes it.
    skip_glued: bool,
    /// The furthest end of a refused candidate.
    refused_end: usize,
    /// The furthest end of a digit-shaped match.
    found_end: usize,
    /// A replacement could change what a search of the output finds.
    unsettled: bool,
}

/// The match of [`NUMBER_PATTERNS`] anchored at `p` and ending by `end`, as the regex finds
/// it (leftmost-first: the first pattern that matches, each with its greedy preference;
/// `\b` reads the bytes around the range too): `(pattern, match end)`.
///
/// Each pattern is a short fixed sequence or a run of units (`[ -]?[0-9]` for the card, an
/// optional separator and a digit or a parenthesised group for E.164) whose next unit is
/// decided by the next byte alone, so the greedy match is the longest run of units (within
/// the pattern's bound) after which the word boundary holds.
fn number_at(b: &[u8], p: usize, end: usize) -> Option<(usize, usize)> {
    let word = |i: usize| {
        b.get(i)
            .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_')
    };
    let boundary = |i: usize| (i > 0 && word(i - 1)) != word(i);
    let digit = |i: usize| i < end && b[i].is_ascii_digit();
    let digits = |i: usize, n: usize| (i..i + n).all(digit);
    // The separator sets, as comparisons (a slice's `contains` is a call per byte).
    let sep = |i: usize| i < end && matches!(b[i], b' ' | b'.' | b'-');
    let space_or_dash = |i: usize| i < end && matches!(b[i], b' ' | b'-');
    let is = |i: usize, c: u8| i < end && b[i] == c;
    // The digits at `p`: each pattern needs a run of an exact length or a digit there.
    let run = b[p..end.min(p + 10)]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    // The longest of the unit run's ends (at least `min` units) followed by a boundary.
    let longest = |ends: &[usize], min: usize| {
        ends.iter()
            .enumerate()
            .rev()
            .find(|&(k, &e)| k + 1 >= min && boundary(e))
            .map(|(_, &e)| e)
    };

    // SSN_GROUPED: \b[0-9]{3}[- ][0-9]{2}[- ][0-9]{4}\b
    if run == 3
        && boundary(p)
        && space_or_dash(p + 3)
        && digits(p + 4, 2)
        && space_or_dash(p + 6)
        && digits(p + 7, 4)
        && boundary(p + 11)
    {
        return Some((SSN_GROUPED, p + 11));
    }

    // PHONE_US: (?:\+?1[ .-]?)?(?:\([0-9]{3}\)[ ]?|\b[0-9]{3}[ .-])[0-9]{3}[ .-][0-9]{4}\b
    let tail = |t: usize| {
        (digits(t, 3) && sep(t + 3) && digits(t + 4, 4) && boundary(t + 8)).then_some(t + 8)
    };
    let national = |r: usize| {
        if is(r, b'(') && digits(r + 1, 3) && is(r + 4, b')') {
            let t = r + 5;
            if is(t, b' ') {
                if let Some(e) = tail(t + 1) {
                    return Some(e);
                }
            }
            if let Some(e) = tail(t) {
                return Some(e);
            }
        }
        if boundary(r) && digits(r, 3) && sep(r + 3) {
            return tail(r + 4);
        }
        None
    };
    // The optional country code, taken when it leads to a match: "+1" or "1", with its
    // separator first, then without; then none.
    let one = if b[p] == b'+' { p + 1 } else { p };
    if one < end && b[one] == b'1' && (one == p || b[p] == b'+') {
        let q = one + 1;
        if sep(q) {
            if let Some(e) = national(q + 1) {
                return Some((PHONE_US, e));
            }
        }
        if let Some(e) = national(q) {
            return Some((PHONE_US, e));
        }
    }
    if run == 3 || b[p] == b'(' {
        if let Some(e) = national(p) {
            return Some((PHONE_US, e));
        }
    }

    // PHONE_E164: \+[1-9](?:[ .-]?(?:\([0-9]{1,4}\)|[0-9])){6,16}\b
    if b[p] == b'+' && p + 1 < end && matches!(b[p + 1], b'1'..=b'9') {
        let mut ends = [0usize; 16];
        let mut n = 0;
        let mut i = p + 2;
        while n < 16 {
            let j = if sep(i) { i + 1 } else { i };
            let unit_end = if is(j, b'(') {
                let k = (j + 1..end.min(j + 6))
                    .take_while(|&k| b[k].is_ascii_digit())
                    .count();
                ((1..=4).contains(&k) && is(j + 1 + k, b')')).then_some(j + 2 + k)
            } else {
                digit(j).then_some(j + 1)
            };
            let Some(u) = unit_end else { break };
            ends[n] = u;
            n += 1;
            i = u;
        }
        if let Some(e) = longest(&ends[..n], 6) {
            return Some((PHONE_E164, e));
        }
    }

    // CARD: \b[0-9](?:[ -]?[0-9]){12,18}\b
    if run > 0 && boundary(p) {
        let mut ends = [0usize; 18];
        let mut n = 0;
        let mut i = p + 1;
        while n < 18 {
            let j = if space_or_dash(i) { i + 1 } else { i };
            if !digit(j) {
                break;
            }
            ends[n] = j + 1;
            n += 1;
            i = j + 1;
        }
        if let Some(e) = longest(&ends[..n], 12) {
            return Some((CARD, e));
        }
    }

    // NINE_DIGITS: \b[0-9]{9}\b
    (run == 9 && boundary(p) && boundary(p + 9)).then_some((NINE_DIGITS, p + 9))
}

/// Whether a digit-shaped entity can start at `b[i]`: every pattern starts with a digit, '('
/// or '+'. With `skip_glued`, not a digit right after a letter, digit or '+': [`classify`]
/// refuses every candidate that starts there ("x415-555-0123", the "23" of "123"), so the
/// search there is skipped (a property test pins that the found entities are the same).
fn may_start(b: &[u8], i: usize, skip_glued: bool) -> bool {
    match b[i] {
        b'(' | b'+' => true,
        b'0'..=b'9' => {
            !skip_glued || i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'+')
        }
        _ => false,
    }
}

impl Default for Patterns {
    fn default() -> Self {
        Patterns::new()
    }
}

/// What each byte is in a digit cluster: 1 a digit, 2 a separator (space - . ( ) +), 0 the
/// end of the cluster.
const CLUSTER: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = b'0';
    while c <= b'9' {
        t[c as usize] = 1;
        c += 1;
    }
    let seps = b" -.()+";
    let mut i = 0;
    while i < seps.len() {
        t[seps[i] as usize] = 2;
        i += 1;
    }
    t
};

/// The index of the first ASCII digit at or after `i`. Skips eight bytes at a time while a
/// word holds no digit (SWAR "has a byte between" test), then finds it byte by byte.
fn next_digit(b: &[u8], mut i: usize) -> Option<usize> {
    const L: u64 = 0x0101_0101_0101_0101;
    const H: u64 = 0x8080_8080_8080_8080;
    const M: u64 = 0x2F; // b'0' - 1
    const N: u64 = 0x3A; // b'9' + 1
    while let Some(word) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
        let low = x & (L * 127);
        let between = (L * (127 + N)).wrapping_sub(low) & !x & low.wrapping_add(L * (127 - M)) & H;
        if between != 0 {
            break;
        }
        i += 8;
    }
    b.get(i..)?
        .iter()
        .position(u8::is_ascii_digit)
        .map(|k| i + k)
}

/// Every email address in `b`, in order: what `find_iter` of [`EMAIL_PATTERN`] finds (a
/// property test compares them), then [`trim_email`]ed, by one forward pass from each '@'.
///
/// Why that is the regex's answer: a match holds exactly one '@', so the leftmost match
/// that uses an '@' starts where the run of local-part characters before it starts (or
/// where the previous match ended). After the '@', the pattern's domain is a chain of labels
/// (each the longest run of letters, digits and '-' from a letter or digit, cut back to its
/// last letter or digit; only a label not cut back can be followed by '.'), and the greedy
/// `(?:\.label)*` gives back labels until `\.[A-Za-z]{2,24}\b` fits: the furthest dot after
/// a label of the chain that is followed by 2 to 24 letters and then no word character.
fn emails(b: &[u8], out: &mut Vec<(usize, usize, Entity)>) {
    let mut last_end = 0;
    for at in memchr::memchr_iter(b'@', b) {
        if at < last_end {
            continue;
        }
        let mut start = at;
        while start > last_end && is_local(b[start - 1]) {
            start -= 1;
        }
        if start == at {
            continue;
        }
        let Some(end) = domain_end(b, at + 1) else {
            continue;
        };
        let (s, e) = trim_email(b, start, end);
        if s < e {
            out.push((s, e, Entity::Email));
        }
        last_end = end;
    }
}

/// The email scan's byte classes, one bit each, read from [`EMAIL_CLASS`].
const LOCAL: u8 = 1; // [A-Za-z0-9._%+-], the local part
const LABEL: u8 = 2; // [A-Za-z0-9-], a domain label
const ALNUM: u8 = 4; // [A-Za-z0-9]
const ALPHA: u8 = 8; // [A-Za-z]
const WORD: u8 = 16; // [A-Za-z0-9_], what `\b` reads

static EMAIL_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let mut k = 0;
        if b.is_ascii_alphanumeric() {
            k |= LOCAL | LABEL | ALNUM | WORD;
        }
        if b.is_ascii_alphabetic() {
            k |= ALPHA;
        }
        match b {
            b'.' | b'%' | b'+' => k |= LOCAL,
            b'_' => k |= LOCAL | WORD,
            b'-' => k |= LOCAL | LABEL,
            _ => {}
        }
        t[c] = k;
        c += 1;
    }
    t
};

fn has(c: u8, class: u8) -> bool {
    EMAIL_CLASS[c as usize] & class != 0
}

/// A character of an email's local part: `[A-Za-z0-9._%+-]`.
fn is_local(c: u8) -> bool {
    has(c, LOCAL)
}

/// The end of the email domain starting at `b[from]`, if one does (see [`emails`]).
fn domain_end(b: &[u8], from: usize) -> Option<usize> {
    let mut end = None;
    let mut label = from;
    while b.get(label).is_some_and(|&c| has(c, ALNUM)) {
        let run = label + b[label..].iter().take_while(|&&c| has(c, LABEL)).count();
        if b[run - 1] == b'-' || b.get(run) != Some(&b'.') {
            // Cut back to a letter or digit, or not followed by '.': the chain ends here.
            break;
        }
        // A top-level domain after this label's dot?
        let letters = b[run + 1..]
            .iter()
            .take(25)
            .take_while(|&&c| has(c, ALPHA))
            .count();
        let after = run + 1 + letters;
        if (2..=24).contains(&letters) && !b.get(after).is_some_and(|&c| has(c, WORD)) {
            end = Some(after);
        }
        label = run + 1;
    }
    end
}

fn trim_email(b: &[u8], mut s: usize, e: usize) -> (usize, usize) {
    while s < e && matches!(b[s], b'.' | b'-' | b'+' | b'%') {
        s += 1;
    }
    (s, e)
}

fn is_alnum(b: Option<&u8>) -> bool {
    b.is_some_and(|c| c.is_ascii_alphanumeric())
}

fn digits(b: &[u8]) -> impl Iterator<Item = u8> + '_ {
    b.iter().filter(|c| c.is_ascii_digit()).map(|c| c - b'0')
}

/// Up to 20 digits of `b` without allocating; `None` if there are more.
struct Digits {
    d: [u8; 20],
    n: usize,
}

impl Digits {
    fn of(b: &[u8]) -> Option<Digits> {
        let mut d = [0u8; 20];
        let mut n = 0;
        for &c in b {
            let x = c.wrapping_sub(b'0');
            if x < 10 {
                if n == d.len() {
                    return None;
                }
                d[n] = x;
                n += 1;
            }
        }
        Some(Digits { d, n })
    }
    fn as_slice(&self) -> &[u8] {
        &self.d[..self.n]
    }
}

/// Why [`classify`] refused a candidate.
struct Refused {
    /// A nine-digit number that is a valid SSN but has no SSN context before it (or is glued
    /// to what surrounds it): a replacement within the context window could change that.
    wants_context: bool,
}

/// The entity candidate `b[s..e]` (matched by `pattern`) is, or why it is none.
fn classify(
    b: &[u8],
    pattern: usize,
    s: usize,
    e: usize,
) -> Result<(usize, usize, Entity), Refused> {
    let span = &b[s..e];
    // Nothing glued to the candidate on either side: "x415-555-0123", "+415-555-0123-9".
    // A candidate opening with '(' or '+' is delimited by that character itself; only a leading
    // digit can be glued to a word ("x415-555-0123", "+415-555-0123" as part of "1+415...").
    let glued_before =
        s > 0 && span[0].is_ascii_digit() && (is_alnum(b.get(s - 1)) || b[s - 1] == b'+');
    if pattern == NINE_DIGITS {
        // The SSN rules are checked once, whether the candidate is then refused or not.
        let ssn = valid_ssn(span);
        if ssn && !glued_before && !is_alnum(b.get(e)) && has_ssn_context(b, s) {
            return Ok((s, e, Entity::Ssn));
        }
        return Err(Refused { wants_context: ssn });
    }
    let none = Refused {
        wants_context: false,
    };
    if is_alnum(b.get(e)) || glued_before {
        return Err(none);
    }
    let found = match pattern {
        SSN_GROUPED => {
            // Both separators the same: "123-45-6789", "123 45 6789".
            (span[3] == span[6] && valid_ssn(span)).then_some((s, e, Entity::Ssn))
        }
        CARD => card(span).map(|(cs, ce)| (s + cs, s + ce, Entity::Card)),
        PHONE_US => valid_nanp(span).then_some((s, e, Entity::Phone)),
        PHONE_E164 => {
            let n = digits(span).count();
            (8..=15).contains(&n).then_some((s, e, Entity::Phone))
        }
        _ => None,
    };
    found.ok_or(none)
}

/// The entity a JSON number `b[s..e]` is, if any: an integer of 13 to 19 digits that is a card
/// (issuer prefix, length and Luhn, as in text), or of 9 digits that is a valid SSN with SSN
/// context before it (such as its `"ssn":` key). Negative numbers, fractions and exponents are
/// never either.
pub(super) fn number_entity(b: &[u8], s: usize, e: usize) -> Option<Entity> {
    let span = &b[s..e];
    if !span.iter().all(u8::is_ascii_digit) {
        return None;
    }
    match span.len() {
        9 => (valid_ssn(span) && has_ssn_context(b, s)).then_some(Entity::Ssn),
        13..=19 => is_card_number(span).then_some(Entity::Card),
        _ => None,
    }
}

/// SSA rules: area not 000, 666 or 9xx; group not 00; serial not 0000.
fn valid_ssn(span: &[u8]) -> bool {
    // The two shapes candidates have, read in place: "123456789" and "123-45-6789".
    let digit = |i: usize| span[i].is_ascii_digit();
    let at: [usize; 9] = match span.len() {
        9 if (0..9).all(digit) => [0, 1, 2, 3, 4, 5, 6, 7, 8],
        11 if !digit(3) && !digit(6) && [0, 1, 2, 4, 5, 7, 8, 9, 10].into_iter().all(digit) => {
            [0, 1, 2, 4, 5, 7, 8, 9, 10]
        }
        _ => return valid_ssn_digits(span),
    };
    ssn_rules(at.map(|i| span[i] - b'0'))
}

/// [`valid_ssn`] for any span: its digits, wherever they are.
fn valid_ssn_digits(span: &[u8]) -> bool {
    let Some(d) = Digits::of(span) else {
        return false;
    };
    match d.as_slice().try_into() {
        Ok(d) => ssn_rules(d),
        Err(_) => false,
    }
}

fn ssn_rules(d: [u8; 9]) -> bool {
    let area = d[0] as u32 * 100 + d[1] as u32 * 10 + d[2] as u32;
    area != 0 && area != 666 && area < 900 && (d[3], d[4]) != (0, 0) && d[5..] != [0, 0, 0, 0]
}

fn has_ssn_context(b: &[u8], s: usize) -> bool {
    let from = s.saturating_sub(SSN_CONTEXT_WINDOW);
    SSN_CONTEXT.iter().any(|w| {
        let w = w.as_bytes();
        (from..s.saturating_sub(w.len() - 1)).any(|k| {
            b[k..k + w.len()].eq_ignore_ascii_case(w)
                // sluice's own "[REDACTED_SSN]" is not context: redaction stays idempotent.
                && !(k >= 9 && b[k - 9..k].eq_ignore_ascii_case(b"redacted_"))
        })
    })
}

/// NANP: optional country code 1, area code and exchange starting 2-9.
fn valid_nanp(span: &[u8]) -> bool {
    let Some(d) = Digits::of(span) else {
        return false;
    };
    let d = d.as_slice();
    let national = match d.len() {
        10 => d,
        11 if d[0] == 1 => &d[1..],
        _ => return false,
    };
    national[0] >= 2 && national[3] >= 2
}

/// The card inside a candidate: the whole digit run, or (when separated into groups) the
/// longest run of whole groups that is a card. Returns byte offsets within `span`.
fn card(span: &[u8]) -> Option<(usize, usize)> {
    // Groups of digits between separators, as byte ranges.
    // At most 19 digits (the pattern's bound), so at most 19 groups.
    let mut buf = [(0usize, 0usize); 20];
    let mut n = 0;
    let mut start = 0;
    for (i, &c) in span.iter().enumerate() {
        if !c.is_ascii_digit() {
            *buf.get_mut(n)? = (start, i);
            n += 1;
            start = i + 1;
        }
    }
    *buf.get_mut(n)? = (start, span.len());
    let groups = &buf[..=n];
    if groups.len() > 1 && groups.iter().any(|&(a, b)| b - a < 3) {
        // "1 2 3 4 ...": a list of numbers, not a card.
        return None;
    }
    // The whole candidate is the longest run of groups: when it is a card, it is the answer.
    if is_card_number(span) {
        return Some((0, span.len()));
    }
    let mut best: Option<(usize, usize)> = None;
    for i in 0..groups.len() {
        let mut n = 0;
        for j in i..groups.len() {
            let (a, b) = (groups[i].0, groups[j].1);
            // Groups are digits only: the run's digits are the groups' lengths.
            n += groups[j].1 - groups[j].0;
            if !(13..=19).contains(&n) {
                continue;
            }
            if best.is_some_and(|(x, y)| y - x >= b - a) {
                continue;
            }
            if is_card_number(&span[a..b]) {
                best = Some((a, b));
            }
        }
    }
    best
}

/// Luhn plus a known issuer prefix and length.
pub(super) fn is_card_number(span: &[u8]) -> bool {
    let Some(d) = Digits::of(span) else {
        return false;
    };
    let d = d.as_slice();
    let n = d.len();
    if n < 12 {
        return false;
    }
    let prefix = |k: usize| d[..k].iter().fold(0u32, |acc, &x| acc * 10 + x as u32);
    let issuer = match d[0] {
        4 => matches!(n, 13 | 16 | 19),                     // Visa
        2 => (2221..=2720).contains(&prefix(4)) && n == 16, // Mastercard 2-series
        5 => {
            ((51..=55).contains(&prefix(2)) && n == 16) // Mastercard
                || (matches!(prefix(2), 50 | 56..=59) && (12..=19).contains(&n))
            // Maestro
        }
        3 => {
            (matches!(prefix(2), 34 | 37) && n == 15) // Amex
                || ((300..=305).contains(&prefix(3)) || matches!(prefix(2), 36 | 38 | 39))
                    && (14..=19).contains(&n) // Diners
                || (3528..=3589).contains(&prefix(4)) && (16..=19).contains(&n) // JCB
        }
        6 => {
            (prefix(4) == 6011 || (644..=649).contains(&prefix(3)) || prefix(2) == 65)
                && (16..=19).contains(&n) // Discover
                || prefix(2) == 62 && (16..=19).contains(&n) // UnionPay
                || matches!(prefix(4), 6304 | 6759 | 6761..=6763) && (12..=19).contains(&n)
            // Maestro
        }
        _ => false,
    };
    issuer && luhn(d)
}

fn luhn(d: &[u8]) -> bool {
    // Every second digit from the right doubled, its digits summed: 7 -> 14 -> 5.
    const DOUBLED: [u32; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];
    let n = d.len();
    let sum: u32 = d
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            if (n - i).is_multiple_of(2) {
                DOUBLED[x as usize]
            } else {
                x as u32
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Most extra passes [`redact`] makes after a productive one.
pub(super) const MAX_EXTRA_PASSES: usize = 3;

/// Replace every validated match in `text`; `None` when there is none (no allocation).
///
/// One pass reads candidates left to right, and a replacement can change what a later
/// candidate looks like (a long rejected digit run that contained a card, a context word).
/// So a pass that replaced something where that can happen is followed by another over its
/// output, until a pass finds nothing (at most three more): the result is stable, redacting
/// it again changes nothing, and text with no PII still costs a single scan. A pass whose
/// replacements cannot change anything is not repeated (see [`passes`]).
pub fn redact(p: &Patterns, text: &str, scan: Scan, counts: &mut Counts) -> Option<String> {
    passes(p, "", text, scan, counts, true)
}

/// [`redact`] with `context` read before the text as look-behind (never replaced): the
/// member name of a JSON string value (`"client_secret": "`), so rules that need the name
/// see it.
pub fn redact_after(
    p: &Patterns,
    context: &str,
    text: &str,
    scan: Scan,
    counts: &mut Counts,
) -> Option<String> {
    passes(p, context, text, scan, counts, true)
}

/// Whether a JSON member name gives its value context (see [`redact_after`]).
pub(super) fn names_a_secret(p: &Patterns, name: &str) -> bool {
    p.secrets.names_a_secret(name)
}

/// [`redact`]. A productive pass is followed by another unless nothing it saw or replaced
/// could change what a search of its output finds (`trust_settled`; the tests compare with
/// always searching again): no secret anchor, no refused candidate under a match, no match
/// dropped as overlapping another, no 9-digit number refused for want of SSN context near a
/// match, and every match between bytes that no pattern reads across (see [`sticky`]).
fn passes(
    p: &Patterns,
    context: &str,
    text: &str,
    scan: Scan,
    counts: &mut Counts,
    trust_settled: bool,
) -> Option<String> {
    if !scan.any() {
        return None;
    }
    let (mut current, mut unsettled) = replace_once(p, context, text, scan, counts)?;
    for _ in 0..MAX_EXTRA_PASSES {
        if trust_settled && !unsettled {
            break;
        }
        match replace_once(p, context, &current, scan, counts) {
            Some((next, u)) => (current, unsettled) = (next, u),
            None => break,
        }
    }
    Some(current)
}

/// Whether a byte next to a replaced match may decide what a pattern matches across it once
/// the match is a token: word characters (`\b`, the glued-digit rule, email local parts and
/// domains) and '@'. Non-ASCII bytes count too, out of caution. Every other byte a pattern
/// can read next to a match (spaces and the separators) it reads the same before and after
/// the replacement, since a token's own characters ('[', capitals, '_', ']') start, end or
/// continue no digit-shaped or email match.
fn sticky(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'@' || !c.is_ascii()
}

/// One pass: replace every validated match in `text`, and whether the output must be
/// searched again; `None` when there is no match (no allocation).
fn replace_once(
    p: &Patterns,
    context: &str,
    text: &str,
    scan: Scan,
    counts: &mut Counts,
) -> Option<(String, bool)> {
    let mut found = Vec::new();
    let mut unsettled = if context.is_empty() {
        p.find_in(text, scan, &mut found)
    } else {
        // Matches in the look-behind alone are not the text's; one reaching into the text
        // is replaced from the text's start.
        let base = context.len();
        let joined = format!("{context}{text}");
        let mut all = Vec::new();
        let u = p.find_in(&joined, scan, &mut all);
        found.extend(
            all.into_iter()
                .filter(|&(_, e, _)| e > base)
                .map(|(s, e, entity)| (s.max(base) - base, e - base, entity)),
        );
        u
    };
    if found.is_empty() {
        return None;
    }
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16 * found.len());
    let mut last = 0;
    for (s, e, entity) in found {
        if s < last {
            // Overlapping the previous match (`jane@example.com.sk-proj-...`: the email's
            // domain took the key's `sk`): the previous replacement covers it too, so no part
            // of either is left. Searched again: what follows it may read differently now.
            unsettled = true;
            last = last.max(e);
            continue;
        }
        unsettled |= (s > 0 && sticky(b[s - 1])) || b.get(e).copied().is_some_and(sticky);
        out.push_str(&text[last..s]);
        out.push_str(entity.token());
        counts.add(entity);
        last = e;
    }
    out.push_str(&text[last..]);
    Some((out, unsettled))
}

#[cfg(test)]
mod tests {
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
