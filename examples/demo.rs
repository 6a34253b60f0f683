//! End-to-end demo, no AWS account needed: starts the moto emulator (installing it with pip on
//! first run) behind our counting proxy, seeds parameters, loads them at "cold start", invokes a
//! `lambda_runtime`-style handler through `SecretsLayer`, rotates a value in the emulator and
//! shows the running "container" pick it up after the TTL, without a restart. Values are never
//! printed: only their lengths and versions.
//!
//! `cargo run --example demo`

use std::convert::Infallible;
use std::time::{Duration, Instant};

use lambda_runtime::{Context, LambdaEvent};
use lambda_secrets::{Secrets, Snapshot, SsmSource};
use serde_json::{json, Value};
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[path = "../tests/support/mod.rs"]
mod support;

async fn handler((_event, secrets): (LambdaEvent<Value>, Snapshot)) -> Result<Value, Infallible> {
    let info = secrets.info("db_password").cloned();
    Ok(json!({
        "db_password_bytes": secrets.get("db_password").map(|v| v.len()).unwrap_or(0),
        "db_password_version": info.and_then(|i| i.version),
        "config_keys": secrets.keys().len() - 2,
    }))
}

#[tokio::main]
async fn main() {
    println!("starting the moto emulator (first run installs it with pip)...");
    let moto = support::moto();
    let proxy = support::FaultProxy::start(&moto.endpoint).await;
    proxy.set_latency(Duration::from_millis(10));
    let seed = support::ssm_client(&moto.endpoint).await;
    let prefix = support::unique_prefix("demo");
    let password = format!("{prefix}/db/password");
    support::put_param(&seed, &password, "correct horse battery", "SecureString").await;
    support::put_param(
        &seed,
        &format!("{prefix}/api-key"),
        "k-1234567890",
        "SecureString",
    )
    .await;
    for i in 0..12 {
        support::put_param(&seed, &format!("{prefix}/config/flag-{i:02}"), "on", "String").await;
    }
    println!("seeded 14 parameters under {prefix} (moto at {})", moto.endpoint);

    let ttl = Duration::from_secs(2);
    let ssm = SsmSource::new(&support::sdk_config(&proxy.endpoint()).await);
    let started = Instant::now();
    let secrets = Secrets::builder()
        .default_ttl(ttl)
        .add(ssm.parameter("db_password", &password))
        .add(ssm.parameter("api_key", format!("{prefix}/api-key")))
        .add(ssm.path_with_prefix("config/", format!("{prefix}/config")))
        .load()
        .await
        .expect("cold-start load");
    println!(
        "cold start: loaded {} values in {:?} with {:?} (proxy saw {:?})",
        secrets.snapshot().len(),
        started.elapsed(),
        secrets.stats().calls,
        proxy.calls_all()
    );

    let function = ServiceBuilder::new()
        .layer(secrets.layer())
        .service(service_fn(handler));
    // One invocation, as the Lambda runtime makes it: `ready`, then `call`.
    let invoke = |n: u32| {
        let event = LambdaEvent::new(json!({ "n": n }), Context::default());
        let call = function.clone().oneshot(event);
        async move {
            let Ok(response) = call.await;
            response
        }
    };
    println!("invocation 1: {}", invoke(1).await);

    support::put_param(
        &seed,
        &password,
        "rotated: correct horse battery staple",
        "SecureString",
    )
    .await;
    println!("rotated {password} in the emulator (now version 2); TTL is {ttl:?}");
    println!(
        "invocation 2 (within TTL, served from memory): {}",
        invoke(2).await
    );

    let rotated_at = Instant::now();
    for n in 3.. {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let out = invoke(n).await;
        println!(
            "invocation {n} at +{:.1}s: {out}",
            rotated_at.elapsed().as_secs_f64()
        );
        if out["db_password_version"] == "2" {
            break;
        }
        assert!(n < 20, "the rotation was not picked up");
    }
    let stats = secrets.stats();
    println!(
        "picked up without restart. AWS calls: {:?}, refreshes: {}, throttled: {}, retries: {}",
        stats.calls, stats.refreshes, stats.throttled, stats.retries
    );
}
