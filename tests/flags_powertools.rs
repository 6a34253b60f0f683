//! Feature flags: the same answers as Powertools for AWS Lambda (Python).
//!
//! Generates schemas (every action, valid and invalid values, mismatched types, time zones,
//! schedule bounds around the fixed clock, boundaries of every comparison) and contexts (missing
//! keys, every JSON type), evaluates each with our `FeatureFlags` and with Powertools'
//! `FeatureFlags` (installed with pip, fed through an in-memory store, its clock fixed), and
//! compares: whether the schema is accepted, every feature's value, the enabled features.
//!
//! The differences the README lists ("Feature flags") are left out of the generator, each with
//! its reason next to the pool that would produce it.
#![cfg(feature = "feature-flags")]

mod support;

use std::time::{Duration, SystemTime};

use lambda_secrets::flags::FeatureFlags;
use serde_json::{json, Value};

/// A small deterministic generator (fastrand, seeded: a failure names its seed).
struct Gen(fastrand::Rng);

impl Gen {
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.0.usize(..items.len())].clone()
    }

    fn chance(&mut self, percent: u8) -> bool {
        self.0.u8(..100) < percent
    }
}

const KEYS: [&str; 5] = ["tier", "n", "tags", "email", "extra"];

/// Values a context holds and conditions compare with: every JSON type, the boundaries of the
/// comparisons (equal, one apart, int against float, bool against int), strings that are
/// prefixes, suffixes and substrings of one another. Integers stay within ±2^63 (beyond, serde
/// reads a float where Python keeps an integer: a README difference).
fn scalar(g: &mut Gen) -> Value {
    g.pick(&[
        json!("premium"),
        json!("pre"),
        json!("um"),
        json!("premium-tier"),
        json!(""),
        json!("Premium"),
        json!("é"),
        json!(0),
        json!(1),
        json!(-1),
        json!(7),
        json!(10),
        json!(9_007_199_254_740_993_i64),
        json!(1.0),
        json!(1.5),
        json!(-0.5),
        json!(-1.0),
        json!(-7.0),
        json!(7.0),
        json!(true),
        json!(false),
        json!(null),
    ])
}

/// A short list from a small pool, so that two lists often share items (or all of them).
fn list(g: &mut Gen) -> Value {
    let pool = [
        json!("premium"),
        json!("pre"),
        json!("a"),
        json!(1),
        json!(true),
        json!(1.0),
        json!(null),
    ];
    Value::Array((0..g.0.usize(..4)).map(|_| g.pick(&pool)).collect())
}

fn value(g: &mut Gen, depth: u8) -> Value {
    match g.0.u8(..10) {
        0..=5 => scalar(g),
        6 if depth < 2 => list(g),
        7 if depth < 2 => Value::Array((0..g.0.usize(..4)).map(|_| value(g, depth + 1)).collect()),
        8 if depth < 2 => {
            let mut map = serde_json::Map::new();
            for _ in 0..g.0.usize(..3) {
                let key = g.pick(&["premium", "a", "1", "tier"]).to_owned();
                map.insert(key, value(g, depth + 1));
            }
            Value::Object(map)
        }
        _ => scalar(g),
    }
}

/// Zones: IANA names (with and without DST, odd offsets), false values (UTC in both), names
/// neither knows. (Names `dateutil` reads and the zone database lacks, POSIX TZ strings and
/// paths, are a README difference.)
fn zone(g: &mut Gen) -> Option<Value> {
    if g.chance(6) {
        return Some(g.pick(&[json!("Mars/Olympus_Mons"), json!("europe/paris"), json!(5)]));
    }
    g.pick(&[
        None,
        Some(json!("UTC")),
        Some(json!("Europe/Paris")),
        Some(json!("America/New_York")),
        Some(json!("Asia/Kolkata")),
        Some(json!("Australia/Lord_Howe")),
        Some(json!("Pacific/Chatham")),
        Some(json!("America/St_Johns")),
        Some(json!("Pacific/Kiritimati")),
        Some(json!("")),
        Some(json!(null)),
    ])
}

/// The clocks the cases run at (UTC, microseconds): ordinary, DST changes in Europe and the US,
/// a microsecond before midnight UTC on a Sunday, a Monday, a leap day.
const NOWS: [i64; 6] = [
    1_700_000_000_123_456, // a Tuesday
    1_711_846_800_000_000, // 2024-03-31T01:00:00Z: Paris moves to summer time
    1_730_613_600_500_000, // 2024-11-03T06:00:00.5Z: New York leaves summer time
    1_704_067_199_999_999, // 2023-12-31T23:59:59.999999Z
    1_704_067_230_000_000, // 2024-01-01T00:00:30Z, a Monday
    1_709_208_000_000_000, // 2024-02-29T12:00:00Z
];

/// What `now` reads on the wall clock of zone `tz` (a false or unknown one: UTC).
fn wall(now: i64, tz: &Option<Value>) -> jiff::civil::DateTime {
    let zone = tz
        .as_ref()
        .and_then(Value::as_str)
        .filter(|name| !name.is_empty())
        .and_then(|name| jiff::tz::TimeZone::get(name).ok())
        .unwrap_or(jiff::tz::TimeZone::UTC);
    jiff::Timestamp::from_microsecond(now)
        .unwrap()
        .to_zoned(zone)
        .datetime()
}

/// A time-of-day bound near `now` in the zone: the same minute, one or two either side, far.
fn near_time(g: &mut Gen, local: jiff::civil::DateTime) -> String {
    if g.chance(4) {
        return g
            .pick(&["24:00", "9:05", "09:60", "0905", "09:05:00", ""])
            .to_owned();
    }
    let shift = g.pick(&[-2i64, -1, 0, 0, 0, 1, 2, 720, -600]);
    let m = (i64::from(local.hour()) * 60 + i64::from(local.minute()) + shift).rem_euclid(1440);
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// A datetime bound near `now` in the zone (to the microsecond, a second, an hour, a day), in one
/// of the forms Python reads; sometimes malformed or with an offset.
fn near_datetime(g: &mut Gen, local: jiff::civil::DateTime) -> Value {
    if g.chance(6) {
        return g
            .pick(&[
                json!("2024-13-01T00:00"),
                json!("2024-02-30"),
                json!("2024-03-31T12:00:00Z"),
                json!("2024-03-31T12:00:00+02:00"),
                json!("nonsense"),
                json!(20240331),
                json!("2024-03-31T12:"),
            ])
            .clone();
    }
    let shift_us = g.pick(&[
        0i64,
        0,
        0,
        1,
        -1,
        1_000_000,
        -1_000_000,
        3_600_000_000,
        -86_400_000_000,
    ]);
    let dt = local
        .checked_add(jiff::SignedDuration::from_micros(shift_us))
        .unwrap();
    let (date, time) = (dt.date(), dt.time());
    let us = time.subsec_nanosecond() / 1000;
    let s = match g.0.u8(..7) {
        0 | 1 => format!(
            "{date}T{:02}:{:02}:{:02}.{us:06}",
            time.hour(),
            time.minute(),
            time.second()
        ),
        2 => format!(
            "{date} {:02}:{:02}:{:02}",
            time.hour(),
            time.minute(),
            time.second()
        ),
        3 => format!("{date}T{:02}:{:02}", time.hour(), time.minute()),
        4 => date.to_string(),
        5 => format!(
            "{}{:02}{:02}T{:02}{:02}{:02}",
            date.year(),
            date.month(),
            date.day(),
            time.hour(),
            time.minute(),
            time.second()
        ),
        _ => {
            let week = date.iso_week_date();
            format!(
                "{}-W{:02}-{}T{:02}:{:02}",
                week.year(),
                week.week(),
                week.weekday().to_monday_one_offset(),
                time.hour(),
                time.minute()
            )
        }
    };
    json!(s)
}

/// A schedule condition's value: bounds made in its zone, then the zone.
fn schedule_value(g: &mut Gen, action: &str, now: i64) -> Value {
    let tz = zone(g);
    let local = wall(now, &tz);
    let mut m = serde_json::Map::new();
    match action {
        "SCHEDULE_BETWEEN_TIME_RANGE" => {
            m.insert("START".into(), json!(near_time(g, local)));
            m.insert("END".into(), json!(near_time(g, local)));
        }
        "SCHEDULE_BETWEEN_DATETIME_RANGE" => {
            m.insert("START".into(), near_datetime(g, local));
            m.insert("END".into(), near_datetime(g, local));
        }
        _ => {
            let days = [
                "MONDAY",
                "TUESDAY",
                "WEDNESDAY",
                "THURSDAY",
                "FRIDAY",
                "SATURDAY",
                "SUNDAY",
                "DAYS",
            ];
            let today = [
                "MONDAY",
                "TUESDAY",
                "WEDNESDAY",
                "THURSDAY",
                "FRIDAY",
                "SATURDAY",
                "SUNDAY",
            ][usize::try_from(local.weekday().to_monday_zero_offset()).unwrap()];
            let mut list: Vec<Value> = (0..g.0.usize(..3)).map(|_| json!(g.pick(&days))).collect();
            if g.chance(40) {
                list.push(json!(today));
            }
            if g.chance(4) {
                list.push(json!(g.pick(&["FUNDAY", "monday"])));
            }
            let days = if g.chance(3) {
                json!(today)
            } else {
                Value::Array(list)
            };
            m.insert("DAYS".into(), days);
        }
    }
    if let Some(tz) = tz {
        m.insert("TIMEZONE".into(), tz);
    }
    Value::Object(m)
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

fn condition(g: &mut Gen, now: i64) -> Value {
    let action = if g.chance(2) { "NOPE" } else { g.pick(&ACTIONS) };
    let key = match action {
        "SCHEDULE_BETWEEN_TIME_RANGE" => "CURRENT_TIME",
        "SCHEDULE_BETWEEN_DATETIME_RANGE" => "CURRENT_DATETIME",
        "SCHEDULE_BETWEEN_DAYS_OF_WEEK" => "CURRENT_DAY_OF_WEEK",
        _ => g.pick(&KEYS),
    };
    let key = if g.chance(3) {
        g.pick(&["", "tier", "CURRENT_TIME"])
    } else {
        key
    };
    let value = match action {
        "SCHEDULE_BETWEEN_TIME_RANGE"
        | "SCHEDULE_BETWEEN_DATETIME_RANGE"
        | "SCHEDULE_BETWEEN_DAYS_OF_WEEK" => schedule_value(g, action, now),
        "MODULO_RANGE" => {
            let base = g.pick(&[
                json!(1),
                json!(4),
                json!(10),
                json!(100),
                json!(true),
                json!(0),
                json!(4.0),
            ]);
            let start = g.pick(&[json!(0), json!(1), json!(3), json!(false), json!(5)]);
            let end = g.pick(&[json!(0), json!(3), json!(9), json!(true), json!(99)]);
            json!({"BASE": base, "START": start, "END": end})
        }
        "ALL_IN_VALUE" | "ANY_IN_VALUE" | "NONE_IN_VALUE" if g.chance(90) => list(g),
        _ => value(g, 0),
    };
    let mut c = serde_json::Map::new();
    c.insert("action".into(), json!(action));
    c.insert("key".into(), json!(key));
    if !g.chance(2) {
        c.insert("value".into(), value);
    }
    Value::Object(c)
}

/// A document of 1–4 features; mostly valid, each part sometimes wrong in one of the ways
/// Powertools checks.
fn schema(g: &mut Gen, now: i64) -> String {
    let mut features = Vec::new();
    for f in 0..g.0.usize(1..5) {
        let boolean = !g.chance(25);
        let mut feature = serde_json::Map::new();
        if !boolean {
            feature.insert("boolean_type".into(), json!(false));
        }
        let default = if boolean {
            if g.chance(4) {
                value(g, 0)
            } else {
                json!(g.chance(50))
            }
        } else {
            value(g, 0)
        };
        if !g.chance(2) {
            feature.insert("default".into(), default);
        }
        let mut rules = Vec::new();
        for r in 0..g.0.usize(..4) {
            let when_match = if boolean && !g.chance(3) {
                json!(g.chance(50))
            } else {
                value(g, 0)
            };
            let n = if g.chance(60) { 1 } else { g.0.usize(2..4) };
            let conditions: Vec<Value> = (0..n).map(|_| condition(g, now)).collect();
            let conditions = if g.chance(2) {
                json!([])
            } else {
                Value::Array(conditions)
            };
            rules.push(format!(
                "{}: {{\"when_match\": {when_match}, \"conditions\": {conditions}}}",
                json!(format!("rule {r}"))
            ));
        }
        let rules = match g.0.u8(..20) {
            0 => "[]".to_owned(),
            1 => "null".to_owned(),
            _ => format!("{{{}}}", rules.join(", ")),
        };
        let mut text = Value::Object(feature).to_string();
        if g.chance(85) {
            // Rules keep their written order (serde_json's map would sort them).
            text.pop();
            if text.len() > 1 {
                text.push(',');
            }
            text.push_str(&format!("\"rules\": {rules}}}"));
        }
        features.push(format!("{}: {text}", json!(format!("feature_{f}"))));
    }
    format!("{{{}}}", features.join(", "))
}

fn context(g: &mut Gen) -> Value {
    let mut map = serde_json::Map::new();
    for key in KEYS {
        if g.chance(70) {
            let v = if key == "tags" && g.chance(70) {
                list(g)
            } else {
                value(g, 0)
            };
            map.insert(key.into(), v);
        }
    }
    Value::Object(map)
}

fn now_of(micros: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(micros as u64)
}

/// Whether Powertools' `get_enabled_features` raises on `schema`: a feature with a false
/// default and `rules` false but not an object.
fn raises_in_powertools(schema: &str) -> bool {
    let doc: Value = serde_json::from_str(schema).unwrap();
    let falsy = |v: &Value| match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    };
    doc.as_object().unwrap().values().any(|f| {
        let odd_rules = f.get("rules").is_some_and(|r| falsy(r) && !r.is_object());
        odd_rules && f.get("default").is_none_or(falsy)
    })
}

#[test]
fn our_answers_are_powertools_answers() {
    let seed = std::env::var("FLAGS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_208_u64);
    let mut g = Gen(fastrand::Rng::with_seed(seed));
    let mut cases = Vec::new();
    for _ in 0..1_500 {
        let now = g.pick(&NOWS);
        let schema = schema(&mut g, now);
        let contexts: Vec<Value> = (0..3).map(|_| context(&mut g)).collect();
        cases.push(json!({
            "schema": schema,
            "now": now,
            "contexts": contexts,
            "names": ["feature_0", "feature_1", "feature_2", "feature_3", "missing"],
        }));
    }
    let cases = Value::Array(cases);
    let theirs = support::powertools::answers(&cases);
    let missing = json!("__missing__");
    let (mut accepted, mut refused, mut known, mut mismatches) = (0, 0, 0, Vec::new());
    for (case, theirs) in cases.as_array().unwrap().iter().zip(&theirs) {
        let schema = case["schema"].as_str().unwrap();
        let now = now_of(case["now"].as_i64().unwrap());
        let ours = FeatureFlags::from_json(schema.as_bytes());
        match (&ours, theirs.get("error").is_some()) {
            (Err(_), true) => {
                refused += 1;
                continue;
            }
            (Ok(_), false) => accepted += 1,
            (Err(e), false) => {
                mismatches.push(format!("we refuse, Powertools accepts: {e}\n  {schema}"));
                continue;
            }
            (Ok(_), true) => {
                mismatches.push(format!("we accept, Powertools refuses:\n  {schema}"));
                continue;
            }
        }
        let flags = ours.unwrap();
        for (ctx, answer) in case["contexts"]
            .as_array()
            .unwrap()
            .iter()
            .zip(theirs["answers"].as_array().unwrap())
        {
            for name in case["names"].as_array().unwrap() {
                let name = name.as_str().unwrap();
                let ours = flags.evaluate_value_at(name, ctx, missing.clone(), now);
                if ours != answer["values"][name] {
                    mismatches.push(format!(
                        "{name}: we say {ours}, Powertools {}\n  context {ctx}\n  now {}\n  {schema}",
                        answer["values"][name], case["now"]
                    ));
                }
            }
            let ours: Vec<&str> = flags.enabled_features_at(ctx, now);
            let Some(theirs) = answer["enabled"].as_array() else {
                // README difference: Powertools' `get_enabled_features` raises `AttributeError`
                // on a feature whose `rules` is false but not an object (`null`, `[]`) and whose
                // default is false (`evaluate` answers the default); we list it as not enabled.
                if raises_in_powertools(schema) {
                    known += 1;
                } else {
                    mismatches.push(format!("Powertools raised {}: {schema}", answer["enabled"]));
                }
                continue;
            };
            let theirs: Vec<&str> = theirs.iter().map(|v| v.as_str().unwrap()).collect();
            if ours != theirs {
                mismatches.push(format!(
                    "enabled: we say {ours:?}, Powertools {theirs:?}\n  context {ctx}\n  now {}\n  {schema}",
                    case["now"]
                ));
            }
        }
    }
    eprintln!(
        "Powertools {}: {accepted} schemas accepted and {refused} refused by both, {known} \
         answers a README difference (seed {seed})",
        support::powertools::version()
    );
    assert!(
        accepted > 300 && refused > 100,
        "the generator should make both valid and invalid schemas: {accepted} / {refused}"
    );
    assert!(
        mismatches.is_empty(),
        "{} differences from Powertools (seed {seed}); the first ones:\n{}",
        mismatches.len(),
        mismatches
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n")
    );
}
