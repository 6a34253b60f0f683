//! [`SchemaError`]: a feature-flag document that is not a valid schema, naming where.

use std::fmt;

/// A feature-flag document that is not a valid schema: what is wrong, and the feature and rule
/// it is in. Never carries a value of the document (a condition's value may be customer data).
///
/// ```
/// use lambda_secrets::flags::FeatureFlags;
///
/// let err = FeatureFlags::from_json(br#"{"premium": {"default": "yes"}}"#).unwrap_err();
/// assert_eq!(err.feature(), Some("premium"));
/// assert_eq!(err.rule(), None);
/// assert!(err.to_string().contains("`default`"), "{err}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    feature: Option<String>,
    rule: Option<String>,
    reason: String,
}

impl SchemaError {
    /// The whole document is wrong (not JSON, not an object).
    pub(crate) fn document(reason: impl Into<String>) -> Self {
        SchemaError {
            feature: None,
            rule: None,
            reason: reason.into(),
        }
    }

    /// Feature `feature` is wrong.
    pub(crate) fn in_feature(feature: &str, reason: impl Into<String>) -> Self {
        SchemaError {
            feature: Some(feature.to_owned()),
            rule: None,
            reason: reason.into(),
        }
    }

    /// Rule `rule` of feature `feature` is wrong.
    pub(crate) fn in_rule(feature: &str, rule: &str, reason: impl Into<String>) -> Self {
        SchemaError {
            feature: Some(feature.to_owned()),
            rule: Some(rule.to_owned()),
            reason: reason.into(),
        }
    }

    /// The feature the error is in, if it is in one.
    pub fn feature(&self) -> Option<&str> {
        self.feature.as_deref()
    }

    /// The rule the error is in, if it is in one.
    pub fn rule(&self) -> Option<&str> {
        self.rule.as_deref()
    }

    /// What is wrong.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid feature-flag schema")?;
        match (&self.feature, &self.rule) {
            (Some(feature), Some(rule)) => write!(f, " (feature `{feature}`, rule `{rule}`)")?,
            (Some(feature), None) => write!(f, " (feature `{feature}`)")?,
            _ => {}
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for SchemaError {}
