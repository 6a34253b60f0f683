//! [`DeclaredFlags`] (and [`OnDemandFlags`]): the flags of a value that the cache refreshes,
//! compiled once per version of it.
//!
//! Each read compares the value in hand with the one last compiled (one pointer comparison): a
//! new version is compiled once, by the first read that sees it. A new version that is not a
//! valid document is reported once (a warning naming the key and what is wrong) and the last
//! valid one goes on answering, as a value that fails to refresh goes on being served.

use arc_swap::ArcSwap;
use std::sync::Arc;

use super::FeatureFlags;
use crate::value::ValueWatch;
use crate::{Error, SecretValue, Secrets};

/// The document last compiled, and the value it came from (or the value that failed after it).
struct Compiled {
    of: ValueWatch,
    /// A digest of that value's bytes: a refresh that fetched the same bytes again (a new
    /// allocation) is neither compiled again nor warned about again.
    digest: u64,
    flags: FeatureFlags,
}

fn digest(value: &SecretValue) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.expose_bytes().hash(&mut h);
    h.finish()
}

/// Compiles each version of one key's value once.
struct Follow {
    key: Arc<str>,
    compiled: ArcSwap<Compiled>,
}

impl Follow {
    fn new(key: &str, value: &SecretValue) -> Result<Follow, Error> {
        let flags = FeatureFlags::from_value(value).map_err(|error| Error::FeatureFlags {
            key: key.to_owned(),
            error,
        })?;
        Ok(Follow {
            key: key.into(),
            compiled: ArcSwap::from_pointee(Compiled {
                of: value.watch(),
                digest: digest(value),
                flags,
            }),
        })
    }

    fn flags(&self, value: &SecretValue) -> FeatureFlags {
        let compiled = self.compiled.load();
        if compiled.of.is(value) {
            return compiled.flags.clone();
        }
        let digest = digest(value);
        let flags = if digest == compiled.digest {
            compiled.flags.clone()
        } else {
            match FeatureFlags::from_value(value) {
                Ok(flags) => flags,
                Err(error) => {
                    tracing::warn!(key = %self.key, %error, "lambda-secrets: a new version of a feature-flag document is not valid; the last valid one goes on answering");
                    compiled.flags.clone()
                }
            }
        };
        // Only over what was read: a reader that compiled the same version meanwhile wins.
        let _ = self.compiled.compare_and_swap(
            &compiled,
            Arc::new(Compiled {
                of: value.watch(),
                digest,
                flags: flags.clone(),
            }),
        );
        flags
    }
}

/// The [`FeatureFlags`] of a declared value (an AppConfig profile, or a JSON parameter or
/// secret), following its refreshes: [`current`](Self::current) compiles each new version once.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use lambda_secrets::flags::DeclaredFlags;
/// use lambda_secrets::{MemorySource, Secrets};
/// use serde_json::json;
///
/// let mem = MemorySource::new();
/// mem.set("/app/flags", r#"{"beta": {"default": false, "rules": {"staff": {"when_match": true,
///     "conditions": [{"action": "ENDSWITH", "key": "email", "value": "@example.com"}]}}}}"#);
/// let secrets = Secrets::builder().add(mem.value("flags", "/app/flags")).load().await?;
/// let flags = DeclaredFlags::new(&secrets, "flags")?; // checked here, at cold start
///
/// // In the handler:
/// let on = flags.current()?.evaluate("beta", &json!({"email": "ana@example.com"}), false);
/// assert!(on);
/// # Ok::<(), lambda_secrets::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct DeclaredFlags {
    secrets: Secrets,
    follow: Arc<Follow>,
}

impl DeclaredFlags {
    /// Follows key `key` of `secrets`, checking its value now.
    ///
    /// # Errors
    ///
    /// [`Error::MissingKey`] (or another read error) when `secrets` has no value for `key`;
    /// [`Error::FeatureFlags`] when its value is not a valid document.
    pub fn new(secrets: &Secrets, key: &str) -> Result<DeclaredFlags, Error> {
        let value = secrets.get(key)?;
        Ok(DeclaredFlags {
            secrets: secrets.clone(),
            follow: Arc::new(Follow::new(key, &value)?),
        })
    }

    /// The flags of the value in the current snapshot (compiled when it changed).
    ///
    /// # Errors
    ///
    /// What reading the value gives ([`Snapshot::get`](crate::Snapshot::get)): it is past its
    /// maximum staleness ([`Error::Expired`]), or dropped for a SnapStart snapshot.
    pub fn current(&self) -> Result<FeatureFlags, Error> {
        let snapshot = self.secrets.snapshot();
        Ok(self.follow.flags(snapshot.get(&self.follow.key)?))
    }
}

impl std::fmt::Debug for DeclaredFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeclaredFlags")
            .field("key", &self.follow.key)
            .finish_non_exhaustive()
    }
}

/// The [`FeatureFlags`] of an on-demand name ([`OnDemand`](crate::OnDemand)), compiled once
/// per version of its value.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use lambda_secrets::flags::OnDemandFlags;
/// use lambda_secrets::{MemorySource, OnDemand};
///
/// let mem = MemorySource::new();
/// mem.set("tenant-7/flags", r#"{"export": {"default": true}}"#);
/// let od = OnDemand::builder().build(move |name| mem.value(name, name))?;
/// let flags = OnDemandFlags::new(&od, "tenant-7/flags").await?;
/// assert!(flags.current().await?.evaluate("export", &(), false));
/// # Ok::<(), lambda_secrets::Error>(()) }).unwrap();
/// ```
#[cfg(feature = "on-demand")]
#[derive(Clone)]
pub struct OnDemandFlags {
    od: crate::OnDemand,
    name: Arc<str>,
    follow: Arc<Follow>,
}

#[cfg(feature = "on-demand")]
impl OnDemandFlags {
    /// Follows on-demand name `name` of `od`, fetching and checking its value now.
    ///
    /// # Errors
    ///
    /// What [`OnDemand::get`](crate::OnDemand::get) returns, or [`Error::FeatureFlags`] when
    /// the value is not a valid document.
    pub async fn new(od: &crate::OnDemand, name: &str) -> Result<OnDemandFlags, Error> {
        let value = od.get(name).await?;
        Ok(OnDemandFlags {
            od: od.clone(),
            name: name.into(),
            follow: Arc::new(Follow::new(name, &value)?),
        })
    }

    /// The flags of the name's cached value (fetched again if it left the cache).
    ///
    /// # Errors
    ///
    /// What [`OnDemand::get`](crate::OnDemand::get) returns (the name left the cache and could
    /// not be fetched again).
    pub async fn current(&self) -> Result<FeatureFlags, Error> {
        let value = self.od.get(&self.name).await?;
        Ok(self.follow.flags(&value))
    }
}

#[cfg(feature = "on-demand")]
impl std::fmt::Debug for OnDemandFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnDemandFlags")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::MemorySource;

    #[tokio::test(start_paused = true)]
    async fn a_new_version_is_compiled_once_and_a_bad_one_keeps_the_last_valid() {
        let mem = MemorySource::new();
        mem.set("/flags", r#"{"beta": {"default": false}}"#);
        let secrets = Secrets::builder()
            .add(mem.value("flags", "/flags").ttl(Duration::from_secs(60)))
            .ttl_jitter(0.0)
            .load()
            .await
            .unwrap();
        let flags = DeclaredFlags::new(&secrets, "flags").unwrap();
        assert!(!flags.current().unwrap().evaluate("beta", &(), true));
        let first = flags.current().unwrap();
        assert!(
            Arc::ptr_eq(&first.schema, &flags.current().unwrap().schema),
            "not compiled again"
        );

        mem.set("/flags", r#"{"beta": {"default": true}}"#);
        secrets.refresh_now("flags").await.unwrap();
        assert!(
            flags.current().unwrap().evaluate("beta", &(), false),
            "the new version"
        );

        mem.set("/flags", r#"{"beta": {"default": "yes"}}"#);
        secrets.refresh_now("flags").await.unwrap();
        let kept = flags.current().unwrap();
        assert!(
            kept.evaluate("beta", &(), false),
            "the last valid version answers"
        );
        assert!(
            Arc::ptr_eq(&kept.schema, &flags.current().unwrap().schema),
            "the bad version is tried once"
        );
        assert_eq!(kept.evaluate_value("beta", &json!({}), json!(null)), json!(true));
    }

    #[tokio::test]
    async fn a_bad_document_at_cold_start_is_an_error_naming_the_key() {
        let mem = MemorySource::new();
        mem.set(
            "/flags",
            r#"{"beta": {"default": false, "rules": {"r": {"when_match": true}}}}"#,
        );
        let secrets = Secrets::builder()
            .add(mem.value("flags", "/flags"))
            .load()
            .await
            .unwrap();
        let err = DeclaredFlags::new(&secrets, "flags").unwrap_err();
        match &err {
            Error::FeatureFlags { key, error } => {
                assert_eq!(
                    (key.as_str(), error.feature(), error.rule()),
                    ("flags", Some("beta"), Some("r"))
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            DeclaredFlags::new(&secrets, "nope"),
            Err(Error::MissingKey { .. })
        ));
    }
}
