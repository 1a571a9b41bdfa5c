//! Digit-shaped PII and what validates it: SSNs (rules and context), NANP phone numbers, card
//! numbers (Luhn), and why a digit run is refused.

use super::*;

pub(super) fn digits(b: &[u8]) -> impl Iterator<Item = u8> + '_ {
    b.iter().filter(|c| c.is_ascii_digit()).map(|c| c - b'0')
}

/// Up to 20 digits of `b` without allocating; `None` if there are more.
pub(super) struct Digits {
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
pub(super) struct Refused {
    /// A nine-digit number that is a valid SSN but has no SSN context before it (or is glued
    /// to what surrounds it): a replacement within the context window could change that.
    pub(super) wants_context: bool,
}

/// The entity candidate `b[s..e]` (matched by `pattern`) is, or why it is none.
pub(super) fn classify(
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

/// The entity a JSON number `b[s..e]` is, if any: one whose integer part (its digits before a
/// fraction or exponent, after a minus sign: what a reader of the text sees as a run of
/// digits, as the text recognizers read `-4111111111111111` or `4111111111111111.0`) has 13 to
/// 19 digits and is a card (issuer prefix, length and Luhn, as in text), or 9 digits that are
/// a valid SSN with SSN context before it (such as its `"ssn":` key).
pub(in crate::redact) fn number_entity(b: &[u8], s: usize, e: usize) -> Option<Entity> {
    let span = &b[s..e];
    let span = span.strip_prefix(b"-").unwrap_or(span);
    let span = &span[..span
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(span.len())];
    match span.len() {
        9 => (valid_ssn(span) && has_ssn_context(b, s)).then_some(Entity::Ssn),
        13..=19 => is_card_number(span).then_some(Entity::Card),
        _ => None,
    }
}

/// SSA rules: area not 000, 666 or 9xx; group not 00; serial not 0000.
pub(super) fn valid_ssn(span: &[u8]) -> bool {
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
pub(super) fn valid_ssn_digits(span: &[u8]) -> bool {
    let Some(d) = Digits::of(span) else {
        return false;
    };
    match d.as_slice().try_into() {
        Ok(d) => ssn_rules(d),
        Err(_) => false,
    }
}

pub(super) fn ssn_rules(d: [u8; 9]) -> bool {
    let area = d[0] as u32 * 100 + d[1] as u32 * 10 + d[2] as u32;
    area != 0 && area != 666 && area < 900 && (d[3], d[4]) != (0, 0) && d[5..] != [0, 0, 0, 0]
}

pub(super) fn has_ssn_context(b: &[u8], s: usize) -> bool {
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
pub(super) fn valid_nanp(span: &[u8]) -> bool {
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
pub(super) fn card(span: &[u8]) -> Option<(usize, usize)> {
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
pub(in crate::redact) fn is_card_number(span: &[u8]) -> bool {
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

pub(super) fn luhn(d: &[u8]) -> bool {
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
pub(in crate::redact) const MAX_EXTRA_PASSES: usize = 3;
