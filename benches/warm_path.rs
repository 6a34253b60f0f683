//! Warm-path cost, side by side in one run:
//! - an invocation through `SecretsLayer` vs the bare handler, both reading 100 cached values;
//! - one value read from a `Snapshot` vs `moka::sync::Cache::get` on the same keys;
//! - with feature `metrics`: the invocation through the Layer with a `metrics` recorder installed
//!   (the `metrics` project's debugging recorder: one atomic counter per metric), against the
//!   same without one.
//!
//! `cargo bench --bench warm_path` (`--all-features` for the metrics rows)

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, BatchSize, Criterion};
use futures_util::FutureExt;
use lambda_runtime::{Context, LambdaEvent};
use lambda_secrets::{MemorySource, Secrets, Snapshot};
use tower::{Service, ServiceBuilder};

#[path = "common/report.rs"]
mod report;

const KEYS: usize = 100;

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("key_{i:03}")).collect()
}

fn load() -> Secrets {
    let mem = MemorySource::new();
    let mut builder = Secrets::builder().default_ttl(Duration::from_secs(3600));
    for key in keys() {
        mem.set(format!("/app/{key}"), format!("value-of-{key}"));
        builder = builder.add(mem.value(key.clone(), format!("/app/{key}")));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(builder.load()).unwrap()
}

/// The handler both sides run: read every value and add up the lengths.
fn read_all(secrets: &Snapshot, keys: &[String]) -> usize {
    keys.iter()
        .map(|k| secrets.get(k).map(|v| v.len()).unwrap_or(0))
        .sum()
}

/// The handler behind the Layer: the same work as the bare one, with the snapshot the Layer takes.
fn layered(
    secrets: &Secrets,
    keys: Vec<String>,
) -> impl Service<LambdaEvent<()>, Response = usize, Error = impl std::fmt::Debug> {
    ServiceBuilder::new()
        .layer(secrets.layer())
        .service(tower::service_fn(
            move |(event, snap): (LambdaEvent<()>, Snapshot)| {
                let n = read_all(&snap, &keys);
                drop(event);
                async move { Ok::<_, Infallible>(n) }
            },
        ))
}

fn event() -> LambdaEvent<()> {
    LambdaEvent::new((), Context::default())
}

fn invocation(c: &mut Criterion) {
    let secrets = load();
    let keys = keys();
    let mut group = c.benchmark_group("invocation_100_values");

    // Bare: the handler gets a snapshot it was handed once, outside the measurement.
    let snapshot = secrets.snapshot();
    let mut bare = tower::service_fn(|(event, snap): (LambdaEvent<()>, Snapshot)| {
        let n = read_all(&snap, &keys);
        drop(event);
        async move { Ok::<_, Infallible>(n) }
    });
    group.bench_function("bare_handler", |b| {
        b.iter_batched(
            || (event(), snapshot.clone()),
            |req| bare.call(black_box(req)).now_or_never().unwrap().unwrap(),
            BatchSize::SmallInput,
        )
    });

    let mut layered = layered(&secrets, keys.clone());
    group.bench_function("through_layer", |b| {
        b.iter_batched(
            event,
            |req| layered.call(black_box(req)).now_or_never().unwrap().unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn value_read(c: &mut Criterion) {
    let secrets = load();
    let keys = keys();
    let snapshot = secrets.snapshot();
    let moka: moka::sync::Cache<String, lambda_secrets::SecretValue> = moka::sync::Cache::builder()
        .time_to_live(Duration::from_secs(3600))
        .build();
    for key in &keys {
        moka.insert(key.clone(), snapshot.get(key).unwrap().clone());
    }
    let mut group = c.benchmark_group("one_value_read");
    let mut i = 0usize;
    group.bench_function("snapshot_get", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(snapshot.get(black_box(&keys[i])).unwrap().len())
        })
    });
    group.bench_function("moka_get", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(moka.get(black_box(&keys[i])).unwrap().len())
        })
    });
    group.bench_function("secrets_snapshot_then_get", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(secrets.snapshot().get(black_box(&keys[i])).unwrap().len())
        })
    });
    group.finish();
}

/// Reading 110 values as text (100 parameters of 40 bytes, 10 RDS-style JSON secrets of 249
/// bytes): `expose_str`, whose UTF-8 was checked once when the value was stored, against checking it
/// on every read, as 0.1's `get_str` did.
fn text_read(c: &mut Criterion) {
    let mem = MemorySource::new();
    let mut builder = Secrets::builder().default_ttl(Duration::from_secs(3600));
    let mut keys = Vec::new();
    for i in 0..110 {
        let key = format!("k{i:03}");
        let value = if i < 100 {
            format!("{:0>40}", format!("param-value-{i}"))
        } else {
            format!(
                r#"{{"engine":"postgres","host":"db-{i}.cluster-abcdefghijkl.eu-west-1.rds.amazonaws.com","port":5432,"username":"app_user_{i}","password":"{:0>64}","dbname":"app","dbInstanceIdentifier":"db-{i}"}}"#,
                i
            )
        };
        mem.set(format!("/t/{key}"), value);
        builder = builder.add(mem.value(key.as_str(), format!("/t/{key}")));
        keys.push(key);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let secrets = rt.block_on(builder.load()).unwrap();
    let snapshot = secrets.snapshot();
    let mut group = c.benchmark_group("text_read_110_values");
    group.bench_function("expose_str_checked_once", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| black_box(snapshot.expose_str(black_box(k)).unwrap()).len())
                .sum::<usize>()
        })
    });
    group.bench_function("utf8_checked_every_read", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| {
                    let bytes = snapshot.get(black_box(k)).unwrap().expose_bytes();
                    black_box(std::str::from_utf8(bytes).unwrap()).len()
                })
                .sum::<usize>()
        })
    });
    group.finish();
}

/// The Layer's invocation again, with a recorder installed before the values are loaded (the
/// hit counter's handle is registered at load). Runs last: the recorder is the process's.
#[cfg(feature = "metrics")]
fn recorded(c: &mut Criterion) {
    metrics_util::debugging::DebuggingRecorder::new()
        .install()
        .expect("the only recorder");
    let secrets = load();
    let mut layered = layered(&secrets, keys());
    let mut group = c.benchmark_group("invocation_100_values");
    group.bench_function("through_layer_with_recorder", |b| {
        b.iter_batched(
            event,
            |req| layered.call(black_box(req)).now_or_never().unwrap().unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

#[cfg(not(feature = "metrics"))]
fn recorded(_: &mut Criterion) {}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = invocation, value_read, text_read, recorded
}
fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    println!("\n== warm path, side by side (medians of this run) ==");
    report::compare("invocation_100_values", "through_layer", "bare_handler");
    if cfg!(feature = "metrics") {
        report::compare(
            "invocation_100_values",
            "through_layer_with_recorder",
            "through_layer",
        );
    }
    report::compare("one_value_read", "snapshot_get", "moka_get");
    report::compare("one_value_read", "secrets_snapshot_then_get", "snapshot_get");
    report::compare(
        "text_read_110_values",
        "expose_str_checked_once",
        "utf8_checked_every_read",
    );
}
