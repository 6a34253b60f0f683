//! [`FlagContext`]: what a feature's conditions are evaluated against.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

use serde_json::{Map, Value};

/// The attributes of one evaluation (`{"tier": "premium", "tenant_id": "t-42"}`): a condition
/// reads the value at its `key`, and a key that is absent makes it false (as in Powertools).
///
/// Implemented for a `serde_json::Value` (an object; anything else has no keys), a
/// `serde_json::Map`, and `HashMap` / `BTreeMap` from `String` to `Value`; implement it for a
/// type of your own to evaluate without building a map.
///
/// ```
/// use lambda_secrets::flags::FlagContext;
/// use serde_json::{json, Value};
///
/// struct Request { tier: Value }
/// impl FlagContext for Request {
///     fn value(&self, key: &str) -> Option<&Value> {
///         (key == "tier").then_some(&self.tier)
///     }
/// }
/// let ctx = Request { tier: json!("premium") };
/// assert_eq!(ctx.value("tier"), Some(&json!("premium")));
/// assert_eq!(json!({"tier": "basic"}).value("tier"), Some(&json!("basic")));
/// ```
pub trait FlagContext {
    /// The value at `key`, if the context has it.
    fn value(&self, key: &str) -> Option<&Value>;
}

impl FlagContext for Value {
    fn value(&self, key: &str) -> Option<&Value> {
        self.as_object().and_then(|map| map.get(key))
    }
}

impl FlagContext for Map<String, Value> {
    fn value(&self, key: &str) -> Option<&Value> {
        self.get(key)
    }
}

impl<S: BuildHasher> FlagContext for HashMap<String, Value, S> {
    fn value(&self, key: &str) -> Option<&Value> {
        self.get(key)
    }
}

impl FlagContext for BTreeMap<String, Value> {
    fn value(&self, key: &str) -> Option<&Value> {
        self.get(key)
    }
}

impl<T: FlagContext + ?Sized> FlagContext for &T {
    fn value(&self, key: &str) -> Option<&Value> {
        (**self).value(key)
    }
}

/// No attributes: every condition on a key is false (the schedule actions still apply).
impl FlagContext for () {
    fn value(&self, _key: &str) -> Option<&Value> {
        None
    }
}
