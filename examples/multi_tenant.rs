//! A multi-tenant `lambda_runtime` function: each request names its tenant, and the tenant's API
//! key is read from SSM at `/tenants/{tenant_id}/api-key`, out of thousands, on demand.
//!
//! The shared settings (here the signing key every request uses) are declared and loaded at INIT
//! through the Layer; the tenants' keys are looked up through one `OnDemand` cache held by the
//! handler: a cached key costs no call, an unknown tenant id is remembered for 30 s, and, with
//! `lambda_runtime::run_concurrent` (several requests at once per environment), concurrent
//! requests for different tenants are fetched together (10 names per `GetParameters`).
//! The answer carries lengths and versions, never a key. `PARAMETER_PREFIX` (default empty) is put
//! before both names.
//!
//! Run it locally with cargo-lambda against an emulator:
//! `AWS_ENDPOINT_URL=http://127.0.0.1:5000 cargo lambda watch --example multi_tenant --features on-demand`,
//! then `cargo lambda invoke --example multi_tenant --data-ascii '{"tenant_id":"acme"}'`.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use lambda_secrets::{OnDemand, Secrets, Snapshot, SsmSource};
use serde::Deserialize;
use serde_json::{json, Value};
use tower::ServiceBuilder;

#[derive(Deserialize)]
struct Request {
    tenant_id: String,
}

async fn handler(
    tenants: &OnDemand,
    (event, secrets): (LambdaEvent<Value>, Snapshot),
) -> Result<Value, Error> {
    let request: Request = serde_json::from_value(event.payload)?;
    // Tenant ids become part of a parameter name: only plain ids are accepted (the name parser
    // rejects anything SSM would not, without a call).
    if !request
        .tenant_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(format!("tenant id `{}` is not [A-Za-z0-9-]+", request.tenant_id).into());
    }
    let (key, info) = tenants.get_with_info(&request.tenant_id).await?;
    let signing = secrets.get("signing_key")?;
    Ok(json!({
        "tenant": request.tenant_id,
        "tenant_key_length": key.len(),
        "tenant_key_version": info.version,
        "signing_key_length": signing.len(),
    }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .without_time()
        .init();

    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let ssm = SsmSource::new(&config);
    // Declared: loaded at INIT, a missing one fails INIT.
    let prefix = std::env::var("PARAMETER_PREFIX").unwrap_or_default();
    let secrets = Secrets::builder()
        .add(ssm.parameter("signing_key", format!("{prefix}/shared/signing-key")))
        .load()
        .await?;
    // On demand: any tenant, at invocation time.
    let tenants = OnDemand::builder()
        .max_entries(10_000)
        .build(move |tenant| ssm.parameter(tenant, format!("{prefix}/tenants/{tenant}/api-key")))?;

    let service = ServiceBuilder::new()
        .layer(secrets.layer())
        .service(service_fn(move |request| {
            let tenants = tenants.clone();
            async move { handler(&tenants, request).await }
        }));
    lambda_runtime::run(service).await
}
