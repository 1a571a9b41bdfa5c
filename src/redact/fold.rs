//! What the patterns read: text folded to the ASCII it stands for, so a value written with
//! other characters or in an encoding is found as if written plainly, and its whole original
//! span is replaced.
//!
//! Folded, one level (what a model, a browser or a URL decoder reads as the character):
//! - compatibility forms, as NFKD has them when they decompose to ASCII: full-width digits,
//!   letters and signs (`４`, `＠`, `．`), no-break, figure, thin, narrow and ideographic spaces
//!   (to a space), mathematical digits;
//! - the decimal digits of other scripts (Arabic-Indic, Devanagari, Thai, ...) to ASCII digits;
//! - dashes and hyphens (non-breaking hyphen, en and em dash, minus sign) to `-`; other
//!   spaces and line separators (U+1680, U+2028, U+2029, U+0085) to a space; the ideographic
//!   full stop to `.`;
//! - invisible characters (Unicode's Default_Ignorable_Code_Point: zero-width space and joiners,
//!   soft hyphen, bidirectional controls, variation selectors, tags) removed, except that one
//!   between a letter or digit and a digit separates them as a `-` does;
//! - percent escapes (`%40`, a UTF-8 sequence `%C2%A0`), HTML character references (`&#64;`,
//!   `&#x40;`, `&commat;`, `&nbsp;`) and JSON string escapes (`\u0040`, a surrogate pair, `\/`:
//!   what a client reads in JSON that a string holds, such as streamed tool-call arguments)
//!   decoded, then folded as above (a decoded `%`, `&` or `\` is not decoded again).
//!
//! Text that holds none of these (ASCII without `%`, `&` or `\`, or only characters that fold
//! to themselves) is not copied: [`fold`] returns `None` after one read.

use unicode_normalization::char::decompose_compatible;

/// Text folded for matching, and where each of its bytes came from.
pub(super) struct Folded {
    pub text: String,
    /// An invisible character was read as a `-` (between a letter or digit and a digit).
    pub dashed: bool,
    /// `orig[k]`: where in the original the unit that produced byte `k` starts; one more
    /// entry, the original's length.
    orig: Vec<u32>,
}

impl Folded {
    /// The original span of the folded span `s..e` (`s < e`): from the start of the unit of
    /// byte `s` to the start of the unit after byte `e - 1` (a removed invisible character
    /// right after the span goes with it).
    pub fn span(&self, s: usize, e: usize) -> (usize, usize) {
        // A match that ends inside what one unit folded to ("⒐" -> "9.") takes the unit.
        let mut j = e;
        while j < self.text.len() && self.orig[j] == self.orig[e - 1] {
            j += 1;
        }
        (self.orig[s] as usize, self.orig[j] as usize)
    }

    /// How many folded bytes come from the original text before offset `k` (`k` at a unit
    /// boundary): the folded offset of `k`.
    pub fn units_before(&self, k: usize) -> usize {
        self.orig[..self.orig.len() - 1].partition_point(|&o| (o as usize) < k)
    }

    /// The original offset of a folded offset that starts a unit (or is the end).
    pub fn at(&self, k: usize) -> usize {
        self.orig[k] as usize
    }
}

/// Whether [`fold`] could change `text` at all (a non-ASCII byte, `%`, `&` or `\`), and if
/// so whether it is all ASCII.
fn scan(text: &str) -> Option<bool> {
    let b = text.as_bytes();
    if b.len() < 64 {
        // Short strings (JSON keys, roles, model names): a plain loop beats the SIMD setup.
        let mut any = false;
        let mut ascii = true;
        for &c in b {
            ascii &= c < 0x80;
            any |= c >= 0x80 || c == b'%' || c == b'&' || c == b'\\';
        }
        return any.then_some(ascii);
    }
    if !text.is_ascii() {
        return Some(false);
    }
    memchr::memchr3(b'%', b'&', b'\\', b).map(|_| true)
}

/// `text` folded, or `None` when folding changes nothing.
pub(super) fn fold(text: &str) -> Option<Folded> {
    fold_with(text, true)
}

/// [`fold`]; `dashes`: read an invisible character between a letter or digit and a digit as
/// a `-` (digit groups), or remove it like the others (a key's characters: `ghp_1a\u{200B}2B`).
pub(super) fn fold_with(text: &str, dashes: bool) -> Option<Folded> {
    let ascii = scan(text)?;
    let mut dashed = false;
    if text.len() >= u32::MAX as usize {
        return None;
    }
    let b = text.as_bytes();
    let mut out: Option<Folded> = None;
    let mut i = 0;
    let mut buf = String::new();
    while i < b.len() {
        // Plain ASCII up to the next unit that may fold, copied as a run; a `%`, `&` or `\`
        // that starts no escape (`12.5% `, `Q&A`, `\n`) is plain too.
        let mut j = next_special(b, i, ascii);
        while j < b.len() && plain_sign(b, j) {
            j = next_special(b, j + 1, ascii);
        }
        if let Some(f) = out.as_mut() {
            f.text.push_str(&text[i..j]);
            f.orig.extend(i as u32..j as u32);
        }
        i = j;
        if i == b.len() {
            break;
        }
        buf.clear();
        let len = unit(text, i, &mut buf);
        if buf.is_empty() {
            // An invisible character between a letter or digit and a digit separates groups
            // ("4111\u{200B}1111", a soft hyphen, "SSN\u{200B}123456789"): a dash; elsewhere
            // nothing ("jane\u{200B}@example.com", "4111\u{200B} 1111", "123\u{200B}-45").
            let last = match out.as_ref() {
                Some(f) => f.text.as_bytes().last().copied(),
                None => i.checked_sub(1).map(|k| b[k]),
            };
            let next = || {
                let mut next = String::new();
                if i + len < b.len() {
                    unit(text, i + len, &mut next);
                }
                next.starts_with(|c: char| c.is_ascii_digit())
            };
            if dashes && last.is_some_and(|c| c.is_ascii_alphanumeric()) && next() {
                buf.push('-');
                dashed = true;
            }
        }
        let same = buf.as_bytes() == &b[i..i + len];
        if !same && out.is_none() {
            let mut f = Folded {
                text: String::with_capacity(text.len()),
                dashed: false,
                orig: Vec::with_capacity(text.len() + 1),
            };
            f.text.push_str(&text[..i]);
            f.orig.extend(0..i as u32);
            out = Some(f);
        }
        if let Some(f) = out.as_mut() {
            f.text.push_str(&buf);
            f.orig.extend(std::iter::repeat_n(i as u32, buf.len()));
        }
        i += len;
    }
    let mut f = out?;
    f.orig.push(b.len() as u32);
    f.dashed = dashed;
    Some(f)
}

/// The index of the next byte at or after `from` that may start a folded unit: `%`, `&`,
/// `\` or (unless the text is all ASCII) a non-ASCII byte; the length when there is none.
/// Eight bytes at a time while a word holds none.
fn next_special(b: &[u8], from: usize, ascii: bool) -> usize {
    if ascii {
        return memchr::memchr3(b'%', b'&', b'\\', &b[from..]).map_or(b.len(), |k| from + k);
    }
    const L: u64 = 0x0101_0101_0101_0101;
    const H: u64 = 0x8080_8080_8080_8080;
    let has = |x: u64, c: u8| {
        let y = x ^ (L * c as u64);
        y.wrapping_sub(L) & !y & H != 0
    };
    let mut i = from;
    while let Some(w) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
        if x & H != 0 || has(x, b'%') || has(x, b'&') || has(x, b'\\') {
            break;
        }
        i += 8;
    }
    i + b[i..]
        .iter()
        .position(|&c| c >= 0x80 || c == b'%' || c == b'&' || c == b'\\')
        .unwrap_or(b.len() - i)
}

/// Whether the `%`, `&` or `\` at `b[j]` cannot start an escape: `%` not followed by a hex
/// digit, `&` not followed by `#` or a letter, `\` not followed by `u` or `/`.
fn plain_sign(b: &[u8], j: usize) -> bool {
    match (b[j], b.get(j + 1)) {
        (b'%', next) => !next.is_some_and(u8::is_ascii_hexdigit),
        (b'&', next) => !next.is_some_and(|c| *c == b'#' || c.is_ascii_alphabetic()),
        (b'\\', next) => !matches!(next, Some(b'u' | b'/')),
        _ => false,
    }
}

/// Fold the unit at `text[i]` (a non-ASCII character, `%`, `&` or `\`) into `out`; its
/// length in the original.
fn unit(text: &str, i: usize, out: &mut String) -> usize {
    let b = text.as_bytes();
    match b[i] {
        b'%' => {
            if let Some((c, len)) = percent(b, i) {
                fold_char(c, out);
                return len;
            }
            out.push('%');
            1
        }
        b'&' => {
            if let Some((c, len)) = reference(b, i) {
                fold_char(c, out);
                return len;
            }
            out.push('&');
            1
        }
        b'\\' => {
            if let Some((c, len)) = json_escape(b, i) {
                fold_char(c, out);
                return len;
            }
            out.push('\\');
            1
        }
        _ => {
            // A UTF-8 character (the text is a str, so `i` starts one).
            let c = text[i..].chars().next().unwrap_or('\u{FFFD}');
            fold_char(c, out);
            c.len_utf8()
        }
    }
}

/// The character one decoded unit stands for, folded: appended to `out`.
fn fold_char(c: char, out: &mut String) {
    if c.is_ascii() {
        out.push(c);
        return;
    }
    if let Some(a) = simple(c) {
        if let Some(a) = a {
            out.push(a);
        }
        return;
    }
    // A compatibility decomposition made only of ASCII (after the simple folds): `４` -> `4`,
    // NBSP -> ` `, `𝟕` -> `7`, U+2011 -> U+2010 -> `-`.
    let mut folded = [0u8; 4];
    let mut n = 0;
    let mut ascii = true;
    decompose_compatible(c, |d| {
        let a = if d.is_ascii() {
            Some(d)
        } else {
            simple(d).flatten()
        };
        match a {
            Some(a) if n < folded.len() => {
                folded[n] = a as u8;
                n += 1;
            }
            _ => ascii = false,
        }
    });
    if ascii && n > 0 {
        out.extend(folded[..n].iter().map(|&x| x as char));
    } else {
        out.push(c);
    }
}

/// Folds NFKD does not make: `Some(None)` to remove the character, `Some(Some(a))` for its
/// ASCII character, `None` when neither applies.
fn simple(c: char) -> Option<Option<char>> {
    let u = c as u32;
    if default_ignorable(u) {
        return Some(None);
    }
    let a = match u {
        0x2010..=0x2015 | 0x2043 | 0x2212 | 0x2796 | 0x2E3A | 0x2E3B | 0xFE58 | 0xFE63 => '-',
        0x0085 | 0x1680 | 0x2028 | 0x2029 => ' ',
        0x3002 | 0xFF61 => '.',
        _ => return digit(u).map(Some),
    };
    Some(Some(a))
}

/// A decimal digit of another script (Unicode category Nd, the blocks a model reads as digits).
fn digit(u: u32) -> Option<char> {
    const ZEROS: &[u32] = &[
        0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6,
        0x0D66, 0x0DE6, 0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0,
        0x1A80, 0x1A90, 0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0,
        0xAA50, 0xABF0, 0x104A0, 0x11066, 0x1E950,
    ];
    ZEROS
        .iter()
        .find(|&&z| (z..z + 10).contains(&u))
        .map(|&z| (b'0' + (u - z) as u8) as char)
}

/// Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt): characters that render
/// as nothing.
fn default_ignorable(u: u32) -> bool {
    matches!(
        u,
        0x00AD
            | 0x034F
            | 0x061C
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFF8
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// The percent escape at `b[i]`: one `%XX` of an ASCII byte, or the `%XX` sequence of one
/// UTF-8 character; the character and the escape's length.
fn percent(b: &[u8], i: usize) -> Option<(char, usize)> {
    let byte = |k: usize| -> Option<u8> {
        let at = i + 3 * k;
        if b.get(at) != Some(&b'%') {
            return None;
        }
        Some(hex(*b.get(at + 1)?)? << 4 | hex(*b.get(at + 2)?)?)
    };
    let first = byte(0)?;
    let n = match first {
        0x00..=0x7F => 1,
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return None,
    };
    let mut bytes = [first, 0, 0, 0];
    for (k, slot) in bytes.iter_mut().enumerate().take(n).skip(1) {
        *slot = byte(k)?;
    }
    let c = std::str::from_utf8(&bytes[..n]).ok()?.chars().next()?;
    Some((c, 3 * n))
}

/// The JSON string escape at `b[i]` that stands for a character a pattern may read (`\u0040`,
/// a surrogate pair `\uD83D\uDE00`, `\/`): the character and the escape's length. A lone
/// surrogate is no character: not an escape.
fn json_escape(b: &[u8], i: usize) -> Option<(char, usize)> {
    match b.get(i + 1)? {
        b'/' => Some(('/', 2)),
        b'u' => {
            let u = hex4(b, i + 2)?;
            if HIGH_SURROGATES.contains(&u) {
                if b.get(i + 6..i + 8)? != b"\\u" {
                    return None;
                }
                let low = hex4(b, i + 8)?;
                if !(0xDC00..0xE000).contains(&low) {
                    return None;
                }
                let c = char::from_u32(0x10000 + ((u - 0xD800) << 10) + (low - 0xDC00))?;
                return Some((c, 12));
            }
            Some((char::from_u32(u)?, 6))
        }
        _ => None,
    }
}

/// The code units a UTF-16 pair starts with.
const HIGH_SURROGATES: std::ops::Range<u32> = 0xD800..0xDC00;

/// The four hex digits at `b[at..]`, as a number.
fn hex4(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)?
        .iter()
        .try_fold(0u32, |n, &c| Some(n << 4 | u32::from(hex(c)?)))
}

/// Whether `e` is exactly a JSON escape of a high surrogate (`\uD83D`): the first half of a
/// character whose second half may follow.
pub(super) fn is_high_surrogate_escape(e: &[u8]) -> bool {
    e.len() == 6
        && e.starts_with(b"\\u")
        && hex4(e, 2).is_some_and(|u| HIGH_SURROGATES.contains(&u))
}

/// The HTML character reference at `b[i]` (`&#64;`, `&#x40;`, `&commat;`; the `;` of a
/// numeric one may be missing, as HTML allows): the character and the reference's length.
fn reference(b: &[u8], i: usize) -> Option<(char, usize)> {
    let rest = &b[i + 1..];
    if rest.first() == Some(&b'#') {
        let (radix, from) = match rest.get(1) {
            Some(b'x' | b'X') => (16, 2),
            _ => (10, 1),
        };
        // Leading zeros are allowed (`&#00064;`); at most 7 significant digits.
        let zeros = rest[from..]
            .iter()
            .take(32)
            .take_while(|&&c| c == b'0')
            .count();
        let max = if radix == 16 { 6 } else { 7 };
        let n = rest[from + zeros..]
            .iter()
            .take(max)
            .take_while(|c| (**c as char).is_digit(radix))
            .count();
        if zeros + n == 0
            || rest
                .get(from + zeros + n)
                .is_some_and(|c| (*c as char).is_digit(radix))
        {
            return None;
        }
        let digits = std::str::from_utf8(&rest[from + zeros..from + zeros + n]).ok()?;
        let value = if n == 0 {
            0
        } else {
            u32::from_str_radix(digits, radix).ok()?
        };
        // HTML reads 128 to 159 as Windows-1252 (`&#150;` is an en dash).
        let c = windows_1252(value)
            .or_else(|| char::from_u32(value))
            .filter(|&c| c != '\0')?;
        let len = from + zeros + n;
        let semi = usize::from(rest.get(len) == Some(&b';'));
        return Some((c, 1 + len + semi));
    }
    let n = rest
        .iter()
        .take(16)
        .take_while(|c| c.is_ascii_alphanumeric())
        .count();
    if n == 0 || rest.get(n) != Some(&b';') {
        return None;
    }
    let c = named(&rest[..n])?;
    Some((c, 1 + n + 1))
}

/// What HTML reads a numeric reference from 128 to 159 as (the Windows-1252 characters; the
/// dashes, quotes and spaces that matter here).
fn windows_1252(value: u32) -> Option<char> {
    Some(match value {
        0x82 => '\u{201A}',
        0x8B => '\u{2039}',
        0x91 => '\u{2018}',
        0x92 => '\u{2019}',
        0x93 => '\u{201C}',
        0x94 => '\u{201D}',
        0x95 => '\u{2022}',
        0x96 => '\u{2013}',
        0x97 => '\u{2014}',
        0x9B => '\u{203A}',
        0x80..=0x9F => '\u{FFFD}',
        _ => return None,
    })
}

/// The HTML named references that stand for characters an entity is written with.
fn named(name: &[u8]) -> Option<char> {
    Some(match name {
        b"commat" => '@',
        b"period" => '.',
        b"hyphen" | b"dash" => '\u{2010}',
        b"ndash" => '\u{2013}',
        b"mdash" => '\u{2014}',
        b"minus" => '\u{2212}',
        b"plus" => '+',
        b"lowbar" | b"UnderBar" => '_',
        b"num" => '#',
        b"colon" => ':',
        b"sol" => '/',
        b"lpar" => '(',
        b"rpar" => ')',
        b"percnt" => '%',
        b"amp" | b"AMP" => '&',
        b"nbsp" | b"NonBreakingSpace" => '\u{A0}',
        b"ensp" => '\u{2002}',
        b"emsp" => '\u{2003}',
        b"thinsp" | b"ThinSpace" => '\u{2009}',
        b"numsp" => '\u{2007}',
        b"puncsp" => '\u{2008}',
        b"hairsp" | b"VeryThinSpace" => '\u{200A}',
        b"Tab" => '\t',
        b"NewLine" => '\n',
        b"shy" => '\u{AD}',
        b"zwnj" => '\u{200C}',
        b"zwj" => '\u{200D}',
        b"ZeroWidthSpace" => '\u{200B}',
        b"NoBreak" => '\u{2060}',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> String {
        fold(s).map_or_else(|| s.to_string(), |f| f.text)
    }

    #[test]
    fn the_next_special_byte_is_found_wherever_it_is() {
        let all: Vec<u8> = (0u8..=255).collect();
        for from in 0..all.len() {
            let want = all[from..]
                .iter()
                .position(|&c| c >= 0x80 || c == b'%' || c == b'&' || c == b'\\')
                .map_or(all.len(), |k| from + k);
            assert_eq!(next_special(&all, from, false), want, "from {from}");
        }
        let t = b"plain text, then 50% and more & done";
        assert_eq!(next_special(t, 0, true), 19);
        assert_eq!(next_special(t, 20, true), 30);
        assert_eq!(next_special(t, 31, true), t.len());
    }

    #[test]
    fn plain_text_is_not_copied() {
        assert!(fold("plain ascii, 100 percent").is_none());
        assert!(fold("café naïve 日本語").is_none());
    }

    #[test]
    fn separators_digits_and_signs_fold_to_ascii() {
        assert_eq!(
            f("4111\u{A0}1111\u{202F}1111\u{2009}1111"),
            "4111 1111 1111 1111"
        );
        assert_eq!(
            f("4111\u{2007}1111\u{3000}1111\u{2002}1111"),
            "4111 1111 1111 1111"
        );
        assert_eq!(f("415\u{2011}555\u{2013}0123"), "415-555-0123");
        assert_eq!(f("123\u{2212}45\u{2014}6789"), "123-45-6789");
        assert_eq!(
            f("4111\u{200B}1111\u{AD}1111\u{2060}\u{200D}1111"),
            "4111-1111-1111-1111"
        );
        assert_eq!(f("jane\u{200B}@exa\u{AD}mple.com"), "jane@example.com");
        assert_eq!(f("４１１１ １１１１"), "4111 1111");
        assert_eq!(f("jane＠example．com"), "jane@example.com");
        assert_eq!(f("jane﹫example。com"), "jane@example.com");
        assert_eq!(f("٤١١١ ۱۱۱۱ ४१११ 𝟒𝟏𝟏𝟏"), "4111 1111 4111 4111");
        assert_eq!(f("a\u{202E}b\u{E0041}c\u{FE0F}"), "abc");
    }

    #[test]
    fn encodings_are_decoded_one_level() {
        assert_eq!(f("jane%40example.com"), "jane@example.com");
        assert_eq!(f("jane&#64;example&#x2E;com"), "jane@example.com");
        assert_eq!(f("jane&commat;example&period;com"), "jane@example.com");
        assert_eq!(f("4111%201111%C2%A01111&nbsp;1111"), "4111 1111 1111 1111");
        assert_eq!(f("&#64"), "@");
        assert_eq!(f("jane&#00000064;x&#x0000040;y"), "jane@x@y");
        assert_eq!(f("123&#150;45&#x96;6789"), "123-45-6789");
        assert_eq!(
            f("4111\u{200B} 1111 123\u{200B}-45 A1\u{200B}B2"),
            "4111 1111 123-45 A1B2"
        );
        // One level only, and what is not an escape stays.
        assert_eq!(
            f("%2540 &amp;#64; 50% &unknown; %zz %C2"),
            "%40 &#64; 50% &unknown; %zz %C2"
        );
        assert_eq!(f("&#0; &#xD800; &#99999999;"), "&#0; &#xD800; &#99999999;");
        // JSON string escapes (JSON held in a string, streamed tool-call arguments).
        assert_eq!(f(r"jane\u0040example\u002Ecom"), "jane@example.com");
        assert_eq!(f(r"https:\/\/x.example\/a"), "https://x.example/a");
        assert_eq!(f(r"\uFF14111 \ud835\udfd2"), "4111 4");
        assert_eq!(
            f(r#"\n \" \u12 \uD800x \uDC00 \u005cu0040"#),
            r#"\n \" \u12 \uD800x \uDC00 \u0040"#
        );
    }

    #[test]
    fn spans_map_back_to_whole_units() {
        let t = "mail jane%40example&#46;com\u{200B} now";
        let fo = fold(t).unwrap();
        let s = fo.text.find("jane").unwrap();
        let e = fo.text.find(" now").unwrap();
        let (a, z) = fo.span(s, e);
        // The trailing invisible character goes with the span.
        assert_eq!(&t[a..z], "jane%40example&#46;com\u{200B}");
        assert_eq!(fo.at(fo.text.len()), t.len());
        // A match ending inside a unit's folding takes the whole unit.
        let t = "SSN 123-45-678\u{2490} x";
        let fo = fold(t).unwrap();
        assert_eq!(fo.text, "SSN 123-45-6789. x");
        let e = fo.text.find('9').unwrap() + 1;
        assert_eq!(&t[fo.span(4, e).0..fo.span(4, e).1], "123-45-678\u{2490}");
    }
}
