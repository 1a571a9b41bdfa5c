//! Encoded secrets: long runs of token characters, decoded (base64, hex, percent) and scanned again.

/// The shortest run of token characters read for [`super::PREFIXED`], [`super::SIGNED`] and Entra tokens
/// and encoded secrets: the shortest of them (`gldt-` and 20) is longer.
pub(super) const RUN_MIN: usize = 24;

/// Runs longer than this are not searched for [`super::PREFIXED`] and [`super::SIGNED`] anchors (a key
/// glued inside 64 KiB of base64 is not one a person wrote).
pub(super) const RUN_SCAN_MAX: usize = 64 * 1024;

/// `[A-Za-z0-9_.~+/=-]`: the characters of every token [`super::Rules::runs`] reads.
pub(super) fn is_run_char(c: u8) -> bool {
    RUN_CHARS[c as usize]
}

pub(super) static RUN_CHARS: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(b, b'_' | b'-' | b'.' | b'~' | b'+' | b'/' | b'=');
        c += 1;
    }
    t
};

/// Call `f` on every maximal run of at least [`RUN_MIN`] token characters, in order; `f`
/// returns where the search goes on (the run's end, or past it).
///
/// Every such run holds a whole 8-byte block starting at a multiple of 16 (its first 17
/// starts include one, and 8 more fit): only those blocks are looked at, and one holding a
/// space, a control byte or a non-ASCII byte (prose: nearly every block) is passed over with
/// one word operation.
pub(super) fn for_each_run(b: &[u8], mut f: impl FnMut(usize, usize) -> usize) {
    const L: u64 = 0x0101_0101_0101_0101;
    const H: u64 = 0x8080_8080_8080_8080;
    let mut blk = 0;
    let mut last_end = 0;
    // Exactly when a byte is below 0x21 (the subtraction borrows) or above 0x7F.
    let low_or_high = |x: u64| (x.wrapping_sub(L * 0x21) | x) & H != 0;
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    while blk + 8 <= b.len() {
        // Two blocks at a time while both can be passed over.
        if blk + 24 <= b.len() && low_or_high(word(blk)) && low_or_high(word(blk + 16)) {
            blk += 32;
            continue;
        }
        if blk < last_end
            || low_or_high(word(blk))
            || !b[blk..blk + 8].iter().all(|&c| is_run_char(c))
        {
            blk += 16;
            continue;
        }
        let mut s = blk;
        while s > last_end && is_run_char(b[s - 1]) {
            s -= 1;
        }
        let mut e = blk + 8;
        while e < b.len() && is_run_char(b[e]) {
            e += 1;
        }
        if e - s >= RUN_MIN {
            e = e.max(f(s, e));
        }
        last_end = e;
        blk = (e + 1).next_multiple_of(16);
    }
}

/// The shortest encoded run decoded (18 bytes decoded: shorter than any key it could hold
/// with its name) and the longest (a private key or a `.env` file; longer runs, images and
/// archives, are not decoded).
pub(super) const ENCODED_MIN: usize = 24;
pub(super) const ENCODED_MAX: usize = 16 * 1024;

/// A base64 or base64url character (padding apart).
pub(super) fn is_encoded_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'_' | b'-')
}

/// `run` decoded as base64 (standard or URL-safe, padding optional), when it is text: valid
/// UTF-8, printable but for line ends and tabs. Cheap refusals first: a run of one case only
/// (words, hex, identifiers) is not tried.
pub(super) fn decode_text(run: &[u8]) -> Option<String> {
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::DecodePaddingMode;
    use base64::Engine as _;
    let upper = run.iter().any(u8::is_ascii_uppercase);
    let lower = run.iter().any(u8::is_ascii_lowercase);
    if !(upper && lower) {
        return None;
    }
    let url = run.iter().any(|&c| c == b'-' || c == b'_');
    let standard = run.iter().any(|&c| c == b'+' || c == b'/');
    if url && standard {
        return None;
    }
    let config = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    let engine = if url {
        GeneralPurpose::new(&base64::alphabet::URL_SAFE, config)
    } else {
        GeneralPurpose::new(&base64::alphabet::STANDARD, config)
    };
    // One character over a multiple of four holds no whole byte (a run cut short): dropped.
    let usable = if run.len() % 4 == 1 {
        run.len() - 1
    } else {
        run.len()
    };
    let bytes = engine.decode(&run[..usable]).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.chars()
        .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
        .then_some(text)
}
