//! One field of a JSON object value, taken without leaving copies of the plaintext behind.

use std::collections::HashMap;

use zeroize::Zeroizing;

use serde::de::DeserializeOwned;

use super::SecretValue;
use crate::error::{Error, ItemError};

/// `value` decoded from JSON into `T`; the error names `key` and the type, never the value.
///
/// What this cannot reach: serde_json unescapes strings holding escapes through a scratch buffer it
/// frees without zeroizing, and an error about a value's type quotes the value in serde_json's own
/// message (freed likewise; never shown: see [`Error::Json`]). `T` itself holds a copy: prefer
/// field types that zeroize on drop (`zeroize::Zeroizing<String>`).
pub(crate) fn decode<T: DeserializeOwned>(value: &SecretValue, key: &str) -> Result<T, Error> {
    serde_json::from_slice(value.expose_bytes()).map_err(|e| Error::json::<T>(key, &e))
}

/// One field of a JSON object value. Errors name the field, never the value.
pub(crate) fn json_field(value: &SecretValue, field: &str) -> Result<SecretValue, ItemError> {
    use serde_json::value::RawValue;
    let object: HashMap<std::borrow::Cow<'_, str>, &RawValue> = serde_json::from_slice(value.expose_bytes())
        .map_err(|_| {
            ItemError::Invalid(format!(
                "the value is not a JSON object, so its field `{field}` cannot be taken"
            ))
        })?;
    let raw = object
        .get(field)
        .ok_or_else(|| ItemError::Invalid(format!("the JSON object has no field `{field}`")))?
        .get();
    if raw.starts_with('"') {
        let text = json_string(raw)
            .ok_or_else(|| ItemError::Invalid(format!("field `{field}` is not a valid JSON string")))?;
        Ok(SecretValue::new(text))
    } else {
        Ok(raw.into())
    }
}

/// The text of the JSON string literal `raw` (quotes included), unescaped into one buffer that
/// never grows (an escape is never shorter than what it stands for), so that no copy of the text is
/// left behind: serde_json unescapes through a scratch buffer it frees without zeroizing. `None`
/// when `raw` is not a valid JSON string (as serde_json judges it).
fn json_string(raw: &str) -> Option<Vec<u8>> {
    fn push(out: &mut Vec<u8>, c: char) {
        let mut utf8 = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
    }
    fn hex4(chars: &mut std::str::Chars<'_>) -> Option<u32> {
        (0..4).try_fold(0u32, |code, _| Some(code * 16 + chars.next()?.to_digit(16)?))
    }
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    // Zeroized if it is dropped part-filled (an invalid escape after some text).
    let mut out = Zeroizing::new(Vec::with_capacity(inner.len()));
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                '"' => out.push(b'"'),
                '\\' => out.push(b'\\'),
                '/' => out.push(b'/'),
                'b' => out.push(0x08),
                'f' => out.push(0x0c),
                'n' => out.push(b'\n'),
                'r' => out.push(b'\r'),
                't' => out.push(b'\t'),
                'u' => {
                    let high = hex4(&mut chars)?;
                    let code = match high {
                        0xD800..=0xDBFF => {
                            if (chars.next()?, chars.next()?) != ('\\', 'u') {
                                return None;
                            }
                            let low = hex4(&mut chars)?;
                            if !(0xDC00..=0xDFFF).contains(&low) {
                                return None;
                            }
                            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                        }
                        0xDC00..=0xDFFF => return None,
                        _ => high,
                    };
                    push(&mut out, char::from_u32(code)?);
                }
                _ => return None,
            },
            '"' => return None,
            c if u32::from(c) < 0x20 => return None,
            c => push(&mut out, c),
        }
    }
    Some(std::mem::take(&mut *out))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn json_strings_unescape_as_serde_json_does(text in "\\PC*", noise in "[\"\\\\u0-9a-fA-FdD/bnrtx]{0,12}") {
            // Any text, escaped by serde_json, comes back whole.
            let raw = serde_json::to_string(&text).unwrap();
            proptest::prop_assert_eq!(json_string(&raw), Some(text.clone().into_bytes()));
            // Escapes, valid or not (lone surrogates, short \u, stray quotes): the same verdict
            // and text as serde_json's.
            let raw = format!("\"{text}{noise}\"");
            let theirs = serde_json::from_str::<String>(&raw).ok().map(String::into_bytes);
            proptest::prop_assert_eq!(json_string(&raw), theirs, "{}", raw);
        }
    }

    #[test]
    fn a_field_that_fails_to_unescape_leaves_no_copy_of_what_came_before() {
        // `hunter2` is unescaped into a buffer, then a lone surrogate makes the field invalid.
        let value = SecretValue::from(r#"{"password":"CANARY-hunter2\ud800"}"#);
        let (result, freed) =
            crate::test_support::freed_holding(b"CANARY-hunter2", || json_field(&value, "password"));
        assert!(result.is_err());
        assert_eq!(
            freed, 0,
            "a copy of the field's text was freed without being zeroized"
        );
    }

    #[test]
    fn a_decoding_error_leaves_no_copy_of_its_own() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Creds {
            port: u16,
        }
        let json = r#"{"port":"CANARY-hunter2"}"#;
        // serde_json's own message quotes the value, and is freed by serde_json: out of reach.
        let (_, theirs) = crate::test_support::freed_holding(b"CANARY-hunter2", || {
            drop(serde_json::from_slice::<Creds>(json.as_bytes()).unwrap_err())
        });
        let value = SecretValue::from(json);
        let (result, ours) =
            crate::test_support::freed_holding(b"CANARY-hunter2", || decode::<Creds>(&value, "db"));
        let text = result.unwrap_err().to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(
            ours, theirs,
            "decoding freed a copy of the value besides serde_json's own"
        );
    }
}
