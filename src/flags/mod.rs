//! Feature flags (feature `feature-flags`): a JSON document of features evaluated in memory
//! against a context, with the answers Powertools for AWS Lambda gives.
//!
//! | file | what |
//! |---|---|
//! | `ordered.rs` | the document read with its keys in order (rules are tried in order) |
//! | `schema.rs` | the document checked and compiled once per version (Powertools' checks) |
//! | `evaluate.rs` | rules and conditions against a context |
//! | `python.rs` | Python's `==`, orderings, `in`, `%`, truth, as Powertools applies them |
//! | `schedule.rs` | the schedule actions' clock: zones, times of day, ISO 8601 datetimes |
//! | `context.rs` | [`FlagContext`]: what conditions read |
//! | `declared.rs` | [`DeclaredFlags`], `OnDemandFlags`: the flags of a cached value, compiled once per version |
//!
//! Two document formats are read (see [`FeatureFlags::from_json`]): Powertools' rule schema,
//! the de facto standard in Lambda (`default`, `rules`, `when_match`, `conditions` with every
//! action Powertools has), and AppConfig's own feature flags (`AWS.AppConfig.FeatureFlags`).
//!
//! Where our answers differ from Powertools Python's, the README's "Feature flags" section says
//! so and why (a differential test compares the two on generated schemas and contexts).

mod context;
mod declared;
mod evaluate;
mod ordered;
mod python;
mod schedule;
mod schema;

pub use crate::error::SchemaError;
pub use context::FlagContext;
pub use declared::DeclaredFlags;
#[cfg(feature = "on-demand")]
pub use declared::OnDemandFlags;

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::Value;

use crate::SecretValue;
use schema::{Feature, Schema};

/// A feature-flag document, checked and compiled: evaluating it parses nothing. Cloning is
/// cheap (a reference count).
///
/// ```
/// use lambda_secrets::flags::FeatureFlags;
/// use serde_json::json;
///
/// let flags = FeatureFlags::from_json(br#"{
///     "premium_features": {
///         "default": false,
///         "rules": {
///             "customer tier equals premium": {
///                 "when_match": true,
///                 "conditions": [{"action": "EQUALS", "key": "tier", "value": "premium"}]
///             }
///         }
///     },
///     "ten_percent_canary": {
///         "default": false,
///         "rules": {
///             "one tenant in ten": {
///                 "when_match": true,
///                 "conditions": [{"action": "MODULO_RANGE", "key": "tenant_number",
///                                 "value": {"BASE": 10, "START": 0, "END": 0}}]
///             }
///         }
///     },
///     "always_on": {"default": true}
/// }"#)?;
/// let ctx = json!({"tier": "premium", "tenant_number": 1234});
/// assert!(flags.evaluate("premium_features", &ctx, false));
/// assert!(!flags.evaluate("premium_features", &json!({"tier": "basic"}), false));
/// assert!(flags.evaluate("no_such_feature", &ctx, true), "the default given");
/// assert_eq!(flags.enabled_features(&ctx), ["premium_features", "always_on"]);
/// # Ok::<(), lambda_secrets::flags::SchemaError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FeatureFlags {
    schema: Arc<Schema>,
}

impl FeatureFlags {
    /// Checks and compiles a document.
    ///
    /// Read as **AppConfig's feature flags** (`{"flag": {"enabled": true, …attributes}}`, what
    /// `GetLatestConfiguration` returns for a profile of type `AWS.AppConfig.FeatureFlags`) when
    /// it has features, each with a boolean `enabled` and no `rules`, not all with a boolean `default`; else as
    /// **Powertools' rule schema**, checked as Powertools checks it.
    ///
    /// # Errors
    ///
    /// [`SchemaError`] when the document is not JSON or not a valid schema, naming the feature
    /// and rule (never a value of the document).
    pub fn from_json(json: &[u8]) -> Result<FeatureFlags, SchemaError> {
        Ok(FeatureFlags {
            schema: Arc::new(Schema::parse(json)?),
        })
    }

    /// [`from_json`](Self::from_json) over a loaded value's bytes.
    ///
    /// # Errors
    ///
    /// As [`from_json`](Self::from_json).
    pub fn from_value(value: &SecretValue) -> Result<FeatureFlags, SchemaError> {
        Self::from_json(value.expose_bytes())
    }

    /// Whether boolean feature `name` is on for `ctx`; `default` if the document has no such
    /// feature. A non-boolean feature's value counts by Python's truth (`0`, `""`, `[]`, `{}`,
    /// `null` are false), as it does in Powertools' `get_enabled_features`.
    pub fn evaluate(&self, name: &str, ctx: &(impl FlagContext + ?Sized), default: bool) -> bool {
        self.evaluate_at(name, ctx, default, SystemTime::now())
    }

    /// [`evaluate`](Self::evaluate) with the clock the schedule actions read fixed at `now`.
    pub fn evaluate_at(
        &self,
        name: &str,
        ctx: &(impl FlagContext + ?Sized),
        default: bool,
        now: SystemTime,
    ) -> bool {
        match self.schema.feature(name) {
            Some(feature) => python::truthy(&evaluate::value(feature, ctx, now)),
            None => default,
        }
    }

    /// Feature `name`'s value for `ctx`: a non-boolean feature's (`"boolean_type": false`) JSON
    /// value, a boolean's `true` or `false`; `default` if the document has no such feature.
    /// Powertools' `evaluate`.
    ///
    /// ```
    /// use lambda_secrets::flags::FeatureFlags;
    /// use serde_json::json;
    ///
    /// let flags = FeatureFlags::from_json(br#"{"limits": {"default": {"rps": 10}, "boolean_type": false,
    ///     "rules": {"premium": {"when_match": {"rps": 100},
    ///         "conditions": [{"action": "EQUALS", "key": "tier", "value": "premium"}]}}}}"#)?;
    /// let limits = flags.evaluate_value("limits", &json!({"tier": "premium"}), json!(null));
    /// assert_eq!(limits, json!({"rps": 100}));
    /// # Ok::<(), lambda_secrets::flags::SchemaError>(())
    /// ```
    pub fn evaluate_value(&self, name: &str, ctx: &(impl FlagContext + ?Sized), default: Value) -> Value {
        self.evaluate_value_at(name, ctx, default, SystemTime::now())
    }

    /// [`evaluate_value`](Self::evaluate_value) with the clock fixed at `now`.
    pub fn evaluate_value_at(
        &self,
        name: &str,
        ctx: &(impl FlagContext + ?Sized),
        default: Value,
        now: SystemTime,
    ) -> Value {
        match self.schema.feature(name) {
            Some(feature) => evaluate::value(feature, ctx, now),
            None => default,
        }
    }

    /// The features on for `ctx`, in document order: a feature with a true default and no
    /// rules, or whose rules give a true value. Powertools' `get_enabled_features`.
    pub fn enabled_features(&self, ctx: &(impl FlagContext + ?Sized)) -> Vec<&str> {
        self.enabled_features_at(ctx, SystemTime::now())
    }

    /// [`enabled_features`](Self::enabled_features) with the clock fixed at `now`.
    pub fn enabled_features_at(&self, ctx: &(impl FlagContext + ?Sized), now: SystemTime) -> Vec<&str> {
        self.schema
            .features
            .iter()
            .filter(|(_, feature)| evaluate::enabled(feature, ctx, now))
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// An AppConfig flag's attributes (every field but `enabled`); `None` for a feature of
    /// Powertools' schema or a name the document lacks.
    ///
    /// ```
    /// use lambda_secrets::flags::FeatureFlags;
    ///
    /// let flags = FeatureFlags::from_json(br#"{"dark_mode": {"enabled": true, "color": "black"}}"#)?;
    /// assert!(flags.evaluate("dark_mode", &(), false));
    /// assert_eq!(flags.attributes("dark_mode").unwrap()["color"], "black");
    /// # Ok::<(), lambda_secrets::flags::SchemaError>(())
    /// ```
    pub fn attributes(&self, name: &str) -> Option<&Value> {
        match self.schema.feature(name)? {
            Feature::AppConfig { attributes, .. } => Some(attributes),
            Feature::Rules { .. } => None,
        }
    }

    /// The features' names, in document order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.schema.features.iter().map(|(name, _)| name.as_str())
    }
}
