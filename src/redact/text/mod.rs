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

mod email;
mod numbers;
use email::*;
use numbers::*;

pub(super) use numbers::{number_entity, MAX_EXTRA_PASSES};

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
mod tests;
