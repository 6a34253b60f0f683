//! Feature flags from a declared value, evaluated per invocation, with Powertools' rule schema:
//! a rollout to a share of tenants, a rule for staff, a non-boolean limit, and a new version of
//! the document picked up after a refresh (compiled once). Prints what each request gets, then
//! the cost of an evaluation next to a plain map lookup, measured in this run.
//!
//! `cargo run --release --no-default-features --features feature-flags --example feature_flags`
//! (figures from a debug build say little)
//!
//! In a function, the document would come from `AppConfigSource::profile` (feature `appconfig`)
//! or an SSM parameter; here a `MemorySource` stands in, so the example runs anywhere.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use lambda_secrets::flags::DeclaredFlags;
use lambda_secrets::{MemorySource, Secrets};
use serde_json::json;

const V1: &str = r#"{
  "new_checkout": {
    "default": false,
    "rules": {
      "staff": {"when_match": true, "conditions": [
        {"action": "ENDSWITH", "key": "email", "value": "@example.com"}]},
      "a tenth of tenants": {"when_match": true, "conditions": [
        {"action": "MODULO_RANGE", "key": "tenant", "value": {"BASE": 10, "START": 0, "END": 0}}]}
    }
  },
  "rate_limit": {
    "default": {"rps": 10},
    "boolean_type": false,
    "rules": {
      "premium": {"when_match": {"rps": 100}, "conditions": [
        {"action": "EQUALS", "key": "tier", "value": "premium"}]}
    }
  }
}"#;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mem = MemorySource::new();
    mem.set("/shop/flags", V1);
    let secrets = Secrets::builder()
        .add(mem.value("flags", "/shop/flags").ttl(Duration::from_secs(60)))
        .load()
        .await?;
    let flags = DeclaredFlags::new(&secrets, "flags")?; // a bad document fails here, at cold start

    let requests = [
        json!({"email": "ana@example.com", "tenant": 17, "tier": "basic"}),
        json!({"email": "bo@customer.test", "tenant": 40, "tier": "premium"}),
        json!({"email": "cy@customer.test", "tenant": 41, "tier": "basic"}),
    ];
    println!("version 1:");
    for ctx in &requests {
        let now = flags.current()?;
        println!(
            "  {:<18} new_checkout={:<5} rate_limit={} enabled={:?}",
            ctx["email"].as_str().unwrap_or(""),
            now.evaluate("new_checkout", ctx, false),
            now.evaluate_value("rate_limit", ctx, json!(null)),
            now.enabled_features(ctx),
        );
    }

    // A new version rolls out to everyone; the next read after the refresh compiles it once.
    mem.set("/shop/flags", V1.replace(r#""END": 0"#, r#""END": 9"#));
    secrets.refresh_now("flags").await?;
    println!("version 2 (the rollout widened to every tenant):");
    for ctx in &requests {
        println!(
            "  {:<18} new_checkout={}",
            ctx["email"].as_str().unwrap_or(""),
            flags.current()?.evaluate("new_checkout", ctx, false)
        );
    }

    // Cost, side by side in this run: evaluating the two-rule feature (the match in its last
    // rule) against reading a precomputed answer from a map.
    let compiled = flags.current()?;
    let ctx = &requests[2];
    let answers: HashMap<String, bool> = HashMap::from([("new_checkout".to_owned(), true)]);
    let n = 200_000;
    let time = |f: &dyn Fn() -> bool| {
        let start = Instant::now();
        for _ in 0..n {
            black_box(f());
        }
        start.elapsed() / n
    };
    let evaluated = time(&|| compiled.evaluate(black_box("new_checkout"), black_box(ctx), false));
    let looked_up = time(&|| *answers.get(black_box("new_checkout")).unwrap_or(&false));
    let through = time(&|| {
        flags
            .current()
            .is_ok_and(|f| f.evaluate(black_box("new_checkout"), black_box(ctx), false))
    });
    println!("per call, mean of {n}: evaluate {evaluated:?}, through DeclaredFlags::current {through:?}, HashMap lookup {looked_up:?}");
    Ok(())
}
