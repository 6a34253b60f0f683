//! Fleet simulation: K cold containers loading at once against an account-wide SSM quota.
//!
//! Starts the moto emulator behind our fault proxy, which enforces the quota like SSM (HTTP 400
//! `ThrottlingException` past N calls in any second), seeds the parameters, and starts K
//! independent loaders at the same instant — each with its own cache, SDK client and rate
//! limits, as separate containers have. It reports failed loads, throttles answered, completion
//! time and the peak 1-second rate, for lambda-secrets and, in the same run, for a naive loader
//! (every batch of 10 names sent at once, the SDK's standard retries: what Middy and Powertools
//! do).
//!
//! `cargo run --all-features --example fleet [-- K PARAMS TPS]` (default 20 100 40)

use std::time::{Duration, Instant};

use lambda_secrets::{RateLimits, Secrets, SsmSource};

#[path = "../tests/support/mod.rs"]
mod support;

struct Outcome {
    failed: usize,
    completion: Duration,
    calls: u64,
    throttled: u64,
    peak: usize,
}

async fn run_fleet<F, Fut>(proxy: &support::FaultProxy, k: usize, load: F) -> Outcome
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    proxy.reset_counts();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(k));
    let started = Instant::now();
    let tasks: Vec<_> = (0..k)
        .map(|i| {
            let barrier = barrier.clone();
            let load = load(i);
            tokio::spawn(async move {
                barrier.wait().await;
                let result = load.await;
                (result, Instant::now())
            })
        })
        .collect();
    let mut failed = 0;
    let mut last = started;
    for task in tasks {
        let (result, done) = task.await.expect("task");
        if let Err(e) = result {
            failed += 1;
            eprintln!("  load failed: {}", e.lines().next().unwrap_or(""));
        }
        last = last.max(done);
    }
    Outcome {
        failed,
        completion: last - started,
        calls: proxy.calls_all().values().sum(),
        throttled: proxy.throttled(),
        peak: proxy.peak_in_any_1s_window(),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (k, params, tps) = (
        *args.first().unwrap_or(&20),
        *args.get(1).unwrap_or(&100),
        *args.get(2).unwrap_or(&40),
    );
    let moto = support::moto();
    let proxy = support::FaultProxy::start(&moto.endpoint).await;
    let seed = support::ssm_client(&moto.endpoint).await;
    let prefix = support::unique_prefix("fleet");
    let names: Vec<String> = (0..params).map(|i| format!("{prefix}/param-{i:03}")).collect();
    for name in &names {
        support::put_param(&seed, name, "value", "SecureString").await;
    }
    let config = support::sdk_config(&proxy.endpoint()).await;
    proxy.throttle_tps(Some(tps as u32));
    let calls_needed = k * params.div_ceil(10);
    let ideal = Duration::from_secs_f64(calls_needed as f64 / tps as f64);
    println!("{k} cold containers x {params} parameters, account quota {tps} TPS: {calls_needed} GetParameters calls needed, {ideal:?} at the quota");

    let ours = run_fleet(&proxy, k, |_| {
        let ssm = SsmSource::new(&config);
        let names = names.clone();
        async move {
            let mut builder = Secrets::builder().rate_limits(RateLimits::new());
            for (i, name) in names.iter().enumerate() {
                builder = builder.add(ssm.parameter(format!("k{i}"), name));
            }
            builder.load().await.map(drop).map_err(|e| e.to_string())
        }
    })
    .await;

    tokio::time::sleep(Duration::from_millis(1100)).await; // let the quota window empty
    let naive = run_fleet(&proxy, k, |_| {
        let client = aws_sdk_ssm::Client::new(&config);
        let names = names.clone();
        async move {
            let batches = names.chunks(10).map(|chunk| {
                client
                    .get_parameters()
                    .set_names(Some(chunk.to_vec()))
                    .with_decryption(true)
                    .send()
            });
            for result in futures_util::future::join_all(batches).await {
                result.map_err(|e| format!("{:?}", aws_sdk_ssm::error::ProvideErrorMetadata::code(&e)))?;
            }
            Ok(())
        }
    })
    .await;

    println!(
        "\n{:<28} {:>12} {:>12} {:>8} {:>10} {:>12}",
        "loader", "failed loads", "completion", "calls", "throttled", "peak 1s rate"
    );
    for (name, o) in [
        ("lambda-secrets", &ours),
        ("naive (batches at once, SDK retries)", &naive),
    ] {
        println!(
            "{name:<28} {:>12} {:>12} {:>8} {:>10} {:>12}",
            format!("{}/{k}", o.failed),
            format!("{:.2?}", o.completion),
            o.calls,
            o.throttled,
            o.peak
        );
    }
    let bound = ideal.mul_f64(1.2);
    let ok = ours.failed == 0 && ours.completion <= bound;
    println!(
        "\nlambda-secrets: {} failed loads, completed in {:.2?} (target: 0 failed, within 1.2 x {ideal:?} = {bound:?}): {}",
        ours.failed,
        ours.completion,
        if ok { "met" } else { "NOT met" }
    );
    if !ok {
        std::process::exit(1);
    }
}
