//! Redacting text that arrives in pieces (a streamed answer's `delta.content`, one field at a
//! time), with a small bounded holdback: what comes out, concatenated, is what redacting the
//! whole text at once gives, however the text was split.
//!
//! How: everything up to the last *safe cut* is released at once; only the tail after it is
//! held. A safe cut is a place no entity can span: right after whitespace or punctuation that
//! no entity contains (`"`, `,`, `;`, `!`, `?`, brackets, quotes, non-ASCII), except a space
//! between digits (phone and card groups) and a PEM header still being written. So clean prose
//! is held back one word at most, and an email or key split over any number of pieces is
//! released only once it is complete, as its token. The tail is bounded by `holdback` bytes:
//! past it the oldest bytes are released anyway; if they end in a secret (a JWT or key longer
//! than the holdback), the rest of that token is dropped as it arrives, so it is still masked
//! whole. A private key block is replaced by its token as soon as its BEGIN line is complete
//! and everything up to its END line is dropped, whatever its length.
//!
//! Released text is redacted with the last [`CONTEXT`] bytes before it as look-behind (SSN
//! context words, an AWS access key id before its secret key), so decisions match the batch
//! ones.

use super::text::{self, Patterns};
use super::{fold, secret};
use super::{Counts, Entity, Scan};

/// Look-behind kept from released text (the longest context window of any rule).
pub const CONTEXT: usize = 160;

/// The smallest holdback: every rule decides whether a token is a secret within this many
/// bytes of its start (a JWT's header, 32 characters of an `sk-` key).
pub const MIN_HOLDBACK: usize = 64;

/// How many bytes may be held per byte of holdback when the held text folds to less (an
/// escape such as `&#x40;` or `%E2%80%8B` is up to 9 bytes for one folded character or none).
const RAW_FACTOR: usize = 12;

/// What the stream is doing with incoming text.
#[derive(Debug, Clone)]
enum Mode {
    /// Hold back the unsafe tail, release the rest.
    Normal,
    /// Inside a private key block whose token was already released: drop everything up to
    /// and including its END line.
    Pem { end_marker: Vec<u8> },
    /// A secret token was released cut at the holdback bound: drop its remaining characters
    /// (those of its own character class, as the batch match would have taken them).
    Continue(fn(u8) -> bool),
}

/// One field's streaming redactor.
pub struct TextStream {
    p: std::sync::Arc<Patterns>,
    scan: Scan,
    holdback: usize,
    pending: String,
    context: String,
    mode: Mode,
    counts: Counts,
}

impl TextStream {
    /// A redactor over `p` looking for `scan`, holding back at most `holdback` bytes.
    pub fn new(p: std::sync::Arc<Patterns>, scan: Scan, holdback: usize) -> TextStream {
        TextStream {
            p,
            scan,
            holdback: holdback.max(MIN_HOLDBACK),
            pending: String::new(),
            context: String::new(),
            mode: Mode::Normal,
            counts: Counts::default(),
        }
    }

    /// Everything replaced so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Bytes held back right now.
    pub fn held(&self) -> usize {
        self.pending.len()
    }

    /// Take `piece`; return what can be released now.
    pub fn push(&mut self, piece: &str) -> String {
        self.pending.push_str(piece);
        let mut out = String::new();
        self.drain(false, &mut out);
        out
    }

    /// The field (or the stream) ended: release everything held.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        self.drain(true, &mut out);
        out
    }

    fn drain(&mut self, at_end: bool, out: &mut String) {
        loop {
            match &self.mode {
                Mode::Pem { end_marker } => {
                    let b = self.pending.as_bytes();
                    match memchr::memmem::find(b, end_marker) {
                        Some(k) => {
                            let after = k + end_marker.len();
                            let dropped: String = self.pending.drain(..after).collect();
                            self.remember(&dropped);
                            self.mode = Mode::Normal;
                        }
                        None => {
                            // Keep only what could be the start of the END line.
                            let keep = end_marker.len().saturating_sub(1);
                            let cut =
                                floor_char(&self.pending, self.pending.len().saturating_sub(keep));
                            let dropped: String = self.pending.drain(..cut).collect();
                            self.remember(&dropped);
                            if at_end {
                                self.pending.clear();
                            }
                            return;
                        }
                    }
                }
                Mode::Continue(class) => {
                    let class = *class;
                    let n = self
                        .pending
                        .bytes()
                        .position(|c| !class(c))
                        .unwrap_or(self.pending.len());
                    let dropped: String = self.pending.drain(..n).collect();
                    self.remember(&dropped);
                    if self.pending.is_empty() {
                        return;
                    }
                    self.mode = Mode::Normal;
                }
                Mode::Normal => {
                    if self.pending.is_empty() {
                        return;
                    }
                    let (cut, forced) = if at_end {
                        (self.pending.len(), false)
                    } else {
                        match self.safe_cut() {
                            Some(c) => (c, false),
                            None if self.pending.len() > self.holdback => {
                                let Some(forced_at) = self.forced_cut() else {
                                    return;
                                };
                                // Past the bound. A secret that runs to the end of what is held
                                // (a long JWT or key) is masked whole: its token now, the rest
                                // of it dropped as it arrives.
                                if let Some((start, mode)) = self.secret_to_the_end() {
                                    let before: String = self.pending.drain(..start).collect();
                                    if let Some(m) = self.release(&before, false, out) {
                                        self.mode = m;
                                    }
                                    self.remember(&before);
                                    out.push_str(Entity::Secret.token());
                                    self.counts.add(Entity::Secret);
                                    self.mode = mode;
                                    continue;
                                }
                                (self.past_matches(forced_at), true)
                            }
                            None => (0, false),
                        }
                    };
                    if cut == 0 {
                        return;
                    }
                    let segment: String = self.pending.drain(..cut).collect();
                    let end_state = self.release(&segment, forced || at_end, out);
                    self.remember(&segment);
                    if let Some(Mode::Pem { end_marker }) = &end_state {
                        // The END line may have begun inside the released segment.
                        let keep = end_marker.len() - 1;
                        let from = floor_char(&segment, segment.len().saturating_sub(keep));
                        self.pending.insert_str(0, &segment[from..]);
                    }
                    match end_state {
                        Some(mode) => self.mode = mode,
                        None if !forced => return,
                        None => {}
                    }
                    if at_end && self.pending.is_empty() {
                        return;
                    }
                }
            }
        }
    }

    /// Redact `segment` (with the context as look-behind) into `out`. Returns the mode to
    /// switch to when the segment ends inside a secret (a PEM block without its END line, or
    /// a token cut at the holdback bound).
    fn release(&mut self, segment: &str, cut_short: bool, out: &mut String) -> Option<Mode> {
        let base = self.context.len();
        let mut current = segment.to_string();
        let mut next_mode = None;
        let mut counts = Counts::default();
        // As batch redaction does: a pass that replaced something is followed by another over
        // its output (a replacement can change a later candidate), each with the look-behind.
        for pass in 0..=text::MAX_EXTRA_PASSES {
            let mut joined = String::with_capacity(base + current.len());
            joined.push_str(&self.context);
            joined.push_str(&current);
            let mut found = Vec::new();
            self.p.find(&joined, self.scan, &mut found);
            let mut next = String::with_capacity(current.len() + 32);
            let mut last = base;
            let mut replaced = false;
            for (s, e, entity) in found {
                if s < last && last == base && e > base && pass == 0 {
                    // Starting in what was already released and reaching into this segment
                    // (no cut should allow it): what is in the segment is replaced, as
                    // `text::replace_once` does with its look-behind.
                    next.push_str(entity.token());
                    counts.add(entity);
                    replaced = true;
                    last = e;
                    if e == joined.len() && entity == Entity::Secret {
                        next_mode = self.open_secret(&joined.as_bytes()[s..e], cut_short);
                    }
                    continue;
                }
                if s < last {
                    // Overlapping a replacement made in this pass: covered by it, as in
                    // batch redaction (`text::replace_once`).
                    if last > base && e > last {
                        last = e;
                        if pass == 0 && e == joined.len() && entity == Entity::Secret {
                            next_mode = self.open_secret(&joined.as_bytes()[s..e], cut_short);
                        }
                    }
                    continue;
                }
                next.push_str(&joined[last..s]);
                next.push_str(entity.token());
                counts.add(entity);
                replaced = true;
                last = e;
                if pass == 0 && e == joined.len() && entity == Entity::Secret {
                    next_mode = self.open_secret(&joined.as_bytes()[s..e], cut_short);
                }
            }
            if !replaced {
                break;
            }
            next.push_str(&joined[last..]);
            current = next;
        }
        self.counts.merge(&counts);
        out.push_str(&current);
        next_mode
    }

    /// Where to cut what is held when it is past the holdback bound, if it is: the bound
    /// counts the text as the patterns read it (folded, see `fold`), so a value written with
    /// escapes or wide characters is not cut where its plain form would not be. What is held
    /// stays bounded in bytes too: [`RAW_FACTOR`] times the holdback at most (escapes and
    /// invisible characters fold to less than they take).
    fn forced_cut(&self) -> Option<usize> {
        let len = self.pending.len();
        match fold::fold(&self.pending) {
            None => (len > self.holdback).then(|| floor_char(&self.pending, len - self.holdback)),
            Some(f) if f.text.len() > self.holdback => {
                let mut k = f.text.len() - self.holdback;
                while k < f.text.len() && f.at(k) == f.at(k - 1) {
                    k += 1;
                }
                Some(f.at(k))
            }
            Some(_) => {
                let raw = self.holdback * RAW_FACTOR;
                (len > raw).then(|| floor_char(&self.pending, len - raw))
            }
        }
    }

    /// A forced cut at `cut` in `pending`, moved past every complete match it would split (a
    /// secret known only from the context before it, such as an AWS secret key after its key
    /// id): the match is released whole, as batch redaction replaces it.
    fn past_matches(&self, cut: usize) -> usize {
        let mut joined = String::with_capacity(self.context.len() + self.pending.len());
        joined.push_str(&self.context);
        joined.push_str(&self.pending);
        let base = self.context.len();
        let mut found = Vec::new();
        self.p.find(&joined, self.scan, &mut found);
        found.sort_unstable_by_key(|&(s, _, _)| s);
        let mut at = base + cut;
        for (s, e, _) in found {
            if s < at && at < e {
                at = e;
            }
        }
        ceil_char(&self.pending, at - base)
    }

    /// A secret starting in `pending` and running to its end: where it starts, and the mode
    /// that drops the rest of it.
    fn secret_to_the_end(&self) -> Option<(usize, Mode)> {
        if !self.scan.secrets {
            return None;
        }
        let mut joined = String::with_capacity(self.context.len() + self.pending.len());
        joined.push_str(&self.context);
        joined.push_str(&self.pending);
        let base = self.context.len();
        let mut found = Vec::new();
        let only_secrets = Scan {
            pii: false,
            secrets: true,
        };
        self.p.find(&joined, only_secrets, &mut found);
        let (s, e, _) = found
            .into_iter()
            .find(|&(s, e, _)| s >= base && e == joined.len())?;
        let mode = self.open_secret(&joined.as_bytes()[s..e], true)?;
        Some((s - base, mode))
    }

    /// A secret that reaches the end of the released text: what to do with what follows.
    fn open_secret(&self, span: &[u8], cut_short: bool) -> Option<Mode> {
        if span.starts_with(b"-----BEGIN ") {
            let (label, after) = secret::pem_header(span, 0)?;
            if secret::pem_end(span, after, label).is_none() {
                let mut end_marker = b"-----END ".to_vec();
                end_marker.extend_from_slice(label);
                end_marker.extend_from_slice(b"-----");
                return Some(Mode::Pem { end_marker });
            }
            return None;
        }
        // The character class the batch match continues with.
        let class: fn(u8) -> bool = if span.starts_with(b"eyJ") {
            |c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')
        } else if span.starts_with(b"http") {
            |c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'/')
        } else if !secret::starts_with_anchor(span) {
            // An encoded run holding a secret (or a value assigned to a secret's name): the
            // rest of the run, base64's characters and padding included.
            |c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'/' | b'+' | b'=')
        } else {
            |c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-')
        };
        cut_short.then_some(Mode::Continue(class))
    }

    /// Keep the last [`CONTEXT`] bytes of the original text as look-behind.
    /// [`CONTEXT`] is counted on the text as the patterns read it (folded), within
    /// [`RAW_FACTOR`] times that in bytes.
    fn remember(&mut self, released: &str) {
        self.context.push_str(released);
        let len = self.context.len();
        if len <= CONTEXT {
            return;
        }
        let cut = match fold::fold(&self.context) {
            None => len - CONTEXT,
            Some(f) if f.text.len() > CONTEXT => {
                let mut k = f.text.len() - CONTEXT;
                while k < f.text.len() && f.at(k) == f.at(k - 1) {
                    k += 1;
                }
                f.at(k)
            }
            Some(_) => len.saturating_sub(CONTEXT * RAW_FACTOR),
        };
        let cut = floor_char(&self.context, cut);
        self.context.drain(..cut);
    }

    /// The end of the longest prefix of `pending` that no entity can extend past, if any.
    ///
    /// Read on the folded text (see `fold`) when the tail holds anything that folds: a
    /// no-break space between card groups is a space between digits, a full-width `＠` is no
    /// break; the cut is mapped back to the start of its unit.
    ///
    /// Never inside an escape still being written at the end (`&#6`, `%E2%80`), a URL's
    /// authority as written (`%2F` in a password decodes to `/`), or a value assigned to a
    /// secret's name that has not ended (`password: p€ss...`).
    fn safe_cut(&self) -> Option<usize> {
        let limit = open_escape(self.pending.as_bytes()).unwrap_or(self.pending.len());
        let head = &self.pending[..limit];
        let raw = self.pending.as_bytes();
        let urls = url_authorities(raw);
        let mut joined = String::with_capacity(self.context.len() + limit);
        joined.push_str(&self.context);
        joined.push_str(head);
        let base = self.context.len();
        // Assignments are read as the patterns read them: folded (`password：` with a
        // full-width colon, `&colon;`).
        let folded_joined = fold::fold(&joined);
        let open = |k: usize| match &folded_joined {
            None => self.p.open_assignment(&joined.as_bytes()[..base + k]),
            Some(f) => {
                let at = f.units_before(base + k);
                self.p.open_assignment(&f.text.as_bytes()[..at])
            }
        };
        let ok = |k: usize| {
            let in_url = urls.iter().any(|&(u, end)| k > u && k < end);
            let in_value = self.scan.secrets && open(k);
            !(in_url || in_value)
        };
        match fold::fold(head) {
            None => cut_in(head, &ok),
            Some(f) => {
                // A cut inside what one unit folded to ("⑩" -> "10") is no cut.
                let unit = |k: usize| k == 0 || f.at(k) != f.at(k - 1);
                cut_in(&f.text, &|k| unit(k) && ok(f.at(k))).map(|k| f.at(k))
            }
        }
    }
}

/// Where an HTML character reference, a percent escape or a JSON string escape that may still
/// go on starts at the end of `b` (`&#6`, `&comm`, `%4`, `%E2%80`, `\u00`, `\uD83D`): what it
/// decodes to is not known yet.
fn open_escape(b: &[u8]) -> Option<usize> {
    // `\`, `\u`, `\uX`.. `\uXXX`, or a high surrogate's escape that its low one may follow.
    let json = {
        let from = b.len().saturating_sub(12);
        memchr::memrchr(b'\\', &b[from..]).and_then(|j| {
            let j = from + j;
            let rest = &b[j + 1..];
            let hex = rest.iter().skip(1).all(u8::is_ascii_hexdigit);
            let open = match rest.len() {
                0 => true,
                1..=4 => rest[0] == b'u' && hex,
                _ => fold::is_high_surrogate_escape(&b[j..]),
            };
            // A high surrogate's escape right before: the pair is one character.
            let pair = j >= 6 && fold::is_high_surrogate_escape(&b[j - 6..j]);
            open.then_some(if pair { j - 6 } else { j })
        })
    };
    let other = open_reference_or_percent(b);
    match (json, other) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// [`open_escape`] for HTML character references and percent escapes.
fn open_reference_or_percent(b: &[u8]) -> Option<usize> {
    let from = b.len().saturating_sub(40);
    if let Some(j) = memchr::memrchr(b'&', &b[from..]).map(|j| from + j) {
        let rest = &b[j + 1..];
        let open = match rest.first() {
            None => true,
            Some(b'#') => rest[1..]
                .iter()
                .enumerate()
                .all(|(i, c)| c.is_ascii_hexdigit() || (i == 0 && matches!(c, b'x' | b'X'))),
            Some(_) => rest.iter().all(u8::is_ascii_alphanumeric),
        };
        if open {
            return Some(j);
        }
    }
    // `%`, `%X`, or escapes of UTF-8 bytes that a character may still continue.
    let from = b.len().saturating_sub(12);
    let j = memchr::memrchr(b'%', &b[from..]).map(|j| from + j)?;
    let rest = &b[j + 1..];
    match rest.len() {
        0 => Some(j),
        1 if rest[0].is_ascii_hexdigit() => Some(j),
        2 if rest.iter().all(u8::is_ascii_hexdigit) => {
            // A complete `%XX` of a byte >= 0x80 may be followed by more of its character:
            // from the first escape of the sequence.
            let byte = u8::from_str_radix(std::str::from_utf8(rest).ok()?, 16).ok()?;
            if byte < 0x80 {
                return None;
            }
            let mut start = j;
            while start >= 3
                && b[start - 3] == b'%'
                && b[start - 2].is_ascii_hexdigit()
                && b[start - 1].is_ascii_hexdigit()
                && b[start - 2] >= b'8'
            {
                start -= 3;
            }
            Some(start)
        }
        _ => None,
    }
}

/// The end of the longest prefix of `text` that no entity can extend past, if any.
fn cut_in(text: &str, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
    let b = text.as_bytes();
    // A private key header (it holds spaces) is never split.
    let pem = pem_header_span(b);
    let urls = url_authorities(b);
    let mut i = b.len();
    while i > 0 {
        let c = b[i - 1];
        let in_pem = pem.is_some_and(|(k, end)| i > k && i < end);
        let inside = (c == b' ' && digit_group_continues(b, i - 1))
            || in_pem
            || urls.iter().any(|&(k, end)| i > k && i < end);
        if is_break(c) && !inside {
            // Non-ASCII bytes are breaks, but the cut must fall on a character boundary.
            if text.is_char_boundary(i) && ok(i) {
                return Some(i);
            }
        }
        i -= 1;
    }
    None
}

/// Cuts that would split a PEM header: strictly between the last `-----BEGIN ` and the end of
/// its header line (to the end of the text while the header is incomplete). A complete header
/// that is not a private key's constrains nothing.
fn pem_header_span(b: &[u8]) -> Option<(usize, usize)> {
    let k = finder!(rev b"-----BEGIN ").rfind(b)?;
    let rest = &b[k + "-----BEGIN ".len()..];
    match finder!(b"-----").find(rest) {
        Some(_) => secret::pem_header(b, k).map(|(_, end)| (k, end)),
        None if rest.len() > 80 => None,
        None => Some((k, usize::MAX)),
    }
}

/// A character no entity contains: a cut right after it is safe (spaces need a second look).
fn is_break(c: u8) -> bool {
    // Not `! ? * ^ ~ $ | [ { & # %`: passwords and URL credentials hold them, and a secret
    // assigned to a name or written in a URL runs over them.
    c.is_ascii_whitespace()
        || c >= 0x80
        || matches!(
            c,
            b'"' | b'\'' | b'`' | b',' | b';' | b'<' | b'>' | b']' | b'}' | b'\\'
        )
}

/// Where cuts would split the authority of a URL (`scheme://user:pa,ss@host`, where URL
/// credentials are): from each `://` to the end of its authority, or to the end of the text
/// while the authority is still being written (`usize::MAX`).
fn url_authorities(b: &[u8]) -> Vec<(usize, usize)> {
    memchr::memmem::find_iter(b, b"://")
        .map(|k| {
            let from = k + 3;
            let stop = |strict: bool| {
                b[from..]
                    .iter()
                    .take(512)
                    .position(|&c| {
                        c.is_ascii_whitespace()
                            || matches!(c, b'"' | b'\'' | b'<' | b'>' | b'\\')
                            || (strict && matches!(c, b'/' | b'?' | b'#'))
                    })
                    .map_or(usize::MAX, |t| from + t)
            };
            let end = stop(true);
            // `user:pa#ss@host`: a password may hold `/`, `?` or `#` unescaped, and URL
            // credentials then run to the URL's last `@` (see `secret::url_credentials`).
            let authority = &b[from..end.min(b.len())];
            if authority.contains(&b':') && !authority.contains(&b'@') {
                return (k, stop(false));
            }
            (k, end)
        })
        .collect()
}

/// A phone or card group may continue across the space at `i`: a digit (or `)`) before it,
/// and after it a digit, `(`, `+` or `-`, or nothing yet.
fn digit_group_continues(b: &[u8], i: usize) -> bool {
    let before = i > 0 && (b[i - 1].is_ascii_digit() || b[i - 1] == b')');
    let after = b
        .get(i + 1)
        .is_none_or(|c| c.is_ascii_digit() || matches!(c, b'(' | b'+' | b'-'));
    before && after
}

/// The smallest character boundary of `s` at or after `i` (at most its length).
fn ceil_char(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn batch(p: &Patterns, text: &str) -> (String, Counts) {
        let mut c = Counts::default();
        let out = text::redact(p, text, Scan::ALL, &mut c).unwrap_or_else(|| text.to_string());
        (out, c)
    }

    fn streamed(
        p: &std::sync::Arc<Patterns>,
        pieces: &[&str],
        holdback: usize,
    ) -> (String, Counts) {
        let mut s = TextStream::new(p.clone(), Scan::ALL, holdback);
        let mut out = String::new();
        for piece in pieces {
            out.push_str(&s.push(piece));
            assert!(s.held() <= holdback + 96, "held {} > bound", s.held());
        }
        out.push_str(&s.finish());
        (out, s.counts())
    }

    fn chars(t: &str) -> Vec<&str> {
        t.char_indices()
            .map(|(i, c)| &t[i..i + c.len_utf8()])
            .collect()
    }

    #[test]
    fn an_email_split_one_character_per_piece_is_masked_whole() {
        let p = std::sync::Arc::new(Patterns::new());
        let text = "Write to bob.smith@example.com or call (415) 555-0123, thanks!";
        let (out, c) = streamed(&p, &chars(text), 256);
        assert_eq!(
            out,
            "Write to [REDACTED_EMAIL] or call [REDACTED_PHONE], thanks!"
        );
        assert_eq!(c.get(Entity::Email), 1);
        assert_eq!(c.get(Entity::Phone), 1);
    }

    #[test]
    fn clean_prose_is_held_back_one_word_at_most() {
        let p = std::sync::Arc::new(Patterns::new());
        let mut s = TextStream::new(p.clone(), Scan::ALL, 256);
        assert_eq!(s.push("Hello"), "");
        assert_eq!(s.push(" world"), "Hello ");
        assert_eq!(s.push(", how"), "world, ");
        // A word's trailing `?` or `!` may still be a password's: held with the word.
        assert_eq!(s.push(" are you?"), "how are ");
        assert_eq!(s.push("\n"), "you?\n");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn a_private_key_block_is_dropped_whatever_its_length() {
        let p = std::sync::Arc::new(Patterns::new());
        let body: String = (0..40)
            .map(|_| "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt\n")
            .collect();
        let text = format!(
            "key:\n-----BEGIN RSA PRIVATE KEY-----\n{body}-----END RSA PRIVATE KEY-----\nbye"
        );
        let (out, _) = streamed(&p, &chars(&text), 64);
        assert_eq!(out, "key:\n[REDACTED_SECRET]\nbye");
        // Cut short: dropped to the end.
        let cut = format!("key:\n-----BEGIN RSA PRIVATE KEY-----\n{body}");
        let (out, _) = streamed(&p, &chars(&cut), 64);
        assert_eq!(out, "key:\n[REDACTED_SECRET]");
    }

    #[test]
    fn a_token_longer_than_the_holdback_is_still_masked_whole() {
        let p = std::sync::Arc::new(Patterns::new());
        let payload: String = "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0".repeat(8);
        let jwt = format!("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.{payload}.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U");
        let text = format!("token {jwt} end");
        let (out, c) = streamed(&p, &chars(&text), 64);
        assert_eq!(out, "token [REDACTED_SECRET] end");
        assert_eq!(c.get(Entity::Secret), 1);
    }

    /// Splits a cold review found leaking: a cut inside a password, an escape, a URL.
    #[test]
    fn no_cut_falls_inside_a_value_still_being_written() {
        let p = std::sync::Arc::new(Patterns::new());
        for pieces in [
            &["password: p€ss", "w0rd2024\n"][..],
            &["mail &#106;&#9", "7;ne&#64;example.com\n"],
            &["redis://:p%2Fa,s", "s@cache:6379/0\n"],
            &["SSN:", &"&nbsp;".repeat(27), "123456789\n"],
            &["card 4111%C2", "%A01111 1111 1111\n"],
            &["postgres://admin:s3cr#t,", "Pa55@db.internal:5432/app\n"],
            &["password\u{FF1A}Xk9€", "mQ2#vLp\n"],
        ] {
            let text: String = pieces.concat();
            let (want, _) = batch(&p, &text);
            assert_ne!(want, text, "{text:?} has something to mask");
            for holdback in [64, 256] {
                let (got, _) = streamed(&p, pieces, holdback);
                assert_eq!(got, want, "{pieces:?}");
            }
        }
    }

    fn entity() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("bob.smith@example.com".to_string()),
            Just("4111 1111 1111 1111".to_string()),
            Just("4111-1111-1111-1111".to_string()),
            Just("(415) 555-0123".to_string()),
            Just("+44 20 7946 0958".to_string()),
            Just("123-45-6789".to_string()),
            Just("SSN 123456789".to_string()),
            Just("AKIAWBOBYXE3TVGJGRWA".to_string()),
            Just("AKIAWBOBYXE3TVGJGRWA tlhVGhXvNLWOBA5wqY2EFoj4J1oKzwZR5l817Uq4".to_string()),
            Just("sk-proj-Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGh".to_string()),
            Just("ghp_1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R".to_string()),
            Just("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U".to_string()),
            Just("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oK\n-----END EC PRIVATE KEY-----".to_string()),
            Just("https://admin:hunter2@db.example.com/x".to_string()),
            Just("redis://:p~ss!w*rd,x]y@cache:6379/0".to_string()),
            Just("password: Tr0ub!4dor&3x?q".to_string()),
            Just("Authorization: Basic ZGVwbG95Olpxn1J0MldtOUt4NA==".to_string()),
            Just("key=hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh".to_string()),
            Just("redis://:p%2Fa,ss@cache/0".to_string()),
            Just("mail &#106;&#97;ne&#64;example.com".to_string()),
            Just("\"client_secret\": \"Zx9;mQ2#vL€\"".to_string()),
            // Written in other forms (see `fold`).
            Just("4111\u{A0}1111\u{A0}1111\u{A0}1111".to_string()),
            Just("4111\u{200B}1111\u{200B}1111\u{200B}1111".to_string()),
            Just("４１１１ １１１１ １１１１ １１１１".to_string()),
            Just("415\u{2011}555\u{2011}0123".to_string()),
            Just("jane%40example.com".to_string()),
            Just("bob&#64;example&#46;com".to_string()),
            Just("li＠example．org".to_string()),
            Just("123&ndash;45&ndash;6789".to_string()),
            Just(r"mail jane\u0040example\u002ecom".to_string()),
            Just(r"\ud835\udfd2111 1111 1111 1111".to_string()),
            Just(r"https:\/\/admin:hunter2@db.example.com\/x".to_string()),
        ]
    }

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("the".to_string()),
            Just("order 12345".to_string()),
            Just("v1.2.3".to_string()),
            Just("«ça va»".to_string()),
            Just("(see)".to_string()),
            Just("42".to_string()),
            Just("SSN:".to_string()),
            Just("Tom &amp; Jerry".to_string()),
            Just("50% off".to_string()),
            Just("ｈｅｌｌｏ".to_string()),
            Just("1\u{A0}234\u{A0}€".to_string()),
            "[a-z]{1,8}",
        ]
    }

    /// What separates the items of an answer (every token run ends somewhere).
    fn separator() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(" ".to_string()),
            Just(", ".to_string()),
            Just(". ".to_string()),
            Just("\n".to_string()),
            Just("! ".to_string()),
            Just("\"".to_string()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn any_split_of_any_answer_releases_exactly_the_batch_redaction(
            parts in proptest::collection::vec(
                (prop_oneof![entity(), word()], separator()).prop_map(|(a, b)| a + &b),
                1..14,
            ),
            cuts in proptest::collection::vec(0usize..400, 0..40),
            holdback in prop_oneof![Just(256usize), Just(64usize)],
        ) {
            let p = std::sync::Arc::new(Patterns::new());
            let text: String = parts.concat();
            let mut points: Vec<usize> = cuts
                .iter()
                .map(|c| floor_char(&text, c % (text.len() + 1)))
                .collect();
            points.push(0);
            points.push(text.len());
            points.sort_unstable();
            points.dedup();
            let pieces: Vec<&str> = points.windows(2).map(|w| &text[w[0]..w[1]]).collect();
            let (want, want_counts) = batch(&p, &text);
            let (got, got_counts) = streamed(&p, &pieces, holdback);
            prop_assert_eq!(&got, &want, "pieces {:?}", pieces);
            prop_assert_eq!(got_counts, want_counts);
        }
    }
}
