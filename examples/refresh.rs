//! Refresh measurement: how soon a changed value is served, and what refreshing costs the
//! invocations, side by side for the default refresh spread (0.1) and for no spreading (0.0),
//! in one run. No AWS account needed: the moto emulator runs behind our fault proxy.
//!
//! **Scenario A** (a function holding 100 SSM SecureString parameters and 10 Secrets Manager
//! secrets, TTL 2 s, every call answered 20 ms late): one invocation every 50 ms for 6 s through
//! the real tower `Layer` (`ServiceBuilder::new().layer(secrets.layer())` around a
//! `lambda_runtime`-style handler taking `(LambdaEvent<Value>, Snapshot)`), each reading all 110
//! values. From 1 s on, every 1.37 s (a period sharing nothing with the TTL or the invocation
//! grid, so the changes fall at every phase of the refresh schedule), one parameter is
//! overwritten and one secret rotated (a new version becomes `AWSCURRENT`). Reported per
//! configuration: for every change, the time from the change (its API call answered) to the
//! start of the first invocation serving it or a later version (worst and median over the
//! changes), the worst invocation latency
//! (`ready` + `call`), invocations over 5 ms, errors, API calls per operation, waits and refresh
//! failures, and when the calls reached the proxy; then the target (change served within
//! TTL x 1.1 + 0.5 s, no invocation over 5 ms, no error) for the default.
//!
//! **Scenario B** (what `lambda-secrets check --secret A --secret B --ttl 1s --repeat 40
//! --interval-ms 100` does, in-process): two secrets, TTL 1 s, `fresh_snapshot()` every 100 ms
//! for 4 s, A rotated at 1.5 s. Reported: the time to see the new version of A, and the
//! `DescribeSecret` / `GetSecretValue` calls, for both configurations.
//!
//! Each configuration has its own parameter names and rate limits (`RateLimits::new()`, the
//! defaults a fresh container has), so one does not affect the other. Invocations run on the
//! main thread (as under `lambda_runtime::run`) of their own runtime; the proxy and the changes,
//! standing for AWS and the operator, run on another. Values are never printed.
//! Timing is reported, never asserted (machines are busy); the example exits non-zero only if
//! a load fails or an invocation errors.
//!
//! `cargo run --all-features --example refresh [-- FIRST_CHANGE_SECONDS]` (default 1)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Context, LambdaEvent};
use lambda_secrets::{RateLimits, Secrets, SecretsManagerSource, Snapshot, SsmSource};
use serde_json::{json, Value};
use tokio::time::MissedTickBehavior;
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[path = "../tests/support/mod.rs"]
mod support;

const LATENCY: Duration = Duration::from_millis(20);
const PARAMS: usize = 100;
const SECRETS: usize = 10;
const TTL_A: Duration = Duration::from_secs(2);
const EVERY: Duration = Duration::from_millis(50);
/// The run lasts this long, or until 5 s after the change if that is later.
const RUN: Duration = Duration::from_secs(15);
/// The period of the changes, and how long before the end of the run the last one is made (so
/// that each change has time to be served).
const CHANGE_EVERY: Duration = Duration::from_millis(1370);
const LAST_CHANGE_BEFORE_END: Duration = Duration::from_secs(4);
/// When the change is made, unless given as the first argument (seconds).
const CHANGE_AT: Duration = Duration::from_secs(1);
const SLOW: Duration = Duration::from_millis(5);
const PARAM_KEY: &str = "p042";
const SECRET_KEY: &str = "s03";

const TTL_B: Duration = Duration::from_secs(1);
const ROUNDS_B: u32 = 40;
const INTERVAL_B: Duration = Duration::from_millis(100);
const ROTATE_B_AT: Duration = Duration::from_millis(1500);

/// The two configurations compared: a label and the spread (`None`: the builder's default).
const CONFIGS: [(&str, Option<f64>); 2] = [("default (spread 0.1)", None), ("spread 0.0", Some(0.0))];

struct Env {
    proxy: support::FaultProxy,
    ssm_seed: aws_sdk_ssm::Client,
    sm_seed: aws_sdk_secretsmanager::Client,
    ssm: SsmSource,
    sm: SecretsManagerSource,
    /// Where the changes are made from (the proxy's runtime).
    outside: tokio::runtime::Handle,
}

struct RowA {
    load: Duration,
    invocations: usize,
    /// Per change: seconds until it was first served (`None`: never).
    param_seen: Vec<Option<f64>>,
    secret_seen: Vec<Option<f64>>,
    worst: Duration,
    worst_at: Duration,
    slow: Vec<(Duration, Duration)>,
    errors: usize,
    stats: lambda_secrets::Stats,
    /// When the changes landed and the API calls were made, from the first invocation.
    timeline: String,
}

struct RowB {
    load: Duration,
    seen: Option<f64>,
    worst: Duration,
    stats: lambda_secrets::Stats,
}

/// One invocation's record: when it started (from the start of the run), its latency, and the
/// versions it served (or its error).
struct Invocation {
    at: Duration,
    latency: Duration,
    result: Result<(String, String), String>,
}

fn builder(spread: Option<f64>, ttl: Duration) -> lambda_secrets::SecretsBuilder {
    let builder = Secrets::builder().default_ttl(ttl).rate_limits(RateLimits::new());
    match spread {
        Some(s) => builder.refresh_spread(s),
        None => builder,
    }
}

fn secret_prefix(tag: &str) -> String {
    // Secret names may not start with `/`.
    support::unique_prefix(tag).trim_start_matches('/').to_owned()
}

async fn create_secret(seed: &aws_sdk_secretsmanager::Client, name: &str, value: &str) {
    seed.create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create_secret({name}): {e:?}"));
}

async fn rotate_secret(seed: &aws_sdk_secretsmanager::Client, name: &str, value: &str) -> String {
    seed.put_secret_value()
        .secret_id(name)
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("put_secret_value({name}): {e:?}"))
        .version_id
        .expect("a version id")
}

fn deadline_in(d: Duration) -> u64 {
    (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        + d)
        .as_millis() as u64
}

/// Seconds from `change` to `first`, signed (an invocation may start a hair before the change's
/// answer arrived).
fn since(first: Instant, change: Instant) -> f64 {
    if first >= change {
        (first - change).as_secs_f64()
    } else {
        -(change - first).as_secs_f64()
    }
}

async fn scenario_a(env: &Env, spread: Option<f64>, change_at: Duration) -> Result<RowA, String> {
    let run = RUN.max(change_at + Duration::from_secs(5));
    let prefix = support::unique_prefix("refresh-a");
    let sprefix = prefix.trim_start_matches('/').to_owned();
    let names: Vec<String> = (0..PARAMS).map(|i| format!("{prefix}/param-{i:03}")).collect();
    for chunk in names.chunks(10) {
        futures_util::future::join_all(
            chunk.iter().map(|n| {
                support::put_param(&env.ssm_seed, n, "parameter value, version one", "SecureString")
            }),
        )
        .await;
    }
    let ids: Vec<String> = (0..SECRETS).map(|i| format!("{sprefix}/secret-{i:02}")).collect();
    futures_util::future::join_all(
        ids.iter()
            .map(|id| create_secret(&env.sm_seed, id, r#"{"password":"version one"}"#)),
    )
    .await;

    let mut b = builder(spread, TTL_A);
    let mut keys = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let key = format!("p{i:03}");
        b = b.add(env.ssm.parameter(key.clone(), name));
        keys.push(key);
    }
    for (i, id) in ids.iter().enumerate() {
        let key = format!("s{i:02}");
        b = b.add(env.sm.secret(key.clone(), id));
        keys.push(key);
    }
    env.proxy.reset_counts();
    let started = Instant::now();
    let secrets = b.load().await.map_err(|e| format!("load failed: {e}"))?;
    let load = started.elapsed();

    let keys = Arc::new(keys);
    let service = ServiceBuilder::new().layer(secrets.layer()).service(service_fn(
        move |(event, snap): (LambdaEvent<Value>, Snapshot)| {
            let keys = keys.clone();
            async move {
                let mut bytes = 0;
                for key in keys.iter() {
                    bytes += snap.get(key)?.len();
                }
                let version = |key: &str| snap.info(key).and_then(|i| i.version.clone());
                Ok::<_, lambda_runtime::Error>(json!({
                    "id": event.context.request_id,
                    "bytes": bytes,
                    "param_version": version(PARAM_KEY),
                    "secret_version": version(SECRET_KEY),
                }))
            }
        },
    ));

    let start = Instant::now();
    let (param_name, secret_id) = (names[42].clone(), ids[3].clone());
    let (ssm_seed, sm_seed) = (env.ssm_seed.clone(), env.sm_seed.clone());
    let change = env.outside.spawn(async move {
        let mut changes = Vec::new();
        let mut at = change_at;
        let mut n = 2;
        while at + LAST_CHANGE_BEFORE_END <= run {
            tokio::time::sleep_until((start + at).into()).await;
            let value = format!("parameter value, version {n}");
            let param = async {
                let version = support::put_param(&ssm_seed, &param_name, &value, "SecureString").await;
                (Instant::now(), version.to_string())
            };
            let secret_value = format!(r#"{{"password":"version {n}"}}"#);
            let secret = async {
                let version = rotate_secret(&sm_seed, &secret_id, &secret_value).await;
                (Instant::now(), version)
            };
            changes.push(tokio::join!(param, secret));
            at += CHANGE_EVERY;
            n += 1;
        }
        changes
    });

    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut invocations = Vec::new();
    for n in 0.. {
        ticks.tick().await;
        let at = start.elapsed();
        if at >= run {
            break;
        }
        let mut context = Context::default();
        context.request_id = format!("invocation-{n}");
        context.deadline = deadline_in(Duration::from_secs(60));
        let event = LambdaEvent::new(json!({ "n": n }), context);
        let began = Instant::now();
        let result = service.clone().oneshot(event).await;
        let latency = began.elapsed();
        let result = result.map_err(|e| e.to_string()).map(|out| {
            let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
            (text(&out["param_version"]), text(&out["secret_version"]))
        });
        invocations.push(Invocation { at, latency, result });
    }
    let changes = change.await.map_err(|e| format!("the change task failed: {e}"))?;
    // Let a refresh under way finish before reading the counters.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // For each change: the first invocation serving its version or a later one.
    let seen = |pick: fn(&(String, String)) -> &String, changes: &[(Instant, String)]| -> Vec<Option<f64>> {
        (0..changes.len())
            .map(|k| {
                let (changed, _) = &changes[k];
                let current: Vec<&String> = changes[k..].iter().map(|c| &c.1).collect();
                invocations
                    .iter()
                    .find(|i| i.result.as_ref().is_ok_and(|r| current.contains(&pick(r))))
                    .map(|i| since(start + i.at, *changed))
            })
            .collect()
    };
    let param_changes: Vec<(Instant, String)> = changes.iter().map(|c| c.0.clone()).collect();
    let secret_changes: Vec<(Instant, String)> = changes.iter().map(|c| c.1.clone()).collect();
    let worst = invocations.iter().max_by_key(|i| i.latency).expect("invocations");
    let mut slow: Vec<(Duration, Duration)> = invocations
        .iter()
        .filter(|i| i.latency > SLOW)
        .map(|i| (i.at, i.latency))
        .collect();
    slow.sort_by_key(|s| std::cmp::Reverse(s.1));
    let errors = invocations.iter().filter(|i| i.result.is_err()).count();
    for i in invocations.iter().filter(|i| i.result.is_err()).take(3) {
        eprintln!(
            "  invocation at +{:.2?} failed: {}",
            i.at,
            i.result.as_ref().unwrap_err()
        );
    }
    let timeline = format!(
        "load at -{:.2}s; {} changes of {PARAM_KEY} and {SECRET_KEY} from +{:.2}s; calls: {}",
        (start - started).as_secs_f64(),
        changes.len(),
        changes.first().map_or(0.0, |c| since(c.0 .0, start)),
        bursts(&env.proxy.request_times(), start)
    );
    Ok(RowA {
        timeline,
        load,
        invocations: invocations.len(),
        param_seen: seen(|r| &r.0, &param_changes),
        secret_seen: seen(|r| &r.1, &secret_changes),
        worst: worst.latency,
        worst_at: worst.at,
        slow,
        errors,
        stats: secrets.stats(),
    })
}

async fn scenario_b(env: &Env, spread: Option<f64>) -> Result<RowB, String> {
    let prefix = secret_prefix("refresh-b");
    let (a, b) = (format!("{prefix}/A"), format!("{prefix}/B"));
    create_secret(&env.sm_seed, &a, "a, version one").await;
    create_secret(&env.sm_seed, &b, "b, version one").await;
    // As `check` does: every --secret keyed by its id.
    let started = Instant::now();
    let secrets = builder(spread, TTL_B)
        .add(env.sm.secret(a.clone(), &a))
        .add(env.sm.secret(b.clone(), &b))
        .load()
        .await
        .map_err(|e| format!("load failed: {e}"))?;
    let load = started.elapsed();

    let start = Instant::now();
    let (seed, name) = (env.sm_seed.clone(), a.clone());
    let rotation = env.outside.spawn(async move {
        tokio::time::sleep_until((start + ROTATE_B_AT).into()).await;
        let version = rotate_secret(&seed, &name, "a, version two").await;
        (Instant::now(), version)
    });
    let mut reads = Vec::new();
    let mut worst = Duration::ZERO;
    for round in 0..=ROUNDS_B {
        if round > 0 {
            tokio::time::sleep(INTERVAL_B).await;
        }
        let began = Instant::now();
        let snap = secrets.fresh_snapshot().await;
        worst = worst.max(began.elapsed());
        for key in [&a, &b] {
            snap.get(key).map_err(|e| format!("round {round}: {e}"))?;
        }
        let version = snap.info(&a).and_then(|i| i.version.clone()).unwrap_or_default();
        reads.push((began, version));
    }
    let (rotated, version) = rotation
        .await
        .map_err(|e| format!("the rotation task failed: {e}"))?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = reads
        .iter()
        .find(|(_, v)| *v == version)
        .map(|(at, _)| since(*at, rotated));
    Ok(RowB {
        load,
        seen,
        worst,
        stats: secrets.stats(),
    })
}

/// The proxy's arrivals grouped into bursts (calls less than 300 ms apart), e.g.
/// `+1.00..+1.18s DescribeSecret x10 GetParameters x10`, from `start`.
fn bursts(arrivals: &[(Instant, String)], start: Instant) -> String {
    let mut groups: Vec<(Instant, Instant, BTreeMap<&str, u32>)> = Vec::new();
    for (at, op) in arrivals {
        match groups.last_mut() {
            Some((_, last, ops)) if *at < *last + Duration::from_millis(300) => {
                *last = (*last).max(*at);
                *ops.entry(op).or_default() += 1;
            }
            _ => groups.push((*at, *at, BTreeMap::from([(op.as_str(), 1)]))),
        }
    }
    groups
        .iter()
        .map(|(first, last, ops)| {
            let ops: Vec<String> = ops.iter().map(|(op, n)| format!("{op} x{n}")).collect();
            format!(
                "{:+.2}..{:+.2}s {}",
                since(*first, start),
                since(*last, start),
                ops.join(" ")
            )
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

fn secs(seen: Option<f64>) -> String {
    seen.map_or_else(|| "not seen".to_owned(), |s| format!("{s:.2}s"))
}

/// The worst and the median of the times to serve each change, and their number.
fn worst_median(seen: &[Option<f64>]) -> String {
    if seen.iter().any(Option::is_none) {
        return format!(
            "{} of {} not seen",
            seen.iter().filter(|s| s.is_none()).count(),
            seen.len()
        );
    }
    let mut all: Vec<f64> = seen.iter().flatten().copied().collect();
    all.sort_by(f64::total_cmp);
    match all.last() {
        None => "no change".to_owned(),
        Some(worst) => format!("{worst:.2}/{:.2}s ({})", all[all.len() / 2], all.len()),
    }
}

fn calls(calls: &BTreeMap<String, u64>) -> String {
    calls
        .iter()
        .map(|(op, n)| format!("{op}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1e3)
}

fn main() {
    support::init_tracing();
    println!("starting the moto emulator (first run installs it with pip)...");
    let moto = support::moto();
    // The proxy and the changes stand for AWS and the operator: they run on a runtime of their
    // own, so that their work does not run on the measured runtime's worker threads.
    let outside = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("aws")
        .enable_all()
        .build()
        .expect("a runtime");
    let proxy = outside.block_on(support::FaultProxy::start(&moto.endpoint));
    proxy.set_latency(LATENCY);
    let function = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let failed = function.block_on(run(moto, proxy, outside.handle().clone()));
    drop(function);
    drop(outside);
    // Timing is reported, not asserted; a failed load or invocation is a failure.
    if failed {
        std::process::exit(1);
    }
}

/// Both scenarios, both configurations; whether a load or an invocation failed.
async fn run(moto: &support::Moto, proxy: support::FaultProxy, outside: tokio::runtime::Handle) -> bool {
    let config = support::sdk_config(&proxy.endpoint()).await;
    let seed_config = support::sdk_config(&moto.endpoint).await;
    let env = Env {
        ssm_seed: aws_sdk_ssm::Client::new(&seed_config),
        sm_seed: aws_sdk_secretsmanager::Client::new(&seed_config),
        ssm: SsmSource::new(&config),
        sm: SecretsManagerSource::new(&config),
        proxy,
        outside,
    };
    let change_at = match std::env::args().nth(1) {
        None => CHANGE_AT,
        Some(arg) => match arg.parse::<f64>() {
            Ok(secs) if (0.0..=60.0).contains(&secs) => Duration::from_secs_f64(secs),
            _ => {
                eprintln!("usage: refresh [CHANGE_AT_SECONDS] (0 to 60; default 1)");
                std::process::exit(2);
            }
        },
    };
    let run = RUN.max(change_at + Duration::from_secs(5));
    let mut failed = false;

    println!(
        "\nA: {PARAMS} SSM SecureString parameters + {SECRETS} secrets, TTL {TTL_A:?}, {LATENCY:?} per call; an invocation every {EVERY:?} for {run:?} through the Layer; from {change_at:?} on, every {CHANGE_EVERY:?}, `{PARAM_KEY}` overwritten and `{SECRET_KEY}` rotated; seen = worst/median seconds from a change to the first invocation serving it (changes)"
    );
    let mut rows_a = Vec::new();
    for (label, spread) in CONFIGS {
        match scenario_a(&env, spread, change_at).await {
            Ok(row) => {
                failed |= row.errors > 0;
                rows_a.push((label, row));
            }
            Err(e) => {
                eprintln!("A, {label}: {e}");
                failed = true;
            }
        }
    }
    println!(
        "{:<22} {:>8} {:>7} {:>17} {:>17} {:>14} {:>5} {:>6} {:>5} {:>9}  calls",
        "config",
        "load",
        "invocs",
        "param seen",
        "secret seen",
        "worst (at)",
        ">5ms",
        "errors",
        "waits",
        "refr.fail"
    );
    for (label, r) in &rows_a {
        println!(
            "{label:<22} {:>8} {:>7} {:>17} {:>17} {:>14} {:>5} {:>6} {:>5} {:>9}  {}",
            ms(r.load),
            r.invocations,
            worst_median(&r.param_seen),
            worst_median(&r.secret_seen),
            format!("{} (+{:.2}s)", ms(r.worst), r.worst_at.as_secs_f64()),
            r.slow.len(),
            r.errors,
            r.stats.waits,
            r.stats.refresh_failures,
            calls(&r.stats.calls)
        );
    }
    for (label, r) in &rows_a {
        if !r.slow.is_empty() {
            let list: Vec<String> = r
                .slow
                .iter()
                .take(5)
                .map(|(at, l)| format!("+{:.2}s {}", at.as_secs_f64(), ms(*l)))
                .collect();
            println!(
                "  {label}: invocations over 5 ms (slowest first): {}",
                list.join(", ")
            );
        }
        println!(
            "  {label}: refreshes {}, misses {}, retries {}, throttled {}",
            r.stats.refreshes, r.stats.misses, r.stats.retries, r.stats.throttled
        );
        println!("  {label}: {}", r.timeline);
    }
    let bound = TTL_A.mul_f64(1.1) + Duration::from_millis(500);
    println!(
        "target: change served within TTL x 1.1 + 0.5 s = {:.1} s, no invocation over 5 ms, no error",
        bound.as_secs_f64()
    );
    for (label, r) in &rows_a {
        let within = |seen: &[Option<f64>]| seen.iter().all(|s| s.is_some_and(|s| s <= bound.as_secs_f64()));
        let met = within(&r.param_seen) && within(&r.secret_seen) && r.slow.is_empty() && r.errors == 0;
        let note = if *label == CONFIGS[0].0 {
            ""
        } else {
            " (for comparison)"
        };
        println!("  {label}: {}{note}", if met { "met" } else { "NOT met" });
    }

    println!(
        "\nB: as `lambda-secrets check --secret A --secret B --ttl 1s --repeat {ROUNDS_B} --interval-ms {}`, in-process, {LATENCY:?} per call; A rotated at {ROTATE_B_AT:?}",
        INTERVAL_B.as_millis()
    );
    let mut rows_b = Vec::new();
    for (label, spread) in CONFIGS {
        match scenario_b(&env, spread).await {
            Ok(row) => rows_b.push((label, row)),
            Err(e) => {
                eprintln!("B, {label}: {e}");
                failed = true;
            }
        }
    }
    println!(
        "{:<22} {:>8} {:>12} {:>10} {:>14} {:>14}  calls",
        "config", "load", "A seen", "worst read", "DescribeSecret", "GetSecretValue"
    );
    for (label, r) in &rows_b {
        let n = |op: &str| r.stats.calls.get(op).copied().unwrap_or(0);
        println!(
            "{label:<22} {:>8} {:>12} {:>10} {:>14} {:>14}  {}",
            ms(r.load),
            secs(r.seen),
            ms(r.worst),
            n("DescribeSecret"),
            n("GetSecretValue"),
            calls(&r.stats.calls)
        );
    }
    failed
}
