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
//! Then a steady-state simulation in virtual time: 1,000 warm containers x 100 parameters at a
//! TTL of 300 s, each invoked about once a second, scheduled with this crate's own functions
//! (`schedule::next_refresh`, `schedule::spread_window`, `schedule::call_slot`, the defaults
//! `schedule::DEFAULT_SPREAD` and a jitter of 0.1), reporting the peak 1-second call rate against
//! the mean, beside the same fleet with TTL jitter alone (no random first phase, no spreading).
//!
//! `cargo run --all-features --example fleet [-- K PARAMS TPS [SEED]]` (default 20 100 40 7; SEED
//! seeds the steady-state simulation)

use std::time::{Duration, Instant};

// The crate's own scheduling functions (a private module of pure functions), compiled in here so
// that the simulation schedules exactly as the library does.
#[allow(dead_code)]
#[path = "../src/time/schedule.rs"]
mod schedule;
use lambda_secrets::{RateLimits, Secrets, SsmSource};
use schedule::{call_slot, next_refresh, spread_window, DEFAULT_SPREAD};

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
        "loader", "failed loads", "completion", "calls", "throttled", "peak 1s sent"
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
    steady_state(*args.get(3).unwrap_or(&7) as u64);
    println!(
        "\nlambda-secrets: {} failed loads, completed in {:.2?} (target: 0 failed, within 1.2 x {ideal:?} = {bound:?}): {}",
        ours.failed,
        ours.completion,
        if ok { "met" } else { "NOT met" }
    );
    // Timing is reported, not asserted (a busy machine may be slower); a failed load is a failure.
    if ours.failed > 0 {
        std::process::exit(1);
    }
}

/// The TTL jitter of a default builder.
const JITTER: f64 = 0.1;

/// Per-second call counts of `containers` warm containers over `hours` of virtual time, from a
/// deploy (cold starts within 10 s) on. `spread`: this crate's scheduling; otherwise TTL jitter
/// alone, every refresh's calls at once.
fn simulate(
    containers: usize,
    calls_per_refresh: usize,
    ttl: Duration,
    hours: f64,
    spread: bool,
    seed: u64,
) -> Vec<u32> {
    let end = hours * 3600.0;
    let mut bins = vec![0u32; end as usize + 1];
    let mut rng = fastrand::Rng::with_seed(seed);
    // Invocations arrive about once a second per container; a refresh starts at the first
    // invocation after it is due. Arrivals are memoryless, so that is the due time plus an
    // exponential wait. The next refresh is counted from the start of this one, as the store
    // does; the calls of a spread refresh start at their slots of the window (evenly spread from a
    // random offset; a timer fires only while the container is thawed: the slot, then the next
    // invocation).
    let next_invocation = |rng: &mut fastrand::Rng, after: f64| after - (1.0 - rng.f64()).ln();
    for _ in 0..containers {
        let deployed = rng.f64() * 10.0;
        let mut start = next_invocation(&mut rng, deployed);
        let mut first = true;
        while start < end {
            let delay = if spread {
                next_refresh(ttl, JITTER, first, rng.f64())
            } else {
                ttl.mul_f64(1.0 - JITTER * rng.f64())
            };
            first = false;
            let window = spread_window(ttl, if spread { DEFAULT_SPREAD } else { 0.0 });
            let offset = rng.f64();
            for call in 0..calls_per_refresh {
                let slot = call_slot(window, offset, call as u32);
                let at = if slot.is_zero() {
                    start
                } else {
                    next_invocation(&mut rng, start + slot.as_secs_f64())
                };
                if at < end {
                    bins[at as usize] += 1;
                }
            }
            start = next_invocation(&mut rng, start + delay.as_secs_f64());
        }
    }
    bins
}

fn steady_state(seed: u64) {
    let (containers, ttl) = (1000, Duration::from_secs(300));
    println!("\nsteady state, virtual time: {containers} warm containers x 100 parameters (10 calls a refresh), TTL {ttl:?}, one invocation a second each; seconds 3600-7200 after a deploy (seed {seed})");
    println!(
        "{:<44} {:>10} {:>10} {:>10}",
        "schedule", "mean/s", "peak 1s", "peak/mean"
    );
    for (name, spread) in [
        ("lambda-secrets (random first phase, spread)", true),
        ("TTL jitter alone, calls at once", false),
    ] {
        let bins = simulate(containers, 10, ttl, 2.0, spread, seed);
        let window = &bins[3600..7200];
        let mean = window.iter().map(|&c| c as f64).sum::<f64>() / window.len() as f64;
        let peak = *window.iter().max().unwrap_or(&0);
        let ratio = peak as f64 / mean;
        let verdict = match (spread, ratio <= 1.7) {
            (false, _) => "",
            (true, true) => "  (target <= 1.7: met)",
            (true, false) => "  (target <= 1.7: NOT met)",
        };
        println!("{name:<44} {mean:>10.1} {peak:>10} {ratio:>10.2}{verdict}");
    }
    let mean = 1000.0 * 10.0 / 285.0;
    println!(
        "(independent containers make the per-second count about Poisson: at a mean of {mean:.0}/s the largest of 3,600 seconds is typically ~1.6 x the mean)"
    );
}
