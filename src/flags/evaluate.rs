//! Evaluation of a compiled [`Schema`] against a context, with Powertools' answers: the first
//! rule whose conditions all match gives its `when_match`, else the feature's `default`; a
//! condition whose key the context lacks, or whose comparison Python would refuse, does not
//! match.

use std::time::SystemTime;

use serde_json::Value;

use super::context::FlagContext;
use super::python::{self, Refused};
use super::schedule;
use super::schema::{Condition, Feature, Rule, Test, Which};

/// The feature's value for `ctx` at `now`.
pub(crate) fn value(feature: &Feature, ctx: &(impl FlagContext + ?Sized), now: SystemTime) -> Value {
    match feature {
        Feature::AppConfig { enabled, .. } => Value::Bool(*enabled),
        Feature::Rules {
            default,
            boolean,
            rules,
        } => {
            if rules.is_empty() {
                return match boolean {
                    true => Value::Bool(python::truthy(default)),
                    false => default.clone(),
                };
            }
            match matching(rules, ctx, now) {
                Some(rule) if *boolean => Value::Bool(python::truthy(&rule.when_match)),
                Some(rule) => rule.when_match.clone(),
                None => default.clone(),
            }
        }
    }
}

/// Whether the feature counts as enabled for `ctx` (Powertools' `get_enabled_features`: a true
/// default without rules, else a true value of the rules).
pub(crate) fn enabled(feature: &Feature, ctx: &(impl FlagContext + ?Sized), now: SystemTime) -> bool {
    match feature {
        Feature::AppConfig { enabled, .. } => *enabled,
        Feature::Rules { default, rules, .. } => {
            if rules.is_empty() {
                return python::truthy(default);
            }
            match matching(rules, ctx, now) {
                Some(rule) => python::truthy(&rule.when_match),
                None => python::truthy(default),
            }
        }
    }
}

fn matching<'a>(rules: &'a [Rule], ctx: &(impl FlagContext + ?Sized), now: SystemTime) -> Option<&'a Rule> {
    rules
        .iter()
        .find(|rule| rule.conditions.iter().all(|c| matches(c, ctx, now)))
}

fn matches(condition: &Condition, ctx: &(impl FlagContext + ?Sized), now: SystemTime) -> bool {
    let local = |zone| schedule::local(now, zone);
    match &condition.test {
        Test::TimeRange { start, end, zone } => {
            local(zone).is_some_and(|t| schedule::in_time_range(t, *start, *end))
        }
        Test::DatetimeRange { start, end, zone } => local(zone).is_some_and(|t| *start <= t && t <= *end),
        Test::Days { days, zone } => {
            local(zone).is_some_and(|t| days.iter().any(|d| d == schedule::day_name(t)))
        }
        test => match ctx.value(&condition.key) {
            Some(a) => compare(test, a).unwrap_or(false),
            None => false,
        },
    }
}

fn compare(test: &Test, a: &Value) -> Result<bool, Refused> {
    Ok(match test {
        Test::Equals { value, negate } => python::eq(a, value) != *negate,
        Test::Order { value, accept } => {
            // Less, Equal, Greater: -1, 0, 1.
            accept[(python::cmp(a, value)? as i8 + 1) as usize]
        }
        Test::Affix { value, ends } => python::affix(a, value, *ends)?,
        Test::KeyIn { value, negate } => python::contains(value, a)? != *negate,
        Test::ValueIn { value, negate } => python::contains(a, value)? != *negate,
        Test::List { value, which } => {
            let Value::Array(items) = a else {
                return Err(Refused);
            };
            let within = |item: &Value| value.iter().any(|v| python::eq(v, item));
            match which {
                Which::All => items.iter().all(within),
                Which::Any => items.iter().any(within),
                Which::None => !items.iter().any(within),
            }
        }
        Test::Modulo { base, start, end } => python::modulo_in(a, *base, *start, *end)?,
        Test::TimeRange { .. } | Test::DatetimeRange { .. } | Test::Days { .. } => {
            unreachable!("the schedule tests read the clock, not the context")
        }
    })
}
