//! [`Ordered`]: a JSON document whose objects keep the order their keys were written in.
//!
//! A feature's rules are tried in the order they are written (the first that matches wins), and
//! [`enabled_features`](super::FeatureFlags::enabled_features) lists features in document order,
//! as Powertools does (Python's `dict` keeps insertion order). `serde_json::Map` sorts its keys
//! unless `preserve_order` is on, which would change every user's `serde_json`: this reads the
//! document once into a tree of its own instead. A key written twice keeps its first place and
//! its last value, as Python's `json` does.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// A JSON value whose objects are lists of entries in document order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ordered {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Ordered>),
    Object(Vec<(String, Ordered)>),
}

impl Ordered {
    /// Parses `bytes` as one JSON document.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Ordered, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The value at `key`, for an object.
    pub(crate) fn get(&self, key: &str) -> Option<&Ordered> {
        match self {
            Ordered::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The entries, for an object.
    pub(crate) fn entries(&self) -> Option<&[(String, Ordered)]> {
        match self {
            Ordered::Object(entries) => Some(entries),
            _ => None,
        }
    }

    /// Python's truth value: `None`, `False`, `0`, `0.0`, `""`, `[]` and `{}` are false.
    pub(crate) fn truthy(&self) -> bool {
        match self {
            Ordered::Null => false,
            Ordered::Bool(b) => *b,
            Ordered::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
            Ordered::String(s) => !s.is_empty(),
            Ordered::Array(items) => !items.is_empty(),
            Ordered::Object(entries) => !entries.is_empty(),
        }
    }

    /// Python's type name, for errors.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Ordered::Null => "null",
            Ordered::Bool(_) => "bool",
            Ordered::Number(n) if n.is_f64() => "float",
            Ordered::Number(_) => "int",
            Ordered::String(_) => "str",
            Ordered::Array(_) => "list",
            Ordered::Object(_) => "dict",
        }
    }

    /// The same value as `serde_json`'s (whose objects sort their keys: order matters only for
    /// features and rules, never inside a value).
    pub(crate) fn to_value(&self) -> Value {
        match self {
            Ordered::Null => Value::Null,
            Ordered::Bool(b) => Value::Bool(*b),
            Ordered::Number(n) => Value::Number(n.clone()),
            Ordered::String(s) => Value::String(s.clone()),
            Ordered::Array(items) => Value::Array(items.iter().map(Ordered::to_value).collect()),
            Ordered::Object(entries) => {
                Value::Object(entries.iter().map(|(k, v)| (k.clone(), v.to_value())).collect())
            }
        }
    }
}

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(OrderedVisitor)
    }
}

struct OrderedVisitor;

impl<'de> Visitor<'de> for OrderedVisitor {
    type Value = Ordered;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Ordered, E> {
        Ok(Ordered::Null)
    }

    fn visit_none<E>(self) -> Result<Ordered, E> {
        Ok(Ordered::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Ordered, E> {
        Ok(Ordered::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Ordered, E> {
        Ok(Ordered::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Ordered, E> {
        Ok(Ordered::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Ordered, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Ordered::Null, Ordered::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Ordered, E> {
        Ok(Ordered::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Ordered, E> {
        Ok(Ordered::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ordered, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Ordered::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
        let mut entries: Vec<(String, Ordered)> = Vec::new();
        // Where each key is, once there are enough keys for a linear search to cost.
        let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        while let Some((key, value)) = map.next_entry::<String, Ordered>()? {
            if entries.len() == 16 && index.is_empty() {
                index.extend(entries.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)));
            }
            let at = match index.is_empty() {
                true => entries.iter().position(|(k, _)| *k == key),
                false => index.get(&key).copied(),
            };
            match at {
                Some(i) => entries[i].1 = value,
                None => {
                    if !index.is_empty() {
                        index.insert(key.clone(), entries.len());
                    }
                    entries.push((key, value));
                }
            }
        }
        Ok(Ordered::Object(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_keep_document_order_and_a_repeated_key_its_first_place_and_last_value() {
        let doc = Ordered::parse(br#"{"zeta": 1, "alpha": {"b": 2, "a": 3}, "zeta": 4}"#).unwrap();
        let keys: Vec<&str> = doc.entries().unwrap().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["zeta", "alpha"]);
        assert_eq!(doc.get("zeta"), Some(&Ordered::Number(4.into())));
        let inner: Vec<&str> = doc
            .get("alpha")
            .unwrap()
            .entries()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(inner, ["b", "a"]);
        assert_eq!(
            doc.get("alpha").unwrap().to_value(),
            serde_json::json!({"a": 3, "b": 2})
        );
    }

    #[test]
    fn a_large_object_keeps_its_order_and_repeated_keys() {
        let keys: Vec<String> = (0..40).map(|i| format!("\"k{}\": {i}", 39 - i)).collect();
        let text = format!("{{{}, \"k39\": 100, \"k0\": 200}}", keys.join(", "));
        let doc = Ordered::parse(text.as_bytes()).unwrap();
        let entries = doc.entries().unwrap();
        assert_eq!(entries.len(), 40);
        assert_eq!(entries[0], ("k39".to_owned(), Ordered::Number(100.into())));
        assert_eq!(entries[39], ("k0".to_owned(), Ordered::Number(200.into())));
    }

    #[test]
    fn truth_values_are_python_s() {
        for (json, truthy) in [
            ("null", false),
            ("false", false),
            ("0", false),
            ("0.0", false),
            ("\"\"", false),
            ("[]", false),
            ("{}", false),
            ("true", true),
            ("-1", true),
            ("0.5", true),
            ("\"0\"", true),
            ("[0]", true),
            ("{\"a\": null}", true),
        ] {
            assert_eq!(
                Ordered::parse(json.as_bytes()).unwrap().truthy(),
                truthy,
                "{json}"
            );
        }
    }
}
