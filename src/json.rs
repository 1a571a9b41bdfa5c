//! JSON read one way: a document with an object that names a member twice is refused, not read
//! as its last (or first) occurrence. Parsers disagree there (serde_json and JavaScript keep the
//! last, others the first, Go's `encoding/json` also matches names whatever their ASCII case),
//! so a proxy that checks one reading and forwards the bytes lets a peer act on the other.
//! [`parse`] builds the same `serde_json::Value` as `serde_json::from_slice`, or says why not.
//! [`case_variant`] finds members that differ from a name sluice checks only by ASCII case.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not one JSON document (syntax, nesting past serde_json's limit, trailing bytes).
    #[error("not valid JSON")]
    Invalid,
    /// Valid JSON with an object naming a member twice.
    #[error("an object names the same member twice")]
    Duplicate,
}

/// Parse one JSON document, refusing any object (at any depth) with a duplicate member name.
pub fn parse(bytes: &[u8]) -> Result<Value, Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = Strict.deserialize(&mut de).map_err(classify)?;
    de.end().map_err(classify)?;
    Ok(v)
}

/// Check one JSON document for an object naming a member twice, without building it: what the
/// request path runs on every JSON body it forwards (member names are compared decoded, so
/// `"\u006dodel"` is `"model"`).
pub fn check_unique(bytes: &[u8]) -> Result<(), Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    SKIP.deserialize(&mut de).map_err(classify)?;
    de.end().map_err(classify)
}

/// [`check_unique`], also reading the members named `wanted` of the top-level object (when the
/// document is one) in the same pass: what the request path needs of a body (its `model`, its
/// output cap) without walking it twice.
pub fn check_unique_top<const N: usize>(
    bytes: &[u8],
    wanted: [&str; N],
) -> Result<[Option<Value>; N], Error> {
    let mut out: [Option<Value>; N] = std::array::from_fn(|_| None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    UniqueSeed {
        top: Some(Capture {
            wanted: &wanted,
            out: &mut out,
        }),
    }
    .deserialize(&mut de)
    .map_err(classify)?;
    de.end().map_err(classify)?;
    Ok(out)
}

/// Parse a document held as text (see [`parse`]).
pub fn parse_str(text: &str) -> Result<Value, Error> {
    parse(text.as_bytes())
}

fn classify(e: serde_json::Error) -> Error {
    // The visitor accepts every JSON value: a data error is only ever its duplicate refusal.
    if e.is_data() {
        Error::Duplicate
    } else {
        Error::Invalid
    }
}

/// The first member of `obj` that is not one of `names` but equals one of them ignoring case
/// as Go's `encoding/json` ignores it (`strings.EqualFold`: ASCII case, and the two characters
/// whose simple case folding is an ASCII letter, U+017F `ſ` for `s` and U+212A KELVIN SIGN for
/// `k`): `Method` or `paramſ` beside, or instead of, `method` or `params`.
pub fn case_variant<'a>(obj: &'a Map<String, Value>, names: &[&str]) -> Option<&'a str> {
    obj.keys()
        .find(|k| names.iter().any(|n| k.as_str() != *n && folds_to(k, n)))
        .map(String::as_str)
}

/// Whether `k` equals the ASCII name `n` under Go's case folding.
fn folds_to(k: &str, n: &str) -> bool {
    let fold = |c: char| match c {
        '\u{17f}' => 's',
        '\u{212a}' => 'k',
        c => c.to_ascii_lowercase(),
    };
    k.chars()
        .map(fold)
        .eq(n.chars().map(|c| c.to_ascii_lowercase()))
}

/// Whether a repeated member name is one of sluice's own redaction tokens
/// (`[REDACTED_EMAIL]`, ...): redacting the names of an object (`{"a@x.com":1,"b@y.com":2}`)
/// makes them repeat, and what such a member holds is nothing sluice decides on.
fn is_token(name: &str) -> bool {
    crate::redact::Entity::ALL.iter().any(|e| e.token() == name)
}

struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if out.contains_key(&k) && !is_token(&k) {
                // The name is not quoted: it may be anything the peer sent.
                return Err(de::Error::custom("duplicate member name"));
            }
            let v = map.next_value_seed(Strict)?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// Walks a document for [`check_unique`]: values are skipped, names kept per object. With
/// `top`, the top-level object's wanted members are kept too ([`check_unique_top`]).
struct UniqueSeed<'w, 'o> {
    top: Option<Capture<'w, 'o>>,
}

/// The members of the top-level object to keep, and where.
struct Capture<'w, 'o> {
    wanted: &'w [&'w str],
    out: &'o mut [Option<Value>],
}

/// A nested value: walked, nothing kept.
const SKIP: UniqueSeed<'static, 'static> = UniqueSeed { top: None };

impl<'de> DeserializeSeed<'de> for UniqueSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(SKIP)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        // Names borrowed from the input where they hold no escape; a set past a few names.
        let mut names: Vec<std::borrow::Cow<'de, str>> = Vec::new();
        let mut set: Option<std::collections::HashSet<std::borrow::Cow<'de, str>>> = None;
        while let Some(Name(k)) = map.next_key::<Name<'de>>()? {
            let wanted = (self.top.as_ref()).and_then(|c| c.wanted.iter().position(|w| *w == k));
            let dup = match set.as_mut() {
                _ if is_token(&k) => false,
                Some(set) => !set.insert(k),
                None if names.contains(&k) => true,
                None => {
                    names.push(k);
                    if names.len() > 16 {
                        set = Some(names.drain(..).collect());
                    }
                    false
                }
            };
            if dup {
                // The name is not quoted: it may be anything the peer sent.
                return Err(de::Error::custom("duplicate member name"));
            }
            match (wanted, self.top.as_mut()) {
                (Some(i), Some(c)) => c.out[i] = map.next_value_seed(ScalarSeed)?,
                _ => map.next_value_seed(SKIP)?,
            }
        }
        Ok(())
    }
}

/// A wanted member's value when it is a string, a number or a boolean; a list or an object is
/// walked (duplicates checked) but not kept, so a wanted member cannot make the check build
/// a large tree (`{"max_tokens": [0, 0, ...]}`).
struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Option<Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Option<Value>, E> {
        Ok(Some(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Option<Value>, E> {
        Ok(Some(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Option<Value>, E> {
        Ok(Some(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Option<Value>, E> {
        Ok(serde_json::Number::from_f64(v).map(Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Option<Value>, E> {
        Ok(Some(Value::String(v.to_string())))
    }

    fn visit_unit<E>(self) -> Result<Option<Value>, E> {
        Ok(None)
    }

    fn visit_none<E>(self) -> Result<Option<Value>, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<Value>, A::Error> {
        SKIP.visit_seq(seq).map(|()| None)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<Value>, A::Error> {
        SKIP.visit_map(map).map(|()| None)
    }
}

/// A member name, borrowed when it can be.
struct Name<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(std::borrow::Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Name<'de>, E> {
                Ok(Name(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn duplicates_are_refused_at_any_depth_whatever_the_escaping() {
        for doc in [
            r#"{"name":"delete_all","name":"echo"}"#,
            r#"{"a":{"params":{},"params":{}}}"#,
            r#"[1,{"x":[{"m":1,"m":2}]}]"#,
            r#"{"method":"a","\u006dethod":"b"}"#,
        ] {
            assert_eq!(parse(doc.as_bytes()), Err(Error::Duplicate), "{doc}");
            assert_eq!(check_unique(doc.as_bytes()), Err(Error::Duplicate), "{doc}");
        }
        for doc in ["{", r#"{"a":1} x"#, "", r#"{"a":01}"#] {
            assert_eq!(parse(doc.as_bytes()), Err(Error::Invalid), "{doc}");
            assert_eq!(check_unique(doc.as_bytes()), Err(Error::Invalid), "{doc}");
        }
        let top = check_unique_top(
            br#"{"model":"m","x":{"model":1},"max_tokens":7}"#,
            ["model", "max_tokens", "n"],
        )
        .unwrap();
        assert_eq!(top, [Some(Value::from("m")), Some(Value::from(7)), None]);
        assert_eq!(
            check_unique_top(br#"{"model":"m","model":"o"}"#, ["model"]),
            Err(Error::Duplicate)
        );
        assert_eq!(
            check_unique_top(br#"[{"a":1,"a":1}]"#, ["a"]),
            Err(Error::Duplicate)
        );
        // Past the few names compared one by one, the same answer.
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let ok = format!("{{{}}}", many.join(","));
        assert_eq!(check_unique(ok.as_bytes()), Ok(()));
        let dup = format!("{{{},\"k3\":0}}", many.join(","));
        assert_eq!(check_unique(dup.as_bytes()), Err(Error::Duplicate));
        let v = parse(br#"{"Method":1,"method":2,"n":[1.5,-3,18446744073709551615,null,true]}"#)
            .unwrap();
        assert_eq!(v["n"][2], u64::MAX);
        let obj = v.as_object().unwrap();
        assert_eq!(case_variant(obj, &["method"]), Some("Method"));
        assert_eq!(case_variant(obj, &["n"]), None);
        // Go's folding: the long s and the Kelvin sign.
        let v = parse("{\"params\":{},\"param\u{17f}\":{},\"\u{212a}ey\":1}".as_bytes()).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(case_variant(obj, &["params"]), Some("param\u{17f}"));
        assert_eq!(case_variant(obj, &["key"]), Some("\u{212a}ey"));
        assert_eq!(case_variant(obj, &["paramss"]), None);
        // Names sluice's redaction gave: repeated, not ambiguous.
        let redacted = br#"{"[REDACTED_EMAIL]":1,"[REDACTED_EMAIL]":2,"k":[{"[REDACTED_PHONE]":1,"[REDACTED_PHONE]":1}]}"#;
        assert_eq!(check_unique(redacted), Ok(()));
        assert!(parse(redacted).is_ok());
    }

    proptest! {
        /// Without duplicates, the same value as serde_json's own reading.
        #[test]
        fn reads_what_serde_json_reads(doc in r#"[\[\]{}",:a-c0-9. -]{0,40}"#) {
            let ours = parse(doc.as_bytes());
            prop_assert_eq!(check_unique(doc.as_bytes()), ours.as_ref().map(|_| ()).map_err(Clone::clone));
            let theirs = serde_json::from_str::<Value>(&doc);
            match (ours, theirs) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(Error::Invalid), Err(_)) | (Err(Error::Duplicate), Ok(_)) => {}
                (a, b) => prop_assert!(false, "{doc}: {a:?} vs {b:?}"),
            }
        }
    }
}
