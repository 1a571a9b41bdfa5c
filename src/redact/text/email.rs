//! Email addresses: a hand-written scanner for the pattern `[A-Za-z0-9._%+-]+@label(.label)*.tld`
//! (the regex is its oracle in the tests), with the byte classes it reads.

use super::*;

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
pub(super) fn emails(b: &[u8], out: &mut Vec<(usize, usize, Entity)>) {
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
pub(super) const LOCAL: u8 = 1; // [A-Za-z0-9._%+-], the local part
pub(super) const LABEL: u8 = 2; // [A-Za-z0-9-], a domain label
pub(super) const ALNUM: u8 = 4; // [A-Za-z0-9]
pub(super) const ALPHA: u8 = 8; // [A-Za-z]
pub(super) const WORD: u8 = 16; // [A-Za-z0-9_], what `\b` reads

pub(super) static EMAIL_CLASS: [u8; 256] = {
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

pub(super) fn has(c: u8, class: u8) -> bool {
    EMAIL_CLASS[c as usize] & class != 0
}

/// A character of an email's local part: `[A-Za-z0-9._%+-]`.
pub(super) fn is_local(c: u8) -> bool {
    has(c, LOCAL)
}

/// The end of the email domain starting at `b[from]`, if one does (see [`emails`]).
pub(super) fn domain_end(b: &[u8], from: usize) -> Option<usize> {
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

pub(super) fn trim_email(b: &[u8], mut s: usize, e: usize) -> (usize, usize) {
    while s < e && matches!(b[s], b'.' | b'-' | b'+' | b'%') {
        s += 1;
    }
    (s, e)
}

pub(super) fn is_alnum(b: Option<&u8>) -> bool {
    b.is_some_and(|c| c.is_ascii_alphanumeric())
}
