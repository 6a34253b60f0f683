//! [`Schema`]: a feature-flag document checked and compiled once, in Powertools' order of
//! checks (so the first error named is the one Powertools names).
//!
//! Two formats:
//! - **Powertools' rule schema**: `{"feature": {"default": …, "boolean_type": …, "rules":
//!   {"name": {"when_match": …, "conditions": [{"action": …, "key": …, "value": …}]}}}}`;
//! - **AppConfig's feature flags** (a profile of type `AWS.AppConfig.FeatureFlags`, as
//!   `GetLatestConfiguration` returns it): `{"flag": {"enabled": true, "attribute": …}}`. A
//!   document is read this way when it has features, every one with a boolean `enabled` and no
//!   `rules`, not every one with a boolean `default`.

use jiff::tz::TimeZone;
use serde_json::Value;

use super::ordered::Ordered;
use super::schedule;
use crate::error::SchemaError;

/// A compiled document.
#[derive(Debug)]
pub(crate) struct Schema {
    /// In document order.
    pub(crate) features: Vec<(String, Feature)>,
}

#[derive(Debug)]
pub(crate) enum Feature {
    /// Powertools: the default, whether the feature is boolean, the rules in order.
    Rules {
        default: Value,
        boolean: bool,
        rules: Vec<Rule>,
    },
    /// AppConfig: whether the flag is on, and its other attributes.
    AppConfig { enabled: bool, attributes: Value },
}

#[derive(Debug)]
pub(crate) struct Rule {
    pub(crate) when_match: Value,
    pub(crate) conditions: Vec<Condition>,
}

#[derive(Debug)]
pub(crate) struct Condition {
    /// The context key (unused by the schedule tests).
    pub(crate) key: String,
    pub(crate) test: Test,
}

/// What a condition asks of its context value (`a`), with its `value` (`b`).
#[derive(Debug)]
pub(crate) enum Test {
    /// `a == b` (`negate`: `!=`).
    Equals { value: Value, negate: bool },
    /// `a` against `b`: the orderings that make it true.
    Order { value: Value, accept: [bool; 3] },
    /// `a.startswith(b)` (`ends`: `endswith`).
    Affix { value: Value, ends: bool },
    /// `a in b` (`negate`: `not in`): IN, NOT_IN, KEY_IN_VALUE, KEY_NOT_IN_VALUE.
    KeyIn { value: Value, negate: bool },
    /// `b in a` (`negate`: `not in`): VALUE_IN_KEY, VALUE_NOT_IN_KEY.
    ValueIn { value: Value, negate: bool },
    /// `a` is a list whose items are all / some / none in `b`.
    List { value: Vec<Value>, which: Which },
    /// Now, in `zone`, between two times of day.
    TimeRange {
        start: (i8, i8),
        end: (i8, i8),
        zone: TimeZone,
    },
    /// Now, in `zone`, between two wall-clock datetimes.
    DatetimeRange {
        start: jiff::civil::DateTime,
        end: jiff::civil::DateTime,
        zone: TimeZone,
    },
    /// Today, in `zone`, is one of `days`.
    Days { days: Vec<String>, zone: TimeZone },
    /// `start <= a % base <= end`.
    Modulo { base: i128, start: i128, end: i128 },
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Which {
    All,
    Any,
    None,
}

const ACTIONS: [&str; 21] = [
    "EQUALS",
    "NOT_EQUALS",
    "KEY_GREATER_THAN_VALUE",
    "KEY_GREATER_THAN_OR_EQUAL_VALUE",
    "KEY_LESS_THAN_VALUE",
    "KEY_LESS_THAN_OR_EQUAL_VALUE",
    "STARTSWITH",
    "ENDSWITH",
    "IN",
    "NOT_IN",
    "KEY_IN_VALUE",
    "KEY_NOT_IN_VALUE",
    "VALUE_IN_KEY",
    "VALUE_NOT_IN_KEY",
    "ALL_IN_VALUE",
    "ANY_IN_VALUE",
    "NONE_IN_VALUE",
    "SCHEDULE_BETWEEN_TIME_RANGE",
    "SCHEDULE_BETWEEN_DATETIME_RANGE",
    "SCHEDULE_BETWEEN_DAYS_OF_WEEK",
    "MODULO_RANGE",
];

/// The names `DAYS` may hold (Powertools' `TimeValues.days()`, which includes `DAYS` itself).
const DAYS: [&str; 8] = [
    "DAYS",
    "SUNDAY",
    "MONDAY",
    "TUESDAY",
    "WEDNESDAY",
    "THURSDAY",
    "FRIDAY",
    "SATURDAY",
];

impl Schema {
    /// Checks and compiles a JSON document.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Schema, SchemaError> {
        let doc = Ordered::parse(bytes).map_err(|e| SchemaError::document(format!("not JSON: {e}")))?;
        Schema::compile(&doc)
    }

    pub(crate) fn compile(doc: &Ordered) -> Result<Schema, SchemaError> {
        let entries = doc.entries().ok_or_else(|| {
            SchemaError::document(format!(
                "the features must be an object, not a {}",
                doc.type_name()
            ))
        })?;
        if is_appconfig(entries) {
            let features = entries
                .iter()
                .map(|(name, flag)| {
                    let fields = flag.entries().unwrap_or_default();
                    let enabled = matches!(flag.get("enabled"), Some(Ordered::Bool(true)));
                    let attributes = Value::Object(
                        fields
                            .iter()
                            .filter(|(k, _)| k != "enabled")
                            .map(|(k, v)| (k.clone(), v.to_value()))
                            .collect(),
                    );
                    (name.clone(), Feature::AppConfig { enabled, attributes })
                })
                .collect();
            return Ok(Schema { features });
        }
        let mut features = Vec::with_capacity(entries.len());
        for (name, feature) in entries {
            features.push((name.clone(), compile_feature(name, feature)?));
        }
        Ok(Schema { features })
    }

    pub(crate) fn feature(&self, name: &str) -> Option<&Feature> {
        self.features.iter().find(|(n, _)| n == name).map(|(_, f)| f)
    }
}

/// AppConfig's format: features, every one with a boolean `enabled` and no `rules`, and not
/// every one with a boolean `default` (an AppConfig flag may have an attribute named `default`;
/// a Powertools document has a boolean `default` on each boolean feature).
fn is_appconfig(entries: &[(String, Ordered)]) -> bool {
    !entries.is_empty()
        && entries.iter().all(|(_, f)| {
            f.entries().is_some()
                && f.get("rules").is_none()
                && matches!(f.get("enabled"), Some(Ordered::Bool(_)))
        })
        && !entries
            .iter()
            .all(|(_, f)| matches!(f.get("default"), Some(Ordered::Bool(_))))
}

fn compile_feature(name: &str, feature: &Ordered) -> Result<Feature, SchemaError> {
    let err = |reason: &str| SchemaError::in_feature(name, reason);
    if !feature.truthy() || feature.entries().is_none() {
        return Err(err("a feature must be a non-empty object"));
    }
    let default = feature.get("default").filter(|d| **d != Ordered::Null);
    let boolean = feature.get("boolean_type").is_none_or(Ordered::truthy);
    let default = match default {
        Some(Ordered::Bool(b)) => Value::Bool(*b),
        Some(other) if !boolean => other.to_value(),
        _ => {
            return Err(err(
                "the feature's `default` must be present (a boolean unless `boolean_type` is false)",
            ))
        }
    };
    let mut rules = Vec::new();
    match feature.get("rules") {
        // No rules, or empty ones (Powertools warns): the default answers.
        None => {}
        Some(r) if !r.truthy() => {}
        Some(Ordered::Object(entries)) => {
            for (rule_name, rule) in entries {
                rules.push(compile_rule(name, rule_name, rule, boolean)?);
            }
        }
        Some(_) => return Err(err("the feature's `rules` must be an object")),
    }
    Ok(Feature::Rules {
        default,
        boolean,
        rules,
    })
}

fn compile_rule(feature: &str, name: &str, rule: &Ordered, boolean: bool) -> Result<Rule, SchemaError> {
    let err = |reason: &str| SchemaError::in_rule(feature, name, reason);
    if !rule.truthy() || rule.entries().is_none() {
        return Err(err("a rule must be a non-empty object"));
    }
    if name.is_empty() {
        return Err(err("a rule's name must be a non-empty string"));
    }
    let when_match = rule.get("when_match").map_or(Value::Null, Ordered::to_value);
    if boolean && !when_match.is_boolean() {
        return Err(err(
            "the rule's `when_match` must be a boolean (the feature is boolean)",
        ));
    }
    let conditions = match rule.get("conditions") {
        Some(Ordered::Array(items)) if !items.is_empty() => items,
        _ => return Err(err("the rule's `conditions` must be a non-empty list")),
    };
    let conditions = conditions
        .iter()
        .map(|c| compile_condition(c).map_err(|reason| err(&reason)))
        .collect::<Result<_, _>>()?;
    Ok(Rule {
        when_match,
        conditions,
    })
}

fn compile_condition(condition: &Ordered) -> Result<Condition, String> {
    if !condition.truthy() || condition.entries().is_none() {
        return Err("a condition must be a non-empty object".into());
    }
    let action = match condition.get("action") {
        Some(Ordered::String(a)) if ACTIONS.contains(&a.as_str()) => a.as_str(),
        _ => {
            return Err(format!(
                "a condition's `action` must be one of {}",
                ACTIONS.join(", ")
            ))
        }
    };
    let key = match condition.get("key") {
        Some(Ordered::String(k)) if !k.is_empty() => k.clone(),
        _ => return Err("a condition's `key` must be a non-empty string".into()),
    };
    let schedule_key = match action {
        "SCHEDULE_BETWEEN_DAYS_OF_WEEK" => Some("CURRENT_DAY_OF_WEEK"),
        "SCHEDULE_BETWEEN_TIME_RANGE" => Some("CURRENT_TIME"),
        "SCHEDULE_BETWEEN_DATETIME_RANGE" => Some("CURRENT_DATETIME"),
        _ => None,
    };
    if let Some(want) = schedule_key.filter(|want| key != *want) {
        return Err(format!(
            "a condition with action {action} must have the key {want}"
        ));
    }
    let value = match condition.get("value") {
        None | Some(Ordered::Null) => return Err("a condition's `value` must not be null".into()),
        Some(v) => v,
    };
    let plain = || value.to_value();
    let order = |lt, eq, gt| Test::Order {
        value: plain(),
        accept: [lt, eq, gt],
    };
    let test = match action {
        "EQUALS" => Test::Equals {
            value: plain(),
            negate: false,
        },
        "NOT_EQUALS" => Test::Equals {
            value: plain(),
            negate: true,
        },
        "KEY_GREATER_THAN_VALUE" => order(false, false, true),
        "KEY_GREATER_THAN_OR_EQUAL_VALUE" => order(false, true, true),
        "KEY_LESS_THAN_VALUE" => order(true, false, false),
        "KEY_LESS_THAN_OR_EQUAL_VALUE" => order(true, true, false),
        "STARTSWITH" => Test::Affix {
            value: plain(),
            ends: false,
        },
        "ENDSWITH" => Test::Affix {
            value: plain(),
            ends: true,
        },
        "IN" | "KEY_IN_VALUE" => Test::KeyIn {
            value: plain(),
            negate: false,
        },
        "NOT_IN" | "KEY_NOT_IN_VALUE" => Test::KeyIn {
            value: plain(),
            negate: true,
        },
        "VALUE_IN_KEY" => Test::ValueIn {
            value: plain(),
            negate: false,
        },
        "VALUE_NOT_IN_KEY" => Test::ValueIn {
            value: plain(),
            negate: true,
        },
        "ALL_IN_VALUE" | "ANY_IN_VALUE" | "NONE_IN_VALUE" => {
            let Value::Array(items) = plain() else {
                return Err(format!("{action} must have a list value"));
            };
            let which = match action {
                "ALL_IN_VALUE" => Which::All,
                "ANY_IN_VALUE" => Which::Any,
                _ => Which::None,
            };
            Test::List { value: items, which }
        }
        "SCHEDULE_BETWEEN_DAYS_OF_WEEK" => {
            let shape = || {
                format!("{action} must have a value object with `DAYS` (a list of day names) and an optional `TIMEZONE`")
            };
            if value.entries().is_none() {
                return Err(shape());
            }
            let Some(Ordered::Array(days)) = value.get("DAYS") else {
                return Err(shape());
            };
            let days = days
                .iter()
                .map(|d| match d {
                    Ordered::String(d) if DAYS.contains(&d.as_str()) => Ok(d.clone()),
                    _ => Err(format!("`DAYS` must hold day names: {}", DAYS[1..].join(", "))),
                })
                .collect::<Result<_, _>>()?;
            Test::Days {
                days,
                zone: zone_of(value)?,
            }
        }
        "SCHEDULE_BETWEEN_TIME_RANGE" | "SCHEDULE_BETWEEN_DATETIME_RANGE" => {
            if value.entries().is_none() {
                return Err(format!(
                    "{action} must have a value object with `START` and `END`"
                ));
            }
            let bound = |name| match value.get(name) {
                None => Ok(""),
                Some(Ordered::String(s)) => Ok(s.as_str()),
                Some(_) => Err("`START` and `END` must be strings".to_owned()),
            };
            let (start, end) = (bound("START")?, bound("END")?);
            if action == "SCHEDULE_BETWEEN_TIME_RANGE" {
                let (Some(start), Some(end)) = (schedule::time_of_day(start), schedule::time_of_day(end))
                else {
                    return Err("`START` and `END` must be times of day as HH:MM (24-hour clock)".into());
                };
                Test::TimeRange {
                    start,
                    end,
                    zone: zone_of(value)?,
                }
            } else {
                let read = |s: &str| {
                    schedule::datetime(&s.replace('Z', "+00:00")).map_err(|why| match why {
                        schedule::Refused::Invalid => {
                            "`START` and `END` must be ISO 8601 datetimes".to_owned()
                        }
                        schedule::Refused::Offset => {
                            "`START` and `END` must not have a UTC offset: the zone is `TIMEZONE`".to_owned()
                        }
                    })
                };
                let (start, end) = (read(start)?, read(end)?);
                Test::DatetimeRange {
                    start,
                    end,
                    zone: zone_of(value)?,
                }
            }
        }
        "MODULO_RANGE" => {
            let shape =
                || format!("{action} must have a value object with integers `BASE`, `START` and `END`");
            if value.entries().is_none() {
                return Err(shape());
            }
            let int = |name| match value.get(name) {
                None | Some(Ordered::Null) => Err(shape()),
                Some(Ordered::Bool(b)) => Ok(i128::from(*b)),
                Some(Ordered::Number(n)) if !n.is_f64() => Ok(n
                    .as_i64()
                    .map(i128::from)
                    .or(n.as_u64().map(i128::from))
                    .unwrap_or_default()),
                Some(_) => Err("`BASE`, `START` and `END` must be integers".to_owned()),
            };
            let (base, start, end) = (int("BASE")?, int("START")?, int("END")?);
            if !(0 <= start && start <= end && end < base) {
                return Err(format!("{action} must satisfy 0 <= START <= END <= BASE - 1"));
            }
            Test::Modulo { base, start, end }
        }
        _ => unreachable!("every action in ACTIONS has a test"),
    };
    Ok(Condition { key, test })
}

/// The value's `TIMEZONE` (a false value: UTC).
fn zone_of(value: &Ordered) -> Result<TimeZone, String> {
    match value.get("TIMEZONE") {
        None => Ok(TimeZone::UTC),
        Some(tz) if !tz.truthy() => Ok(TimeZone::UTC),
        Some(Ordered::String(name)) => schedule::zone(Some(name))
            .ok_or_else(|| "`TIMEZONE` must be an IANA time zone (`Europe/Paris`)".to_owned()),
        Some(_) => Err("`TIMEZONE` must be a string".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(doc: &str) -> SchemaError {
        Schema::parse(doc.as_bytes()).unwrap_err()
    }

    #[test]
    fn errors_name_the_feature_and_the_rule() {
        let e = error(r#"{"a": {"default": false}, "b": {"default": 1}}"#);
        assert_eq!((e.feature(), e.rule()), (Some("b"), None), "{e}");
        let e = error(
            r#"{"a": {"default": false, "rules": {"r1": {"when_match": true, "conditions": [{"action": "NOPE", "key": "k", "value": 1}]}}}}"#,
        );
        assert_eq!((e.feature(), e.rule()), (Some("a"), Some("r1")), "{e}");
        assert!(e.reason().contains("EQUALS"), "{e}");
        let e = error(r#"{"a": {"default": false, "rules": {"r1": {"when_match": 1, "conditions": []}}}}"#);
        assert!(
            e.reason().contains("when_match"),
            "the first check Powertools makes: {e}"
        );
        let e = error(r#"[1]"#);
        assert_eq!(e.feature(), None);
        assert!(error("{").reason().contains("not JSON"));
    }

    #[test]
    fn a_secret_in_a_condition_never_reaches_the_error() {
        let e = error(
            r#"{"a": {"default": false, "rules": {"r": {"when_match": true, "conditions": [{"action": "MODULO_RANGE", "key": "k", "value": {"BASE": "hunter2", "START": 0, "END": 0}}]}}}}"#,
        );
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn empty_rules_fall_back_to_the_default_and_non_boolean_features_take_any_value() {
        let s = Schema::parse(br#"{"a": {"default": true, "rules": {}}, "b": {"default": {"x": 1}, "boolean_type": false, "rules": null}}"#).unwrap();
        assert!(matches!(s.feature("a"), Some(Feature::Rules { rules, .. }) if rules.is_empty()));
        assert!(matches!(
            s.feature("b"),
            Some(Feature::Rules { boolean: false, .. })
        ));
    }

    #[test]
    fn appconfig_s_format_is_recognized() {
        let s = Schema::parse(
            br#"{"dark_mode": {"enabled": true, "color": "black"}, "beta": {"enabled": false}}"#,
        )
        .unwrap();
        match s.feature("dark_mode") {
            Some(Feature::AppConfig { enabled, attributes }) => {
                assert!(*enabled);
                assert_eq!(*attributes, serde_json::json!({"color": "black"}));
            }
            other => panic!("{other:?}"),
        }
        // An attribute named `default` is an attribute.
        let s = Schema::parse(br#"{"f": {"enabled": true, "default": 10}}"#).unwrap();
        assert!(matches!(
            s.feature("f"),
            Some(Feature::AppConfig { enabled: true, .. })
        ));
        // A feature without `enabled`: Powertools' schema.
        assert!(Schema::parse(br#"{"a": {"enabled": true}, "b": {"default": true}}"#).is_err());
    }

    #[test]
    fn schedule_and_modulo_values_are_checked() {
        for (value, action, key) in [
            (
                r#"{"DAYS": ["MONDAY", "FUNDAY"]}"#,
                "SCHEDULE_BETWEEN_DAYS_OF_WEEK",
                "CURRENT_DAY_OF_WEEK",
            ),
            (
                r#"{"START": "9:00", "END": "17:00"}"#,
                "SCHEDULE_BETWEEN_TIME_RANGE",
                "CURRENT_TIME",
            ),
            (
                r#"{"START": "09:00", "END": "17:00", "TIMEZONE": "Mars/Base"}"#,
                "SCHEDULE_BETWEEN_TIME_RANGE",
                "CURRENT_TIME",
            ),
            (
                r#"{"START": "2022-10-05T12:00Z", "END": "2022-10-06"}"#,
                "SCHEDULE_BETWEEN_DATETIME_RANGE",
                "CURRENT_DATETIME",
            ),
            (
                r#"{"START": "09:00", "END": "17:00"}"#,
                "SCHEDULE_BETWEEN_TIME_RANGE",
                "CURRENT_DAY_OF_WEEK",
            ),
            (r#"{"BASE": 10, "START": 5, "END": 10}"#, "MODULO_RANGE", "k"),
            (r#"{"BASE": 10, "START": 1.5, "END": 3}"#, "MODULO_RANGE", "k"),
        ] {
            let doc = format!(
                r#"{{"f": {{"default": false, "rules": {{"r": {{"when_match": true, "conditions": [{{"action": "{action}", "key": "{key}", "value": {value}}}]}}}}}}}}"#
            );
            let e = error(&doc);
            assert_eq!(e.rule(), Some("r"), "{doc}: {e}");
        }
    }
}
