//! Feature-flag evaluation cost, side by side in one run: a five-rule feature (the match in its
//! last rule, so every rule is tried) evaluated against a context, next to a plain map lookup of
//! a precomputed answer (the floor: what a handler pays to read a flag it already has), and
//! through `DeclaredFlags::current` (the snapshot read and version check a handler does).
//!
//! `cargo bench --features feature-flags --bench flags`

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, Criterion};
use lambda_secrets::flags::{DeclaredFlags, FeatureFlags};
use lambda_secrets::{MemorySource, Secrets};
use serde_json::json;

#[path = "common/report.rs"]
mod report;

/// Five rules of one to three conditions of the common actions; only the last matches.
const SCHEMA: &str = r#"{
  "premium_features": {
    "default": false,
    "rules": {
      "internal staff": {"when_match": true, "conditions": [
        {"action": "ENDSWITH", "key": "email", "value": "@example.com"}]},
      "beta tenants": {"when_match": true, "conditions": [
        {"action": "IN", "key": "tenant", "value": ["t-1", "t-2", "t-3", "t-4"]}]},
      "enterprise in eu": {"when_match": true, "conditions": [
        {"action": "EQUALS", "key": "tier", "value": "enterprise"},
        {"action": "STARTSWITH", "key": "region", "value": "eu-"}]},
      "big accounts": {"when_match": true, "conditions": [
        {"action": "KEY_GREATER_THAN_VALUE", "key": "seats", "value": 500},
        {"action": "NOT_EQUALS", "key": "tier", "value": "free"}]},
      "premium canary": {"when_match": true, "conditions": [
        {"action": "EQUALS", "key": "tier", "value": "premium"},
        {"action": "MODULO_RANGE", "key": "account", "value": {"BASE": 100, "START": 0, "END": 49}},
        {"action": "ANY_IN_VALUE", "key": "groups", "value": ["early-access", "design-partners"]}]}
    }
  }
}"#;

fn benches(c: &mut Criterion) {
    let flags = FeatureFlags::from_json(SCHEMA.as_bytes()).unwrap();
    let ctx = json!({
        "email": "ana@tenant.test", "tenant": "t-42", "tier": "premium", "region": "us-east-1",
        "seats": 12, "account": 1234, "groups": ["design-partners"]
    });
    assert!(flags.evaluate("premium_features", &ctx, false));
    let answers: HashMap<String, bool> = HashMap::from([("premium_features".to_owned(), true)]);

    let mem = MemorySource::new();
    mem.set("/app/flags", SCHEMA);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let secrets = rt
        .block_on(Secrets::builder().add(mem.value("flags", "/app/flags")).load())
        .unwrap();
    let declared = DeclaredFlags::new(&secrets, "flags").unwrap();

    let mut group = c.benchmark_group("flag_evaluation");
    group.bench_function("five_rules", |b| {
        b.iter(|| black_box(&flags).evaluate(black_box("premium_features"), black_box(&ctx), false))
    });
    group.bench_function("declared_current_then_five_rules", |b| {
        b.iter(|| {
            black_box(&declared).current().unwrap().evaluate(
                black_box("premium_features"),
                black_box(&ctx),
                false,
            )
        })
    });
    group.bench_function("map_lookup", |b| {
        b.iter(|| {
            *black_box(&answers)
                .get(black_box("premium_features"))
                .unwrap_or(&false)
        })
    });
    group.finish();
}

criterion_group!(all, benches);

fn main() {
    all();
    Criterion::default().configure_from_args().final_summary();
    println!("\n== feature flags, side by side (medians of this run) ==");
    report::compare("flag_evaluation", "five_rules", "map_lookup");
    report::compare(
        "flag_evaluation",
        "declared_current_then_five_rules",
        "five_rules",
    );
}
