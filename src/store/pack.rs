//! How an audit record is stored compactly. A record is hashed, verified and read as text
//! ([`AuditRow`](super::AuditRow)); on disk, a field whose text has a fixed shape is a tagged
//! BLOB that the text is rebuilt from byte for byte: a UUID in 16 bytes, a SHA-256 hex digest in
//! 32, a sealed field's base64 as the raw ciphertext, JSON details compressed against a fixed
//! dictionary. Anything else, and every record written before this format, is stored as the
//! text itself (SQLite columns take either), so old and new rows sit in one table and one chain.
//!
//! A value is packed only in shapes whose text is rebuilt exactly (canonical UUIDs, hex and
//! base64; the property test below tries near-misses), so the hash of what is read is the hash
//! of what was written. A BLOB that does not unpack, or that is not exactly the BLOB its text
//! packs to (a store edited by hand), reads as `unreadable:<hex>`, which breaks the chain at
//! that row: `sluice audit verify` names it.

use std::cell::RefCell;
use std::sync::LazyLock;

use base64::Engine;
use rusqlite::types::{FromSqlError, ToSqlOutput, ValueRef};

/// A lower-case hyphenated UUID, e.g. a record's `id`, `org_id`, `request_id`.
const UUID: u8 = 1;
/// `key:` and a UUID: a request record's actor.
const KEY_UUID: u8 = 2;
/// 64 lower-case hex digits: `hash`, `prev_hash`.
const HEX32: u8 = 3;
/// `sealed:v1:` and standard base64: a sealed source IP or user agent.
const SEALED_FIELD: u8 = 4;
/// `{"sealed":"<standard base64>"}`: sealed details.
const SEALED_DETAILS: u8 = 5;
/// Text compressed with zstd against [`DICTIONARY`]: details that are not sealed.
const ZSTD_V1: u8 = 6;

/// How a sealed field's text starts (`crate::audit::SEALED`).
const SEALED_PREFIX: &str = "sealed:v1:";
const DETAILS_PREFIX: &str = r#"{"sealed":""#;
const DETAILS_SUFFIX: &str = r#""}"#;

/// The most that unpacking or [`decompress_text`] rebuilds (details are bounded to 8 KiB
/// when written; this bounds what a store edited by hand can make a reader allocate).
const MAX_TEXT: usize = 64 * 1024;

/// How compressed plaintext starts inside a sealed field ([`compress_text`]): JSON text never
/// starts with a NUL byte. The second byte is the dictionary's version.
const COMPRESSED_MARK: [u8; 2] = [0, 1];

/// A zstd dictionary trained on audit details as the data plane writes them
/// (`bench/audit_dictionary.py` made it): a request record's details compress to about a fifth,
/// reusing the dictionary's entropy tables. Fixed forever: records compressed against it are
/// read with it (a test pins its hash). A new dictionary needs a new tag and a new mark.
const DICTIONARY: &[u8] = include_bytes!("audit_details.zdict");

/// zstd's level for details: small records, written on the audit writer's thread.
const LEVEL: i32 = 1;

static ENCODER: LazyLock<Option<zstd::dict::EncoderDictionary<'static>>> =
    LazyLock::new(|| zstd::dict::EncoderDictionary::try_copy(DICTIONARY, LEVEL).ok());
static DECODER: LazyLock<Option<zstd::dict::DecoderDictionary<'static>>> =
    LazyLock::new(|| zstd::dict::DecoderDictionary::try_copy(DICTIONARY).ok());

thread_local! {
    // Made on first use and again after a failure (never a failure kept for the thread's life).
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

fn new_compressor() -> Option<zstd::bulk::Compressor<'static>> {
    let mut c = zstd::bulk::Compressor::with_prepared_dictionary(ENCODER.as_ref()?).ok()?;
    // The frame records its size (a reader sizes its buffer exactly); no checksum (the chain's
    // hash, or the seal's tag, covers it) and no dictionary id (the tag says which).
    use zstd::zstd_safe::CParameter;
    c.set_parameter(CParameter::ChecksumFlag(false)).ok()?;
    c.set_parameter(CParameter::DictIdFlag(false)).ok()?;
    c.set_parameter(CParameter::ContentSizeFlag(true)).ok()?;
    Some(c)
}

/// How every zstd frame starts (RFC 8878): older formats' frames are not read.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// `text` compressed, or `None` when it is too long to be read back ([`MAX_TEXT`]) or zstd
/// cannot be used just now (the text is then stored as it is).
fn zstd_compress(text: &str) -> Option<Vec<u8>> {
    if text.len() > MAX_TEXT {
        return None;
    }
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = new_compressor();
        }
        c.as_mut()?.compress(text.as_bytes()).ok()
    })
}

/// The text of exactly one frame written by [`zstd_compress`] (magic first, nothing after it).
fn zstd_decompress(data: &[u8]) -> Option<String> {
    if !data.starts_with(&ZSTD_MAGIC)
        || zstd::zstd_safe::find_frame_compressed_size(data).ok() != Some(data.len())
    {
        return None;
    }
    let raw = DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = zstd::bulk::Decompressor::with_prepared_dictionary(DECODER.as_ref()?).ok();
        }
        d.as_mut()?.decompress(data, MAX_TEXT).ok()
    })?;
    String::from_utf8(raw).ok()
}

/// `mark` and `text` compressed after it, when that is shorter than `text`.
fn compressed_after(mark: &[u8], text: &str) -> Option<Vec<u8>> {
    let z = zstd_compress(text)?;
    (mark.len() + z.len() < text.len()).then(|| [mark, &z[..]].concat())
}

/// `text` compressed against the dictionary, marked so [`decompress_text`] knows it: for the
/// plaintext of sealed details, which the store only sees encrypted. `None` when it would not
/// be smaller.
pub fn compress_text(text: &str) -> Option<Vec<u8>> {
    compressed_after(&COMPRESSED_MARK, text)
}

/// What [`compress_text`] made, back as text; any other UTF-8 as it is. `None`: neither.
pub fn decompress_text(plain: &[u8]) -> Option<String> {
    match plain.strip_prefix(&COMPRESSED_MARK) {
        Some(z) => zstd_decompress(z),
        None => String::from_utf8(plain.to_vec()).ok(),
    }
}

/// A field as stored: its text, or a tagged BLOB its text is rebuilt from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packed<'a> {
    Text(&'a str),
    Blob(Vec<u8>),
}

impl rusqlite::ToSql for Packed<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Packed::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Packed::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn tagged(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + body.len());
    out.push(tag);
    out.extend_from_slice(body);
    out
}

/// The 16 bytes of a lower-case hyphenated UUID (the only spelling [`uuid_text`] gives back).
fn uuid_bytes(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut n = 0;
    let mut i = 0;
    while i < 36 {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b[i] != b'-' {
                return None;
            }
            i += 1;
            continue;
        }
        out[n] = (lower_hex(b[i])? << 4) | lower_hex(b[i + 1])?;
        n += 1;
        i += 2;
    }
    Some(out)
}

fn uuid_text(b: &[u8]) -> Option<String> {
    let b: [u8; 16] = b.try_into().ok()?;
    Some(uuid::Uuid::from_bytes(b).hyphenated().to_string())
}

/// `bytes` as lowercase hex (a chain hash's text), written into one buffer: `hex::encode`
/// builds its string a character at a time, which cost the audit writer a tenth of its chain
/// hash.
pub fn hex_text(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex::encode_to_slice(bytes, &mut out)
        .ok()
        .and_then(|()| String::from_utf8(out).ok())
        .unwrap_or_else(|| hex::encode(bytes))
}

fn lower_hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex32_bytes(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (lower_hex(b[2 * i])? << 4) | lower_hex(b[2 * i + 1])?;
    }
    Some(out)
}

/// Standard base64 that encodes back to exactly `s`: the decoder takes only the canonical
/// spelling (padding required, no stray bits, no whitespace), so decoding is the check.
fn canonical_b64(s: &str) -> Option<Vec<u8>> {
    b64().decode(s).ok()
}

/// An identity field (id, actor, org, request id, hash, sealed IP or user agent) as stored.
pub fn pack(s: &str) -> Packed<'_> {
    if let Some(u) = uuid_bytes(s) {
        return Packed::Blob(tagged(UUID, &u));
    }
    if let Some(u) = s.strip_prefix("key:").and_then(uuid_bytes) {
        return Packed::Blob(tagged(KEY_UUID, &u));
    }
    if let Some(h) = hex32_bytes(s) {
        return Packed::Blob(tagged(HEX32, &h));
    }
    if let Some(raw) = s.strip_prefix(SEALED_PREFIX).and_then(canonical_b64) {
        return Packed::Blob(tagged(SEALED_FIELD, &raw));
    }
    Packed::Text(s)
}

/// `details` as stored: sealed details as their ciphertext, other JSON compressed when that is
/// smaller.
pub fn pack_details(s: &str) -> Packed<'_> {
    let sealed = s
        .strip_prefix(DETAILS_PREFIX)
        .and_then(|r| r.strip_suffix(DETAILS_SUFFIX))
        .and_then(canonical_b64);
    if let Some(raw) = sealed {
        return Packed::Blob(tagged(SEALED_DETAILS, &raw));
    }
    compressed_after(&[ZSTD_V1], s).map_or(Packed::Text(s), Packed::Blob)
}

/// The text an identity field's BLOB stands for, if it is exactly the BLOB [`pack`] makes of
/// that text. Queries match a value in its text and its packed form only: a second spelling of
/// the same text (another tag, a compressed UUID) would keep a row's hash and hide it from a
/// filter, so it does not read.
fn unpack_field(b: &[u8]) -> Option<String> {
    let (&tag, body) = b.split_first()?;
    let text = match tag {
        UUID => uuid_text(body)?,
        KEY_UUID => format!("key:{}", uuid_text(body)?),
        HEX32 => (body.len() == 32).then(|| hex_text(body))?,
        SEALED_FIELD => format!("{SEALED_PREFIX}{}", b64().encode(body)),
        _ => return None,
    };
    (pack(&text) == Packed::Blob(b.to_vec())).then_some(text)
}

/// The text a `details` BLOB stands for (details are never a query's filter).
fn unpack_details_blob(b: &[u8]) -> Option<String> {
    let (&tag, body) = b.split_first()?;
    match tag {
        SEALED_DETAILS => Some(format!(
            "{DETAILS_PREFIX}{}{DETAILS_SUFFIX}",
            b64().encode(body)
        )),
        ZSTD_V1 => zstd_decompress(body),
        _ => None,
    }
}

fn read(
    v: ValueRef<'_>,
    blob: fn(&[u8]) -> Option<String>,
) -> rusqlite::types::FromSqlResult<String> {
    match v {
        ValueRef::Text(t) => {
            String::from_utf8(t.to_vec()).map_err(|e| FromSqlError::Other(e.into()))
        }
        ValueRef::Blob(b) => {
            Ok(blob(b).unwrap_or_else(|| format!("unreadable:{}", hex::encode(b))))
        }
        ValueRef::Integer(i) => Ok(i.to_string()),
        ValueRef::Real(f) => Ok(f.to_string()),
        ValueRef::Null => Err(FromSqlError::InvalidType),
    }
}

/// An identity field read back as its text (see the module's note on BLOBs that do not unpack).
pub fn unpack(v: ValueRef<'_>) -> rusqlite::types::FromSqlResult<String> {
    read(v, unpack_field)
}

/// An identity field that may be NULL, read back as its text.
pub fn unpack_opt(v: ValueRef<'_>) -> rusqlite::types::FromSqlResult<Option<String>> {
    match v {
        ValueRef::Null => Ok(None),
        v => unpack(v).map(Some),
    }
}

/// `details` read back as its text.
pub fn unpack_details(v: ValueRef<'_>) -> rusqlite::types::FromSqlResult<String> {
    read(v, unpack_details_blob)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(s: &str) -> String {
        match pack(s) {
            Packed::Text(t) => t.to_string(),
            Packed::Blob(b) => unpack_field(&b).expect("a packed value unpacks"),
        }
    }

    fn round_details(s: &str) -> String {
        match pack_details(s) {
            Packed::Text(t) => t.to_string(),
            Packed::Blob(b) => unpack_details_blob(&b).expect("packed details unpack"),
        }
    }

    #[test]
    fn fixed_shapes_are_packed_small_and_read_back_exactly() {
        let id = uuid::Uuid::now_v7().to_string();
        let hash = "d7cdc7041d76b78f34a3cb8e5d1f25db04b7ffe5c5aaccd37930892d01e57d04";
        let sealed = format!("{SEALED_PREFIX}{}", b64().encode([7u8; 37]));
        let details = format!(r#"{{"sealed":"{}"}}"#, b64().encode([9u8; 120]));
        for (s, len) in [
            (id.clone(), 17),
            (format!("key:{id}"), 17),
            (hash.to_string(), 33),
            (sealed.clone(), 38),
        ] {
            match pack(&s) {
                Packed::Blob(b) => assert_eq!(b.len(), len, "{s}"),
                other => panic!("{s} not packed: {other:?}"),
            }
            assert_eq!(round(&s), s);
        }
        assert!(matches!(pack_details(&details), Packed::Blob(b) if b.len() == 121));
        assert_eq!(round_details(&details), details);
    }

    #[test]
    fn near_misses_are_stored_as_the_text_they_are() {
        let id = "01a24cd4-86b6-7562-8e8e-ff830c803d1c";
        let upper = id.to_uppercase();
        let nohyphen = id.replace('-', "");
        let hash = "d7cdc7041d76b78f34a3cb8e5d1f25db04b7ffe5c5aaccd37930892d01e57d04";
        let cases = [
            upper.clone(),
            format!("{{{id}}}"),
            nohyphen,
            format!("urn:uuid:{id}"),
            format!("key:{upper}"),
            format!("Key:{id}"),
            format!("user:{id}"),
            id.replace('-', "+"),
            hash.to_uppercase(),
            hash[..63].to_string(),
            format!("{hash}0"),
            // Base64 that decodes but is not how it would be written again.
            format!("{SEALED_PREFIX}AB=="),
            format!("{SEALED_PREFIX}QUJD"),
            format!("{SEALED_PREFIX}QUJ"),
            format!("{SEALED_PREFIX}QU Jd"),
            SEALED_PREFIX.to_string(),
            "sealed:v2:QUJD".to_string(),
            String::new(),
            "203.0.113.7".to_string(),
            "unreadable:0102".to_string(),
            "é".repeat(40),
        ];
        for s in cases {
            assert_eq!(round(&s), s, "{s:?}");
        }
        assert!(matches!(pack(&upper), Packed::Text(_)));
        for d in [
            r#"{"sealed":"AB=="}"#.to_string(),
            r#"{"sealed":"QUJD","x":1}"#.to_string(),
            r#"{ "sealed":"QUJD"}"#.to_string(),
            r#"{"sealed":"QUJD"} "#.to_string(),
            r#"{"name":"acme"}"#.to_string(),
            "{}".to_string(),
            String::new(),
            format!(r#"{{"path":"{}"}}"#, "\u{1F600}".repeat(200)),
        ] {
            assert_eq!(round_details(&d), d, "{d:?}");
        }
    }

    #[test]
    fn request_details_compress_against_the_dictionary() {
        let d = r#"{"method":"POST","path":"/v1/chat/completions","route":"chat_completions","key_id":"01a24cd0-4519-75d7-8c20-1e52ad9f33ae","model":"gpt-4o-mini","region":"us","upstream":"mock","status":200,"code":null,"latency_ms":1.234,"bytes_in":1900,"bytes_out":412,"redactions":{"email":0,"ssn":0,"phone":0,"card":0,"secret":0},"response_redactions":{"email":0,"ssn":0,"phone":0,"card":0,"secret":0},"usage":{"input_tokens":480,"output_tokens":12}}"#;
        let z = compress_text(d).expect("smaller");
        assert!(z.len() < 130, "{} bytes", z.len());
        assert_eq!(decompress_text(&z).as_deref(), Some(d));
        assert_eq!(round_details(d), d);
        assert!(matches!(pack_details(d), Packed::Blob(b) if b.len() < 130));
        // Plain JSON reads as itself; a short one is not worth compressing.
        assert_eq!(decompress_text(b"{}").as_deref(), Some("{}"));
        assert_eq!(compress_text("{}"), None);
    }

    #[test]
    fn the_dictionary_is_the_one_records_were_compressed_with() {
        use sha2::Digest;
        assert_eq!(
            hex::encode(sha2::Sha256::digest(DICTIONARY)),
            "21957fc833b47d3bf43495cbe5113175bce499c051e3d39a7d5ad68f0920f1b8",
            "records compressed against the old dictionary could not be read: add a new tag"
        );
        assert!(ENCODER.is_some() && DECODER.is_some());
    }

    #[test]
    fn whatever_is_packed_reads_back_as_it_was_written() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(41);
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=- ";
        const HEX: &[u8] = b"0123456789abcdefABCDEF-g";
        let mut packed = 0;
        for i in 0..20_000 {
            let (alphabet, len) = match i % 3 {
                0 => (B64, rng.gen_range(0..12)),
                1 => (HEX, [36, 64, 35, 37, 63][rng.gen_range(0..5)]),
                _ => (B64, rng.gen_range(0..40)),
            };
            let mut body: String = (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
                .collect();
            if i % 3 == 1 && len == 36 && rng.gen_bool(0.7) {
                // Mostly well-placed hyphens, so that near-UUIDs are tried too.
                for p in [8, 13, 18, 23] {
                    body.replace_range(p..p + 1, "-");
                }
            }
            for s in [
                body.clone(),
                format!("key:{body}"),
                format!("{SEALED_PREFIX}{body}"),
            ] {
                if matches!(pack(&s), Packed::Blob(_)) {
                    packed += 1;
                }
                assert_eq!(round(&s), s, "{s:?}");
            }
            let d = format!(r#"{{"sealed":"{body}"}}"#);
            assert_eq!(round_details(&d), d, "{d:?}");
        }
        assert!(
            packed > 2_000,
            "the generator reaches the packed shapes: {packed}"
        );
    }

    #[test]
    fn blobs_that_do_not_unpack_read_as_unreadable_and_bounded() {
        let unreadable = |s: String| assert!(s.starts_with("unreadable:"), "{s}");
        for b in [
            vec![],
            vec![0u8],
            vec![UUID, 1, 2],
            vec![HEX32; 5],
            vec![ZSTD_V1, 1, 2, 3],
            vec![99, 1],
        ] {
            unreadable(unpack(ValueRef::Blob(&b)).unwrap());
            unreadable(unpack_details(ValueRef::Blob(&b)).unwrap());
        }
        // Text longer than a reader rebuilds is not compressed at all (stored as it is).
        let big = "x".repeat(MAX_TEXT + 1);
        assert_eq!(pack_details(&big), Packed::Text(&big));
        assert_eq!(compress_text(&big), None);
        // A frame that claims more than a reader allocates is refused, not inflated.
        let mut frame = zstd_compress(&"x".repeat(MAX_TEXT)).unwrap();
        let one = frame.clone();
        assert_eq!(zstd_decompress(&one).map(|t| t.len()), Some(MAX_TEXT));
        frame.extend_from_slice(&zstd_compress("{}").unwrap());
        // Two frames, trailing bytes, or an older format's magic: not read.
        unreadable(unpack_details(ValueRef::Blob(&tagged(ZSTD_V1, &frame))).unwrap());
        let trailing = [&one[..], b"x"].concat();
        unreadable(unpack_details(ValueRef::Blob(&tagged(ZSTD_V1, &trailing))).unwrap());
        let legacy = [&[0x27, 0xb5, 0x2f, 0xfd][..], &one[4..]].concat();
        unreadable(unpack_details(ValueRef::Blob(&tagged(ZSTD_V1, &legacy))).unwrap());
        assert_eq!(decompress_text(&[0, 1, 2, 3]), None);
        assert_eq!(decompress_text(&[0xff, 0xfe]), None);
    }

    #[test]
    fn a_field_reads_only_in_the_one_form_its_text_packs_to() {
        // Another spelling of the same text would keep the row's hash and slip past a filter
        // that matches the text and its packed form.
        let org = "01a24cd0-4511-76b7-8e64-78624ba6fdd3";
        let Packed::Blob(canonical) = pack(org) else {
            panic!("a UUID packs")
        };
        assert_eq!(unpack(ValueRef::Blob(&canonical)).unwrap(), org);
        assert_eq!(unpack(ValueRef::Text(org.as_bytes())).unwrap(), org);
        let compressed = tagged(ZSTD_V1, &zstd_compress(org).unwrap());
        let as_details = tagged(SEALED_DETAILS, &canonical[1..]);
        for other in [compressed, as_details] {
            assert!(unpack(ValueRef::Blob(&other))
                .unwrap()
                .starts_with("unreadable:"));
        }
        // Another tag over the same bytes is another text (and so another hash).
        let as_sealed = tagged(SEALED_FIELD, &canonical[1..]);
        assert_ne!(unpack(ValueRef::Blob(&as_sealed)).unwrap(), org);
        // Details take only their own tags.
        assert!(unpack_details(ValueRef::Blob(&canonical))
            .unwrap()
            .starts_with("unreadable:"));
    }
}
