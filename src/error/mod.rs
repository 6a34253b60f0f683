//! The crate's one error type. Errors name keys, sources, parameter names and IAM actions; they
//! never carry a value (an error's `Display` is sent back to the caller by `lambda_runtime`).

use std::fmt;

mod call;
mod item;
#[cfg(feature = "feature-flags")]
mod schema;

pub(crate) use call::Transport;
pub use call::{CallError, CallErrorKind};
pub use item::{Failure, ItemError};
#[cfg(feature = "feature-flags")]
pub use schema::SchemaError;

/// Everything that can go wrong declaring, loading or reading values.
///
/// ```
/// use lambda_secrets::Error;
/// let err = Error::MissingKey { key: "db_password".into() };
/// assert_eq!(
///     err.to_string(),
///     "no value for key `db_password`: it was not declared, or its path held no such name"
/// );
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A declaration was rejected at build time (malformed name, ARN, path, TTL, key...).
    #[error("invalid {what} `{input}`: {reason}")]
    InvalidInput {
        /// What kind of input: "parameter name", "path", "TTL", "key"...
        what: &'static str,
        /// The input as given.
        input: String,
        /// Why it was rejected and what is accepted.
        reason: String,
    },
    /// One or more values could not be loaded; every failure is listed.
    #[error("{}", LoadReport(.failures))]
    Load {
        /// One line per failing key.
        failures: Vec<Failure>,
    },
    /// Two declarations produce the same key.
    #[error("key `{key}` is produced twice: by {first} and by {second}; give one of them another key")]
    DuplicateKey {
        /// The key.
        key: String,
        /// The first source of it (`ssm /a/b`).
        first: String,
        /// The second source of it.
        second: String,
    },
    /// The value of `key` is not a feature-flag document (see
    /// [`FeatureFlags`](crate::flags::FeatureFlags)).
    #[cfg(feature = "feature-flags")]
    #[error("the value of key `{key}` is not a feature-flag document: {error}")]
    FeatureFlags {
        /// The key.
        key: String,
        /// What is wrong, and where.
        error: SchemaError,
    },
    /// A key the handler asked for is not in the snapshot.
    #[error("no value for key `{key}`: it was not declared, or its path held no such name")]
    MissingKey {
        /// The key asked for.
        key: String,
    },
    /// Values were read between a SnapStart snapshot's `before_snapshot`, which dropped them, and
    /// `after_restore`, which loads them again (see [`SnapStart`](crate::SnapStart)).
    #[error("no value for key `{key}`: the values were dropped for a SnapStart snapshot and are loaded again after the restore")]
    DroppedForSnapshot {
        /// The key asked for.
        key: String,
    },
    /// A value was asked for as text but is binary.
    #[error("the value of key `{key}` is not UTF-8 text; read it with `expose_bytes`")]
    NotUtf8 {
        /// The key.
        key: String,
    },
    /// A value does not decode into the requested type. The detail never quotes the value.
    #[error("the value of key `{key}` is not JSON that fits `{type_name}`: {detail}")]
    Json {
        /// The key.
        key: String,
        /// The Rust type asked for.
        type_name: &'static str,
        /// Where and why decoding failed, without any part of the value.
        detail: String,
    },
    /// A value is as old as its maximum staleness and no refresh replaced it: the refresh failed,
    /// or had not answered when the read gave up waiting (see [the crate docs](crate#freshness)).
    /// A value past its maximum staleness is never served.
    #[error("the value of key `{key}` is past its maximum staleness and could not be refreshed: {cause}")]
    Expired {
        /// The key.
        key: String,
        /// Why no refresh replaced it (in the message; not also a `source`, which would print it
        /// twice in error chains).
        cause: ItemError,
    },
}

impl Error {
    /// An [`Error::InvalidInput`]: `input`, a `what`, was rejected because `reason`.
    pub(crate) fn invalid_input(
        what: &'static str,
        input: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidInput {
            what,
            input: input.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn json<T>(key: &str, err: &serde_json::Error) -> Self {
        Error::Json {
            key: key.to_owned(),
            type_name: std::any::type_name::<T>(),
            detail: redacted_json_detail(err),
        }
    }
}

/// serde_json's messages quote the offending input for type and value errors
/// (`invalid type: string "hunter2"`), so only messages known to name fields pass through.
fn redacted_json_detail(err: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match err.classify() {
        // Field names from the user's type only (an "unknown field" would name a key of the
        // secret).
        Category::Data => {
            let mut message = FieldMessage::default();
            let _ = fmt::Write::write_fmt(&mut message, format_args!("{err}"));
            match message.safe {
                Some(true) => message.text.split(" at line").next().unwrap_or("").to_owned(),
                _ => "a value has the wrong type or is out of range".to_owned(),
            }
        }
        Category::Syntax => "it is not valid JSON".to_owned(),
        Category::Eof => "the JSON ends early".to_owned(),
        Category::Io => "read error".to_owned(),
    };
    format!("{what} (line {}, column {})", err.line(), err.column())
}

/// A serde_json message, kept only if it starts with a prefix that names a field of the user's
/// type: no other message is ever written into memory (a type error's would quote the value).
#[derive(Default)]
struct FieldMessage {
    text: String,
    /// `None` while the text so far could still start a safe message.
    safe: Option<bool>,
}

impl fmt::Write for FieldMessage {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        const SAFE: [&str; 2] = ["missing field", "duplicate field"];
        for c in s.chars() {
            match self.safe {
                Some(false) => return Ok(()),
                Some(true) => self.text.push(c),
                None => {
                    self.text.push(c);
                    if SAFE.contains(&self.text.as_str()) {
                        self.safe = Some(true);
                    } else if !SAFE.iter().any(|p| p.starts_with(self.text.as_str())) {
                        self.safe = Some(false);
                        self.text.clear();
                    }
                }
            }
        }
        Ok(())
    }
}

struct LoadReport<'a>(&'a [Failure]);

impl fmt::Display for LoadReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not load {} value(s):", self.0.len())?;
        for fail in self.0 {
            write!(
                f,
                "\n  - key `{}` ({} `{}`): {}",
                fail.key, fail.source, fail.id, fail.error
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_error_lists_every_failure() {
        let err = Error::Load {
            failures: vec![
                Failure {
                    key: "a".into(),
                    source: "ssm",
                    id: "/x/a".into(),
                    error: ItemError::NotFound,
                },
                Failure {
                    key: "b".into(),
                    source: "ssm",
                    id: "/x/b".into(),
                    error: ItemError::Denied {
                        action: "ssm:GetParameters".into(),
                    },
                },
            ],
        };
        let text = err.to_string();
        assert!(text.contains("could not load 2 value(s)"), "{text}");
        assert!(text.contains("key `a` (ssm `/x/a`): not found"), "{text}");
        assert!(text.contains("grant `ssm:GetParameters`"), "{text}");
        assert!(text.contains("`lambda-secrets policy`"), "{text}");
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Creds {
        user: String,
        port: u16,
    }

    #[test]
    fn json_errors_never_quote_the_value() {
        for input in [
            r#"{"user":"admin","port":"hunter2-secret"}"#,
            r#"{"user":"admin","port":99999999}"#,
            r#"hunter2-secret"#,
            r#"{"user":"hunter2-secret""#,
        ] {
            let err = serde_json::from_str::<Creds>(input).unwrap_err();
            let text = Error::json::<Creds>("db", &err).to_string();
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains("99999999"), "{text}");
            assert!(text.contains("key `db`"), "{text}");
        }
        let err = serde_json::from_str::<Creds>(r#"{"user":"x"}"#).unwrap_err();
        let text = Error::json::<Creds>("db", &err).to_string();
        assert!(text.contains("missing field `port`"), "{text}");
    }
}
