//! Planning: declarations merged into entries (an item declared twice is fetched once).
//! Everything a user can get wrong is rejected here, at `load()`, with an error naming the input,
//! so that nothing on the request path can fail on a setting.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;

use super::config::Config;
use super::entry::Entry;
use crate::error::Error;
use crate::freshness::bind::KeyBinding;
use crate::source::{AnyItem, Declaration};

/// Validates the settings and declarations and merges declarations into entries.
pub(crate) fn plan(config: &Config, decls: Vec<Declaration>, now: Instant) -> Result<Vec<Entry>, Error> {
    config.validate()?;
    let mut entries: Vec<Entry> = Vec::new();
    let mut index: HashMap<(*const (), AnyItem), usize> = HashMap::new();
    // Key of each single-value declaration -> what produces it (source, item and JSON field).
    let mut one_keys: HashMap<String, String> = HashMap::new();
    for decl in decls {
        if let Some((what, input, reason)) = decl.invalid {
            return Err(Error::InvalidInput { what, input, reason });
        }
        let timing = config
            .freshness
            .timing(decl.ttl, config.spread, &format!("key `{}`", decl.key))?;
        if !decl.item.tree {
            if decl.key.is_empty() {
                return Err(Error::invalid_input(
                    "key",
                    "",
                    format!("the key for {} `{}` is empty", decl.source.kind(), decl.item),
                ));
            }
            let mut described = format!("{} `{}`", decl.source.kind(), decl.item);
            if let Some(field) = &decl.field {
                described.push_str(&format!(" field `{field}`"));
            }
            if let Some(first) = one_keys.insert(decl.key.clone(), described.clone()) {
                if first != described {
                    return Err(Error::DuplicateKey {
                        key: decl.key,
                        first,
                        second: described,
                    });
                }
            }
        }
        let ptr = Arc::as_ptr(&decl.source) as *const ();
        let i = *index.entry((ptr, decl.item.clone())).or_insert_with(|| {
            entries.push(Entry::new(decl.source.clone(), decl.item.clone(), timing, now));
            entries.len() - 1
        });
        let entry = &mut entries[i];
        entry.freshness.tighten(timing.ttl, timing.staleness);
        let binding = KeyBinding {
            key: decl.key,
            field: decl.field,
        };
        if !entry.keys.contains(&binding) {
            entry.keys.push(binding);
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{Error, MemorySource, Quota, QuotaClass, RateLimits, Secrets};

    #[tokio::test]
    async fn one_key_on_two_fields_of_one_secret_is_rejected() {
        // Accepted silently once, and one of the two fields won.
        let mem = MemorySource::new();
        mem.set("/rds", r#"{"username":"app","password":"pw"}"#);
        let err = Secrets::builder()
            .add(mem.value("db", "/rds").json_field("username"))
            .add(mem.value("db", "/rds").json_field("password"))
            .load()
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::DuplicateKey { key, first, second }
                if key == "db" && first.contains("`username`") && second.contains("`password`")),
            "{err}"
        );
        // The same declaration twice is one value, not a conflict.
        let secrets = Secrets::builder()
            .add(mem.value("db", "/rds").json_field("password"))
            .add(mem.value("db", "/rds").json_field("password"))
            .load()
            .await
            .unwrap();
        assert_eq!(secrets.snapshot().expose_str("db").unwrap(), "pw");
    }

    #[tokio::test]
    async fn every_setting_is_validated_at_load() {
        let mem = MemorySource::new();
        mem.set("/a", "1");
        let cases: Vec<(crate::SecretsBuilder, &str)> = vec![
            (Secrets::builder().refresh_spread(0.5), "refresh spread"),
            (Secrets::builder().refresh_spread(f64::NAN), "refresh spread"),
            (
                Secrets::builder().refresh_timeout(Duration::MAX),
                "refresh timeout",
            ),
            (
                Secrets::builder().refresh_timeout(Duration::ZERO),
                "refresh timeout",
            ),
            (
                Secrets::builder().failure_backoff(Duration::from_secs(10), Duration::from_secs(1)),
                "failure backoff",
            ),
            (
                Secrets::builder().failure_backoff(Duration::ZERO, Duration::ZERO),
                "failure backoff",
            ),
            (Secrets::builder().ttl_jitter(-0.1), "TTL jitter"),
            (
                Secrets::builder().rate_limits({
                    let limits = RateLimits::new();
                    limits.set(QuotaClass::SsmGet, Quota::new(0.0, 1));
                    limits
                }),
                "rate limit",
            ),
        ];
        // A float shown in full is 309 digits.
        let err = Secrets::builder()
            .add(mem.value("a", "/a"))
            .refresh_spread(f64::MAX)
            .load()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("`1.7976931348623157e308`"), "{err}");
        for (builder, what) in cases {
            let err = builder.add(mem.value("a", "/a")).load().await.unwrap_err();
            assert!(
                matches!(&err, Error::InvalidInput { what: w, .. } if *w == what),
                "{what}: {err}"
            );
        }
    }
}
