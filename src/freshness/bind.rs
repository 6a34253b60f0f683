//! Binding what a source answered to the keys that read it: each key's value (or one JSON field
//! of it) and its [`ValueInfo`]. The one place a `ValueInfo` is made, for both caches.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use super::dates::Dates;
use crate::error::ItemError;
use crate::snapshot::ValueInfo;
use crate::source::Fetched;
use crate::value::json::json_field;
use crate::value::SecretValue;

/// A key bound to an item, optionally to one JSON field of its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyBinding {
    /// The key (for a tree: the key prefix).
    pub(crate) key: String,
    pub(crate) field: Option<String>,
}

/// A key's value and where it came from.
#[derive(Clone)]
pub(crate) struct Keyed {
    pub(crate) key: Box<str>,
    pub(crate) value: SecretValue,
    pub(crate) info: Arc<ValueInfo>,
}

/// An item's values bound to its keys, its version, and what the source said of their time.
pub(crate) struct Bound {
    pub(crate) values: Vec<Keyed>,
    pub(crate) version: Option<String>,
    pub(crate) timing: Dates,
}

/// Binds `fetched` (what a `kind` source answered for one item, arrived `at`) to `keys`: a single
/// value to each key (or its JSON field), every value of a `tree` item to each key prefix plus the
/// value's relative name. Fails with each key that cannot be bound and why (nothing fetched, not a
/// JSON object with the field).
pub(crate) fn bind(
    kind: &'static str,
    tree: bool,
    keys: &[KeyBinding],
    fetched: Vec<Fetched>,
    at: Instant,
) -> Result<Bound, Vec<(String, ItemError)>> {
    if fetched.is_empty() {
        return Err(keys
            .iter()
            .map(|b| (b.key.clone(), ItemError::NotFound))
            .collect());
    }
    let version = fetched[0].version.clone();
    let timing = Dates::of(&fetched);
    let mut values = Vec::new();
    let mut failures = Vec::new();
    let take = if tree { fetched.len() } else { 1 };
    for f in fetched.into_iter().take(take) {
        let info = Arc::new(
            ValueInfo::new(kind, f.name, f.version, f.refresh_by, f.expires_at, at)
                .with_region(f.region, f.modified_at),
        );
        for binding in keys {
            let key: Box<str> = match (tree, &f.relative) {
                (true, Some(rel)) => format!("{}{rel}", binding.key).into(),
                _ => binding.key.as_str().into(),
            };
            let value = match &binding.field {
                None => f.value.clone(),
                Some(field) => match json_field(&f.value, field) {
                    Ok(v) => v,
                    Err(e) => {
                        failures.push((key.into(), e));
                        continue;
                    }
                },
            };
            values.push(Keyed {
                key,
                value,
                info: info.clone(),
            });
        }
    }
    if failures.is_empty() {
        Ok(Bound {
            values,
            version,
            timing,
        })
    } else {
        Err(failures)
    }
}

/// The source confirmed the values held (arrived again `at`, with this "refresh me by"): their
/// age counts from now.
pub(crate) fn confirmed(values: &mut [Keyed], refresh_by: Option<SystemTime>, at: Instant) {
    for keyed in values {
        keyed.info = Arc::new(keyed.info.confirmed(refresh_by, at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_binds_every_value_and_a_field_fails_naming_its_key() {
        let now = Instant::now();
        let keys = [KeyBinding {
            key: "app/".into(),
            field: None,
        }];
        let fetched = vec![
            Fetched::new("/p/a", "1").with_relative("a"),
            Fetched::new("/p/b", "2").with_relative("b"),
        ];
        let bound = bind("memory", true, &keys, fetched, now).ok().unwrap();
        let got: Vec<&str> = bound.values.iter().map(|k| &*k.key).collect();
        assert_eq!(got, ["app/a", "app/b"]);
        let keys = [KeyBinding {
            key: "db".into(),
            field: Some("password".into()),
        }];
        let failures = bind("memory", false, &keys, vec![Fetched::new("/db", "not json")], now)
            .err()
            .unwrap();
        assert_eq!(failures[0].0, "db");
        assert!(
            failures[0].1.to_string().contains("`password`"),
            "{}",
            failures[0].1
        );
    }
}
