//! Python's operators over JSON values, as Powertools applies them to a condition: `==`, the
//! orderings, `in`, `str.startswith` and `%`.
//!
//! Powertools evaluates `context_value <op> condition_value` with Python's own semantics, and a
//! comparison that raises (a `TypeError`: `"a" < 1`, `None in "abc"`, `[1] in {}`) makes the
//! condition false. Here an operation that Python would refuse is `Err(Refused)`, which the
//! caller turns into "no match". The rules that differ from Rust's or from `serde_json`'s:
//! - `True == 1` and `1 == 1.0` (booleans are integers; integers and floats compare exactly);
//! - lists compare item by item, then by length; dicts only for equality;
//! - `x in "text"` is a substring test (only for a string `x`), `x in [..]` compares by `==`,
//!   `x in {..}` looks up a key (an unhashable list or dict is refused).

use std::cmp::Ordering;

use serde_json::Value;

/// Python raised (`TypeError`, `AttributeError`): the condition does not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused;

/// A number as Python sees it: booleans are the integers 0 and 1.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

fn num(v: &Value) -> Option<Num> {
    match v {
        Value::Bool(b) => Some(Num::Int(i128::from(*b))),
        Value::Number(n) => Some(match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Num::Int(i128::from(i)),
            (None, Some(u)) => Num::Int(i128::from(u)),
            _ => Num::Float(n.as_f64().unwrap_or(f64::NAN)),
        }),
        _ => None,
    }
}

/// An integer against a float, exactly (as Python compares them). `None`: NaN.
fn int_float(i: i128, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    // Rounding is monotonic, so a strict order of the rounded integer holds for the integer.
    match (i as f64).partial_cmp(&f)? {
        Ordering::Equal => Some(i.cmp(&(f as i128))),
        other => Some(other),
    }
}

fn num_cmp(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
        (Num::Float(a), Num::Float(b)) => a.partial_cmp(&b),
        (Num::Int(a), Num::Float(b)) => int_float(a, b),
        (Num::Float(a), Num::Int(b)) => int_float(b, a).map(Ordering::reverse),
    }
}

/// Python's `a == b`.
pub(crate) fn eq(a: &Value, b: &Value) -> bool {
    if let (Some(x), Some(y)) = (num(a), num(b)) {
        return num_cmp(x, y) == Some(Ordering::Equal);
    }
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| eq(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| eq(v, w)))
        }
        _ => false,
    }
}

/// The order Python's `<`, `<=`, `>`, `>=` give `a` and `b`, or `Refused` where they raise.
pub(crate) fn cmp(a: &Value, b: &Value) -> Result<Ordering, Refused> {
    if let (Some(x), Some(y)) = (num(a), num(b)) {
        return num_cmp(x, y).ok_or(Refused);
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)), // UTF-8 order is code-point order
        (Value::Array(x), Value::Array(y)) => {
            // The first items that differ decide; else the shorter list is less.
            match x.iter().zip(y).find(|(x, y)| !eq(x, y)) {
                Some((x, y)) => cmp(x, y),
                None => Ok(x.len().cmp(&y.len())),
            }
        }
        _ => Err(Refused),
    }
}

/// Python's `item in container`.
pub(crate) fn contains(container: &Value, item: &Value) -> Result<bool, Refused> {
    match container {
        Value::String(text) => match item {
            Value::String(part) => Ok(text.contains(part.as_str())),
            _ => Err(Refused),
        },
        Value::Array(items) => Ok(items.iter().any(|x| eq(x, item))),
        Value::Object(map) => match item {
            Value::String(key) => Ok(map.contains_key(key)),
            // Hashable, but never equal to a key (JSON keys are strings).
            Value::Null | Value::Bool(_) | Value::Number(_) => Ok(false),
            Value::Array(_) | Value::Object(_) => Err(Refused),
        },
        _ => Err(Refused),
    }
}

/// Python's `a.startswith(b)` (`ends`: `a.endswith(b)`): `a` and `b` strings, else refused.
pub(crate) fn affix(a: &Value, b: &Value, ends: bool) -> Result<bool, Refused> {
    match (a, b) {
        (Value::String(a), Value::String(b)) if ends => Ok(a.ends_with(b.as_str())),
        (Value::String(a), Value::String(b)) => Ok(a.starts_with(b.as_str())),
        _ => Err(Refused),
    }
}

/// Powertools' `MODULO_RANGE`: `start <= a % base <= end`, Python's `%` (the result has the
/// sign of `base`, which validation keeps positive), for an integer, boolean or float `a`.
pub(crate) fn modulo_in(a: &Value, base: i128, start: i128, end: i128) -> Result<bool, Refused> {
    if base == 0 {
        return Err(Refused); // ZeroDivisionError (validation never lets it through)
    }
    match num(a).ok_or(Refused)? {
        Num::Int(i) => {
            let m = match i.rem_euclid(base.abs()) {
                r if base < 0 && r != 0 => r + base,
                r => r,
            };
            Ok(start <= m && m <= end)
        }
        Num::Float(f) => {
            let b = base as f64;
            let mut m = f % b;
            if m != 0.0 {
                if (b < 0.0) != (m < 0.0) {
                    m += b;
                }
            } else {
                m = 0.0_f64.copysign(b);
            }
            let within = |lo: i128, x: f64, hi: i128| {
                int_float(lo, x).is_some_and(|o| o != Ordering::Greater)
                    && int_float(hi, x).is_some_and(|o| o != Ordering::Less)
            };
            Ok(within(start, m, end))
        }
    }
}

/// Python's `bool(v)`.
pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => match num(v) {
            Some(Num::Int(i)) => i != 0,
            _ => n.as_f64().is_some_and(|f| f != 0.0),
        },
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn equality_is_python_s() {
        assert!(eq(&json!(true), &json!(1)));
        assert!(eq(&json!(1), &json!(1.0)));
        assert!(!eq(&json!(1), &json!("1")));
        assert!(eq(&json!([1, {"a": true}]), &json!([1.0, {"a": 1}])));
        assert!(!eq(&json!([1]), &json!([1, 2])));
        assert!(eq(&json!(null), &json!(null)));
        assert!(!eq(
            &json!(9_007_199_254_740_993_i64),
            &json!(9_007_199_254_740_992.0)
        ));
    }

    #[test]
    fn orderings_are_python_s_and_mismatched_types_are_refused() {
        assert_eq!(cmp(&json!(2), &json!(1.5)), Ok(Ordering::Greater));
        assert_eq!(cmp(&json!(false), &json!(0.5)), Ok(Ordering::Less));
        assert_eq!(cmp(&json!("B"), &json!("a")), Ok(Ordering::Less));
        assert_eq!(cmp(&json!("é"), &json!("z")), Ok(Ordering::Greater));
        assert_eq!(cmp(&json!([1, 2]), &json!([1, 3])), Ok(Ordering::Less));
        assert_eq!(cmp(&json!([1, 2]), &json!([1])), Ok(Ordering::Greater));
        assert_eq!(cmp(&json!([1, "a"]), &json!([1, 2])), Err(Refused));
        assert_eq!(cmp(&json!([{"a": 1}]), &json!([{"a": 1}])), Ok(Ordering::Equal));
        assert_eq!(cmp(&json!("1"), &json!(1)), Err(Refused));
        assert_eq!(cmp(&json!(null), &json!(null)), Err(Refused));
        assert_eq!(cmp(&json!({}), &json!({})), Err(Refused));
    }

    #[test]
    fn membership_is_python_s() {
        assert_eq!(contains(&json!("premium-tier"), &json!("tier")), Ok(true));
        assert_eq!(contains(&json!("abc"), &json!("")), Ok(true));
        assert_eq!(contains(&json!("abc"), &json!(1)), Err(Refused));
        assert_eq!(contains(&json!([1, "a"]), &json!(true)), Ok(true));
        assert_eq!(contains(&json!({"a": 1}), &json!("a")), Ok(true));
        assert_eq!(contains(&json!({"1": 1}), &json!(1)), Ok(false));
        assert_eq!(contains(&json!({"a": 1}), &json!(["a"])), Err(Refused));
        assert_eq!(contains(&json!(12), &json!(1)), Err(Refused));
        assert_eq!(affix(&json!("premium"), &json!("pre"), false), Ok(true));
        assert_eq!(affix(&json!("premium"), &json!("um"), true), Ok(true));
        assert_eq!(affix(&json!(["premium"]), &json!("pre"), false), Err(Refused));
        assert_eq!(affix(&json!("premium"), &json!(["pre"]), false), Err(Refused));
    }

    #[test]
    fn modulo_is_python_s() {
        assert_eq!(modulo_in(&json!(7), 4, 3, 3), Ok(true));
        assert_eq!(modulo_in(&json!(-1), 4, 3, 3), Ok(true), "floor modulo");
        assert_eq!(modulo_in(&json!(true), 4, 1, 1), Ok(true));
        assert_eq!(modulo_in(&json!(7.5), 4, 3, 3), Ok(false), "3.5 is above 3");
        assert_eq!(modulo_in(&json!(-0.5), 4, 3, 3), Ok(false), "3.5");
        assert_eq!(modulo_in(&json!(-0.5), 4, 0, 3), Ok(false));
        assert_eq!(modulo_in(&json!(6.0), 4, 2, 2), Ok(true));
        assert_eq!(modulo_in(&json!("7"), 4, 3, 3), Err(Refused));
        assert_eq!(modulo_in(&json!(u64::MAX), 10, 5, 5), Ok(true));
    }

    #[test]
    fn truth_values_are_python_s() {
        for (v, t) in [
            (json!(null), false),
            (json!(0), false),
            (json!(0.0), false),
            (json!(""), false),
            (json!([]), false),
            (json!({}), false),
            (json!(-2), true),
            (json!("x"), true),
        ] {
            assert_eq!(truthy(&v), t, "{v}");
        }
    }
}
