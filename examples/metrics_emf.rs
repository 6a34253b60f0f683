//! The library's metrics as CloudWatch Embedded Metric Format documents, one flush per
//! "invocation", through an existing EMF exporter for the `metrics` facade
//! (`metrics_cloudwatch_embedded`; in a function its `lambda` feature flushes after each
//! invocation). No AWS account needed: the values come from a `MemorySource`, whose calls are
//! counted like AWS calls (`source` = `other`). Values and names never appear in the output.
//!
//! `cargo run --features metrics,on-demand --example metrics_emf`

use std::time::Duration;

use lambda_secrets::{MemorySource, OnDemand, Secrets};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // First the recorder, then the caches (they register their handles when built).
    let metrics = metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace("lambda-secrets-example")
        .with_dimension("function", "example")
        .init()?;

    let mem = MemorySource::new();
    mem.set("/prod/db/password", "not-printed");
    for tenant in 0..3 {
        mem.set(format!("/tenants/t{tenant}/key"), "not-printed-either");
    }
    let secrets = Secrets::builder()
        .add(
            mem.value("db_password", "/prod/db/password")
                .ttl(Duration::from_secs(300)),
        )
        .load()
        .await?;
    let source = mem.clone();
    let tenants = OnDemand::builder()
        .max_entries(2)
        .build(move |tenant| source.value(tenant, format!("/tenants/{tenant}/key")))?;

    for invocation in 0..3 {
        println!("-- invocation {invocation}");
        let snapshot = secrets.snapshot();
        let _password = snapshot.expose_str("db_password")?;
        let _key = tenants.get(&format!("t{invocation}")).await?;
        let _again = tenants.get(&format!("t{invocation}")).await?;
        metrics.flush(std::io::stdout().lock())?;
    }
    Ok(())
}
