//! Cold start: loading 100 parameters against the moto emulator (started here, behind our fault
//! proxy adding a fixed round-trip latency), batched by this crate vs a naive loader making one
//! `GetParameter` call per name. Wall time from criterion, API calls from the proxy's counts.
//!
//! `cargo bench --bench cold_load` (installs moto with pip on first run).

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use lambda_secrets::{RateLimits, Secrets, SecretsManagerSource, SsmSource};

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common/report.rs"]
mod report;

const NAMES: usize = 100;
/// Added to every call by the proxy: a round trip from a Lambda function to SSM is of this order.
const LATENCY: Duration = Duration::from_millis(20);

async fn load_batched(ssm: &SsmSource, names: &[String]) -> Secrets {
    // A cold start is a new process: its rate limits start full.
    let mut builder = Secrets::builder().rate_limits(RateLimits::new());
    for (i, name) in names.iter().enumerate() {
        builder = builder.add(ssm.parameter(format!("k{i}"), name.clone()));
    }
    builder.load().await.expect("batched load")
}

const SECRETS: usize = 10;

async fn load_mixed(
    ssm: &SsmSource,
    sm: &SecretsManagerSource,
    names: &[String],
    secrets: &[String],
) -> Secrets {
    // A cold start is a new process: its rate limits start full.
    let mut builder = Secrets::builder().rate_limits(RateLimits::new());
    for (i, name) in names.iter().enumerate() {
        builder = builder.add(ssm.parameter(format!("p{i}"), name.clone()));
    }
    for (i, id) in secrets.iter().enumerate() {
        builder = builder.add(sm.secret(format!("s{i}"), id.clone()));
    }
    builder.load().await.expect("mixed load")
}

/// One call per value, in turn: GetParameter per name, GetSecretValue per secret.
async fn load_mixed_naive(
    client: &aws_sdk_ssm::Client,
    sm: &aws_sdk_secretsmanager::Client,
    names: &[String],
    secrets: &[String],
) -> usize {
    let mut n = load_naive(client, names).await.len();
    for id in secrets {
        let out = sm
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .expect("naive secret");
        n += out.secret_string.map(|s| s.len()).unwrap_or(0);
    }
    n
}

/// What a handler-written loader usually does: one call per name, one after the other.
async fn load_naive(client: &aws_sdk_ssm::Client, names: &[String]) -> Vec<String> {
    let mut values = Vec::with_capacity(names.len());
    for name in names {
        let out = client
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
            .expect("naive load");
        values.push(out.parameter.and_then(|p| p.value).unwrap_or_default());
    }
    values
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let moto = support::moto();
    let (proxy, names, ssm, client, secret_ids, sm, sm_client) = rt.block_on(async {
        let proxy = support::FaultProxy::start(&moto.endpoint).await;
        let seed = support::ssm_client(&moto.endpoint).await;
        let prefix = support::unique_prefix("bench");
        let mut names = Vec::new();
        for i in 0..NAMES {
            let name = format!("{prefix}/param-{i:03}");
            support::put_param(&seed, &name, &format!("value-{i:03}"), "SecureString").await;
            names.push(name);
        }
        let sm_seed = aws_sdk_secretsmanager::Client::new(&support::sdk_config(&moto.endpoint).await);
        let mut secret_ids = Vec::new();
        for i in 0..SECRETS {
            let id = format!("{}/secret-{i:02}", prefix.trim_start_matches('/'));
            let value = format!(r#"{{"username":"app","password":"pw-{i}"}}"#);
            sm_seed
                .create_secret()
                .name(&id)
                .secret_string(value)
                .send()
                .await
                .expect("seed secret");
            secret_ids.push(id);
        }
        let config = support::sdk_config(&proxy.endpoint()).await;
        (
            proxy,
            names,
            SsmSource::new(&config),
            aws_sdk_ssm::Client::new(&config),
            secret_ids,
            SecretsManagerSource::new(&config),
            aws_sdk_secretsmanager::Client::new(&config),
        )
    });

    // Call counts of one load each.
    let count = |f: &dyn Fn()| {
        proxy.reset_counts();
        f();
        proxy.calls_all()
    };
    proxy.set_latency(LATENCY);
    let batched_calls = count(&|| drop(rt.block_on(load_batched(&ssm, &names))));
    let naive_calls = count(&|| drop(rt.block_on(load_naive(&client, &names))));
    let mixed_calls = count(&|| drop(rt.block_on(load_mixed(&ssm, &sm, &names, &secret_ids))));
    let mixed_naive_calls = count(&|| {
        rt.block_on(load_mixed_naive(&client, &sm_client, &names, &secret_ids));
    });
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    let mut group = c.benchmark_group("cold_load_100_names");
    group.bench_function("lambda_secrets_batched", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(load_batched(&ssm, &names).await) })
    });
    group.bench_function("naive_get_parameter_per_name", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(load_naive(&client, &names).await) })
    });
    // One round trip for reference: a single GetParameters call of 10 names.
    group.bench_function("one_get_parameters_call_10_names", |b| {
        b.to_async(&rt).iter(|| async {
            let out = client
                .get_parameters()
                .set_names(Some(names[..10].to_vec()))
                .with_decryption(true)
                .send()
                .await;
            black_box(out.expect("one call"))
        })
    });
    // The same 10 calls made concurrently with the bare SDK: what the emulator itself allows.
    group.bench_function("ten_concurrent_get_parameters_calls_bare_sdk", |b| {
        b.to_async(&rt).iter(|| async {
            let calls = names.chunks(10).map(|chunk| {
                client
                    .get_parameters()
                    .set_names(Some(chunk.to_vec()))
                    .with_decryption(true)
                    .send()
            });
            black_box(futures_util::future::join_all(calls).await)
        })
    });
    group.finish();

    let mut group = c.benchmark_group("cold_load_100_params_10_secrets");
    group.bench_function("lambda_secrets_batched", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(load_mixed(&ssm, &sm, &names, &secret_ids).await) })
    });
    group.bench_function("naive_one_call_per_value", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(load_mixed_naive(&client, &sm_client, &names, &secret_ids).await) })
    });
    group.finish();
    c.final_summary();

    println!(
        "\n== cold load of {NAMES} names, emulator + {LATENCY:?} added per call (medians of this run) =="
    );
    report::compare(
        "cold_load_100_names",
        "lambda_secrets_batched",
        "naive_get_parameter_per_name",
    );
    report::compare(
        "cold_load_100_names",
        "lambda_secrets_batched",
        "one_get_parameters_call_10_names",
    );
    report::compare(
        "cold_load_100_names",
        "lambda_secrets_batched",
        "ten_concurrent_get_parameters_calls_bare_sdk",
    );
    println!("calls per load: lambda-secrets {batched_calls:?}, naive {naive_calls:?}");
    println!("\n== cold load of {NAMES} parameters + {SECRETS} secrets ==");
    report::compare(
        "cold_load_100_params_10_secrets",
        "lambda_secrets_batched",
        "naive_one_call_per_value",
    );
    println!("calls per load: lambda-secrets {mixed_calls:?}, naive {mixed_naive_calls:?}");
}
