//! The `lambda-secrets` command.
//!
//! - `check`: loads parameters through the public API exactly as a handler would and prints, per
//!   value, its key, source, name, version and byte length (never the value), then the AWS calls
//!   made per operation. Honors the standard AWS environment (credentials, Region,
//!   `AWS_ENDPOINT_URL`).
//! - `lookup`: the same through one on-demand cache.
//! - `policy`: prints the least-privilege IAM policy that loading and refreshing the given names
//!   needs (no AWS call is made).
//! - `rds-token`, `dsql-token`: print an IAM auth token on stdout, as `aws rds
//!   generate-db-auth-token` and `aws dsql generate-db-connect-auth-token` do: the only commands
//!   that print a credential, because that is their job.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use futures_util::future::join_all;
use lambda_secrets::{
    AppConfigSource, AssumeRole, Ciphertext, Declaration, DsqlSource, DsqlToken, KmsSource, OnDemand, Policy,
    Quota, QuotaClass, RateLimits, RdsDbUser, RdsSource, SecretValue, Secrets, SecretsManagerSource,
    Snapshot, SsmSource, Stats, ValueInfo,
};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "lambda-secrets",
    version,
    about = "Pre-deploy checks for lambda-secrets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the given parameters and paths as a function would; print what was loaded (never a value).
    Check(Check),
    /// Look names up through one on-demand cache (not declared up front), concurrently, for some
    /// rounds; print per name and round what was found (never a value).
    Lookup(Lookup),
    /// Print the least-privilege IAM policy that loading and refreshing these names needs, and
    /// nothing else (no AWS call is made). `*` and `?` in a name make a pattern, for names
    /// looked up on demand.
    Policy(PolicyArgs),
    /// Print an RDS IAM auth token (the password of an IAM database user) on stdout, signed
    /// locally with the environment's credentials, as `aws rds generate-db-auth-token` does.
    RdsToken(RdsTokenArgs),
    /// Print an Aurora DSQL auth token on stdout, signed locally with the environment's
    /// credentials, as `aws dsql generate-db-connect-auth-token` does.
    DsqlToken(DsqlTokenArgs),
}

#[derive(Parser)]
struct RdsTokenArgs {
    /// The DB instance's or cluster's endpoint (no scheme, no port).
    #[arg(long)]
    hostname: String,
    /// The port the DB listens on.
    #[arg(long)]
    port: u16,
    /// The database user.
    #[arg(long)]
    username: String,
    /// The DB's Region (default: the environment's).
    #[arg(long)]
    region: Option<String>,
}

#[derive(Parser)]
struct DsqlTokenArgs {
    /// The cluster's endpoint (`CLUSTER_ID.dsql.REGION.on.aws`).
    #[arg(long)]
    hostname: String,
    /// A `DbConnectAdmin` token (the `admin` role) rather than `DbConnect`.
    #[arg(long)]
    admin: bool,
    /// How long the token is good for, in seconds (default 900, at most 604800); it still ends
    /// with the credentials that signed it.
    #[arg(long = "expires-in", value_name = "SECONDS", default_value_t = 900)]
    expires_in: u64,
    /// The cluster's Region (default: the environment's).
    #[arg(long)]
    region: Option<String>,
}

#[derive(Parser)]
struct PolicyArgs {
    /// SSM parameter name or ARN, with an optional `:version` or `:label` (repeatable).
    #[arg(long = "param", value_name = "NAME")]
    params: Vec<String>,
    /// SSM path, loaded recursively (repeatable).
    #[arg(long = "path", value_name = "PATH")]
    paths: Vec<String>,
    /// Secrets Manager secret name or ARN, AWSCURRENT (repeatable).
    #[arg(long = "secret", value_name = "ID")]
    secrets: Vec<String>,
    /// AWS AppConfig profile, `APPLICATION/ENVIRONMENT/PROFILE` (repeatable):
    /// `appconfig:StartConfigurationSession` and `appconfig:GetLatestConfiguration` on it.
    #[arg(long = "appconfig", value_name = "APPLICATION/ENVIRONMENT/PROFILE")]
    appconfig: Vec<String>,
    /// Customer managed KMS key (id or key ARN) SSM SecureStrings are encrypted with (repeatable);
    /// not needed for the AWS managed key `aws/ssm`.
    #[arg(long = "kms-key", value_name = "ARN")]
    kms_keys: Vec<String>,
    /// Customer managed KMS key (id or key ARN) the secrets are encrypted with (repeatable); not
    /// needed for the AWS managed key `aws/secretsmanager`.
    #[arg(long = "secret-kms-key", value_name = "ARN")]
    secret_kms_keys: Vec<String>,
    /// KMS key (id, key ARN or alias) of ciphertext the function decrypts itself with KmsSource
    /// (repeatable).
    #[arg(long = "decrypt-key", value_name = "KEY")]
    decrypt_keys: Vec<String>,
    /// Encryption context pair of that ciphertext (repeatable), e.g. `app=billing`.
    #[arg(long = "decrypt-context", value_name = "KEY=VALUE", value_parser = parse_pair)]
    decrypt_context: Vec<(String, String)>,
    /// RDS IAM database user, `RESOURCE_ID/USER` (repeatable): `rds-db:connect` for it. The
    /// resource id is the instance's DbiResourceId (`db-…`) or the cluster's (`cluster-…`).
    #[arg(long = "rds-db-user", value_name = "RESOURCE_ID/USER")]
    rds_db_users: Vec<String>,
    /// Aurora DSQL cluster endpoint (repeatable): `dsql:DbConnect` on the cluster.
    #[arg(long = "dsql", value_name = "HOST")]
    dsql: Vec<String>,
    /// Aurora DSQL cluster endpoint (repeatable): `dsql:DbConnectAdmin` on the cluster.
    #[arg(long = "dsql-admin", value_name = "HOST")]
    dsql_admin: Vec<String>,
    /// The declarations are read through this role (`arn:aws:iam::ACCOUNT:role/NAME`), the function then
    /// needs `sts:AssumeRole` on it, and the role's own policy (in its account) follows.
    #[arg(long = "assume-role", value_name = "ARN")]
    assume_role: Option<String>,
    /// Fail over to this Region's replicas (of secrets; of parameters kept there too) when the
    /// primary Region fails: the policy also grants the replicas' ARNs (and their Region's keys).
    #[arg(long = "failover-region", value_name = "REGION")]
    failover_region: Option<String>,
    /// Region of the ARNs (default: `${AWS::Region}`, for SAM/CloudFormation).
    #[arg(long)]
    region: Option<String>,
    /// Account id of the ARNs (default: `${AWS::AccountId}`); `*` allows any account.
    #[arg(long)]
    account: Option<String>,
    /// `json`: the IAM policy document; `sam`: a SAM `Policies:` list for a function's Properties.
    #[arg(long, value_enum, default_value_t = PolicyFormat::Json)]
    format: PolicyFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PolicyFormat {
    Json,
    Sam,
}

#[derive(Parser)]
struct Lookup {
    /// SSM parameter name or ARN, with an optional `:version` or `:label` (repeatable).
    #[arg(long = "param", value_name = "NAME")]
    params: Vec<String>,
    /// Secrets Manager secret name or ARN (repeatable).
    #[arg(long = "secret", value_name = "ID")]
    secrets: Vec<String>,
    /// Fail over to this Region's replicas (of secrets; of parameters kept there too) when the
    /// primary Region fails, as `failover_region` on the SSM and Secrets Manager sources does.
    #[arg(long = "failover-region", value_name = "REGION")]
    failover_region: Option<String>,
    /// Rounds of lookups of every name.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Milliseconds between rounds.
    #[arg(long = "interval-ms", default_value_t = 1000)]
    interval_ms: u64,
    /// TTL of every value, e.g. `300ms`, `1s`, `5m` (default 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<Duration>,
    /// Most names the cache keeps (default 10000).
    #[arg(long = "max-entries")]
    max_entries: Option<u64>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// After each round, print the library's metrics of the round in this format on stdout
    /// (`emf`: CloudWatch Embedded Metric Format documents, one per label set).
    #[arg(long, value_enum, value_name = "FORMAT")]
    metrics: Option<MetricsFormat>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MetricsFormat {
    /// CloudWatch Embedded Metric Format: JSON lines, each carrying what happened since the
    /// previous round (CloudWatch adds data points up).
    Emf,
}

/// Where the library's metrics go: an EMF collector installed as the `metrics` recorder,
/// flushed once per round, or nowhere.
struct Metrics(Option<&'static metrics_cloudwatch_embedded::Collector>);

impl Metrics {
    /// Installs the recorder for `format` (before any cache is built: the library registers
    /// its handles then).
    fn install(format: Option<MetricsFormat>) -> Metrics {
        Metrics(format.map(|MetricsFormat::Emf| {
            metrics_cloudwatch_embedded::Builder::new()
                .cloudwatch_namespace("lambda-secrets")
                .init()
                .expect("the first and only metrics recorder of this process")
        }))
    }

    /// Prints what was recorded since the last flush.
    fn flush(&self) {
        if let Some(collector) = self.0 {
            if let Err(e) = collector.flush(std::io::stdout().lock()) {
                eprintln!("error: writing metrics: {e}");
            }
        }
    }
}

#[derive(Parser)]
struct Check {
    /// SSM parameter name or ARN, with an optional `:version` or `:label` (repeatable). Its key is the name.
    #[arg(long = "param", value_name = "NAME")]
    params: Vec<String>,
    /// SSM path, loaded recursively (repeatable). Keys are the full parameter names.
    #[arg(long = "path", value_name = "PATH")]
    paths: Vec<String>,
    /// Secrets Manager secret name or ARN, AWSCURRENT (repeatable). Its key is the id.
    #[arg(long = "secret", value_name = "ID")]
    secrets: Vec<String>,
    /// AWS AppConfig profile deployed to an environment, `APPLICATION/ENVIRONMENT/PROFILE` (names or
    /// ids; repeatable), polled at `--ttl` (at least 15 s; default 60 s). Its key is the spec.
    #[arg(long = "appconfig", value_name = "APPLICATION/ENVIRONMENT/PROFILE")]
    appconfig: Vec<String>,
    /// Environment variable holding base64 KMS ciphertext to decrypt (repeatable). Its key is the variable name.
    #[arg(long = "kms-env", value_name = "VAR")]
    kms_env: Vec<String>,
    /// Encryption context pair for --kms-env values (repeatable), e.g. `LambdaFunctionName=my-fn`.
    #[arg(long = "kms-context", value_name = "KEY=VALUE", value_parser = parse_pair)]
    kms_context: Vec<(String, String)>,
    /// TTL of every value, e.g. `300ms`, `1s`, `5m` (default 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<Duration>,
    /// Override this process's SSM rate limit (calls a second; default 10).
    #[arg(long)]
    rate: Option<f64>,
    /// Override this process's SSM burst (default 10).
    #[arg(long)]
    burst: Option<u32>,
    /// Read everything through this role (`arn:aws:iam::ACCOUNT:role/NAME`), assumed with the
    /// environment's credentials, as `assume_role` on each source does.
    #[arg(long = "assume-role", value_name = "ARN")]
    assume_role: Option<String>,
    /// Fail over to this Region's replicas (of secrets; of parameters kept there too) when the
    /// primary Region fails, as `failover_region` on the SSM and Secrets Manager sources does.
    #[arg(long = "failover-region", value_name = "REGION")]
    failover_region: Option<String>,
    /// Re-read through the cache N more times.
    #[arg(long, default_value_t = 0)]
    repeat: u32,
    /// Milliseconds between re-reads.
    #[arg(long = "interval-ms", default_value_t = 1000)]
    interval_ms: u64,
    /// Before each re-read, refresh every value now (as `Secrets::refresh_now` does), whatever its
    /// TTL: checks that refreshing works with these credentials.
    #[arg(long)]
    refresh: bool,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// After the load and each re-read, print the library's metrics of that round in this
    /// format on stdout (`emf`: CloudWatch Embedded Metric Format documents, one per label set).
    #[arg(long, value_enum, value_name = "FORMAT")]
    metrics: Option<MetricsFormat>,
}

/// `APPLICATION/ENVIRONMENT/PROFILE`, each part non-empty; else says what is wrong (`None`).
fn appconfig_spec(spec: &str) -> Option<(String, String, String)> {
    match spec.split('/').collect::<Vec<_>>()[..] {
        [app, env, profile] if !app.is_empty() && !env.is_empty() && !profile.is_empty() => {
            Some((app.to_owned(), env.to_owned(), profile.to_owned()))
        }
        _ => {
            eprintln!("error: --appconfig `{spec}` is not APPLICATION/ENVIRONMENT/PROFILE");
            None
        }
    }
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Check(check) => run(check).await,
        Command::Lookup(lookup) => run_lookup(lookup).await,
        Command::Policy(args) => run_policy(args),
        Command::RdsToken(args) => run_rds_token(args).await,
        Command::DsqlToken(args) => run_dsql_token(args).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Whether KMS key ARN `key` can decrypt in `region`: a key of that Region, or a multi-Region
/// key (its replica there has the same id).
fn key_serves_region(key: &str, region: &str) -> bool {
    let parts: Vec<&str> = key.splitn(6, ':').collect();
    match parts[..] {
        ["arn", _, "kms", key_region, _, resource] => {
            key_region == region || resource.starts_with("key/mrk-")
        }
        // A key id: of the policy's Region, unless multi-Region.
        _ => key.starts_with("mrk-"),
    }
}

fn run_policy(args: PolicyArgs) -> Result<ExitCode, lambda_secrets::Error> {
    if args.params.is_empty()
        && args.paths.is_empty()
        && args.secrets.is_empty()
        && args.appconfig.is_empty()
        && args.decrypt_keys.is_empty()
        && args.rds_db_users.is_empty()
        && args.dsql.is_empty()
        && args.dsql_admin.is_empty()
    {
        eprintln!(
            "error: nothing to describe; give at least one --param, --path, --secret, --appconfig, \
             --decrypt-key, --rds-db-user, --dsql or --dsql-admin"
        );
        return Ok(ExitCode::from(2));
    }
    if !args.decrypt_context.is_empty() && args.decrypt_keys.is_empty() {
        eprintln!("error: --decrypt-context describes the ciphertext of a --decrypt-key; give the key");
        return Ok(ExitCode::from(2));
    }
    // Sources only describe their permissions here: no credentials, Region or call needed.
    let config = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build();
    let (mut ssm, mut sm, mut kms) = (
        SsmSource::new(&config),
        SecretsManagerSource::new(&config),
        KmsSource::new(&config),
    );
    let (mut rds, mut dsql) = (RdsSource::new(&config), DsqlSource::new(&config));
    if let Some(arn) = &args.assume_role {
        let role = AssumeRole::new(arn.clone());
        (ssm, sm, kms) = (
            ssm.assume_role(role.clone())?,
            sm.assume_role(role.clone())?,
            kms.assume_role(role.clone())?,
        );
        (rds, dsql) = (rds.assume_role(role.clone())?, dsql.assume_role(role)?);
    }
    if let Some(region) = &args.failover_region {
        if args.region.as_ref() == Some(region) {
            eprintln!("error: --failover-region `{region}` is the policy's --region; a failover Region is another one");
            return Ok(ExitCode::from(2));
        }
        (ssm, sm) = (
            ssm.failover_region(region.clone())?,
            sm.failover_region(region.clone())?,
        );
    }
    let mut builder = Policy::builder();
    for name in &args.params {
        builder = builder.declaration(&ssm.parameter(name.clone(), name.clone()));
    }
    for path in &args.paths {
        builder = builder.declaration(&ssm.path(path.clone()));
    }
    for id in &args.secrets {
        builder = builder.declaration(&sm.secret(id.clone(), id.clone()));
    }
    if !args.appconfig.is_empty() && args.assume_role.is_some() {
        eprintln!("error: --appconfig profiles are read with the function's own role; --assume-role does not apply to them");
        return Ok(ExitCode::from(2));
    }
    let appconfig = AppConfigSource::new(&config);
    for spec in &args.appconfig {
        let Some((app, env, profile)) = appconfig_spec(spec) else {
            return Ok(ExitCode::from(2));
        };
        let by_name: Vec<&str> = [&app, &env, &profile]
            .into_iter()
            .filter(|part| {
                !(part.len() == 7 && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
            })
            .map(String::as_str)
            .collect();
        if !by_name.is_empty() {
            eprintln!(
                "note: --appconfig `{spec}`: IAM matches AppConfig ARNs by id, so {} stand(s) as `*` in the policy; \
                 give the ids (7 lowercase letters and digits) for a policy of exactly this profile",
                by_name.join(", ")
            );
        }
        builder = builder.declaration(&appconfig.profile(spec.clone(), app, env, profile));
    }
    for key in &args.decrypt_keys {
        let mut ciphertext = Ciphertext::env("CIPHERTEXT").key_id(key.clone());
        for (k, v) in &args.decrypt_context {
            ciphertext = ciphertext.context(k.clone(), v.clone());
        }
        builder = builder.declaration(&kms.decrypt(key.clone(), ciphertext));
    }
    for spec in &args.rds_db_users {
        let Some((resource_id, user)) = spec.split_once('/') else {
            eprintln!("error: --rds-db-user `{spec}` is not RESOURCE_ID/USER");
            return Ok(ExitCode::from(2));
        };
        // The host and port are not part of the policy.
        let db_user = RdsDbUser::new("db.invalid", 5432, user).dbi_resource_id(resource_id);
        builder = builder.declaration(&rds.auth_token_for(spec.clone(), db_user));
    }
    for host in &args.dsql {
        builder = builder.declaration(&dsql.token(host.clone(), DsqlToken::connect(host.clone())));
    }
    for host in &args.dsql_admin {
        builder = builder.declaration(&dsql.token(host.clone(), DsqlToken::admin(host.clone())));
    }
    if let Some(region) = &args.failover_region {
        for (flag, keys) in [
            ("--kms-key", &args.kms_keys),
            ("--secret-kms-key", &args.secret_kms_keys),
        ] {
            if !keys.is_empty() && !keys.iter().any(|k| key_serves_region(k, region)) {
                eprintln!(
                    "note: no {flag} of {region} given: a replica there is encrypted with a key of its own \
                     Region, which this policy does not let the function use; give that key too (or a \
                     multi-Region `mrk-` key)"
                );
            }
        }
    }
    for key in &args.kms_keys {
        builder = builder.ssm_kms_key(key.clone());
    }
    for key in &args.secret_kms_keys {
        builder = builder.secrets_manager_kms_key(key.clone());
    }
    if let Some(region) = &args.region {
        builder = builder.region(region.clone());
    }
    if let Some(account) = &args.account {
        builder = builder.account(account.clone());
    }
    let placeholders = args.region.is_none() || args.account.is_none();
    let policy = builder.build()?;
    if placeholders && matches!(args.format, PolicyFormat::Json) {
        eprintln!(
            "note: ARNs hold CloudFormation placeholders (${{AWS::Region}}, ${{AWS::AccountId}}) for Fn::Sub; \
             give --region and --account for a policy to use as it is, or --format sam"
        );
    }
    let roles = policy.role_policies();
    match args.format {
        PolicyFormat::Json if roles.is_empty() => println!("{policy}"),
        PolicyFormat::Json => {
            // Two documents: the function's (sts:AssumeRole), and each role's own.
            let mut role_policies = serde_json::Map::new();
            for (arn, role_policy) in roles {
                role_policies.insert(arn.clone(), serde_json::to_value(role_policy).expect("a policy"));
            }
            let both = json!({"FunctionPolicy": policy, "RolePolicies": role_policies});
            println!("{}", serde_json::to_string_pretty(&both).expect("JSON"));
        }
        PolicyFormat::Sam => {
            print!("{}", policy.to_sam_yaml());
            for (arn, role_policy) in roles {
                println!("# The role {arn} needs, in its own account (attach it to that role):");
                for line in role_policy.to_json_pretty().lines() {
                    println!("# {line}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_rds_token(args: RdsTokenArgs) -> Result<ExitCode, lambda_secrets::Error> {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let mut rds = RdsSource::new(&config);
    if let Some(region) = args.region {
        rds = rds.region(region);
    }
    print_token(rds.auth_token("token", args.hostname, args.port, args.username)).await
}

async fn run_dsql_token(args: DsqlTokenArgs) -> Result<ExitCode, lambda_secrets::Error> {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let mut dsql = DsqlSource::new(&config);
    if let Some(region) = args.region {
        dsql = dsql.region(region);
    }
    let token = if args.admin {
        DsqlToken::admin(args.hostname)
    } else {
        DsqlToken::connect(args.hostname)
    };
    print_token(dsql.token("token", token.expires_in(Duration::from_secs(args.expires_in)))).await
}

/// Signs the token `decl` declares and prints it (its expiry goes to stderr).
async fn print_token(decl: Declaration) -> Result<ExitCode, lambda_secrets::Error> {
    let secrets = Secrets::builder().add(decl).load().await?;
    let snapshot = secrets.snapshot();
    println!("{}", snapshot.expose_str("token")?);
    if let Some(at) = snapshot.info("token").and_then(|i| i.expires_at) {
        let left = at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        eprintln!(
            "expires {} (in {}s)",
            humantime::format_rfc3339_seconds(at),
            left.as_secs()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What a name is looked up in.
#[derive(Clone, Copy)]
enum Kind {
    Param,
    Secret,
}

async fn run_lookup(lookup: Lookup) -> Result<ExitCode, lambda_secrets::Error> {
    if lookup.params.is_empty() && lookup.secrets.is_empty() {
        eprintln!("error: nothing to look up; give at least one --param or --secret");
        return Ok(ExitCode::from(2));
    }
    let metrics = Metrics::install(lookup.metrics);
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let (mut ssm, mut sm) = (SsmSource::new(&config), SecretsManagerSource::new(&config));
    if let Some(region) = &lookup.failover_region {
        (ssm, sm) = (
            ssm.failover_region(region.clone())?,
            sm.failover_region(region.clone())?,
        );
    }
    // One cache for both kinds: a name is looked up as `param:NAME` or `secret:ID`.
    // Every name of a round is asked at once: a wider window than a function's keeps a busy
    // machine from splitting a round into more calls.
    let mut builder = OnDemand::builder().coalesce_window(Duration::from_millis(20));
    if let Some(ttl) = lookup.ttl {
        builder = builder.ttl(ttl);
    }
    if let Some(max) = lookup.max_entries {
        builder = builder.max_entries(max);
    }
    let cache = builder.build(move |name| match name.split_once(':') {
        Some(("secret", id)) => sm.secret(name, id),
        Some((_, param)) => ssm.parameter(name, param),
        None => ssm.parameter(name, name),
    })?;
    let names: Vec<(Kind, &String)> = lookup
        .params
        .iter()
        .map(|n| (Kind::Param, n))
        .chain(lookup.secrets.iter().map(|n| (Kind::Secret, n)))
        .collect();
    let mut failed = false;
    for round in 0..lookup.rounds {
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(lookup.interval_ms)).await;
        }
        let lookups = names.iter().map(|(kind, name)| {
            let cache = cache.clone();
            let key = match kind {
                Kind::Param => format!("param:{name}"),
                Kind::Secret => format!("secret:{name}"),
            };
            async move { cache.get_with_info(&key).await }
        });
        let results = join_all(lookups).await;
        for ((_, name), result) in names.iter().zip(results) {
            failed |= result.is_err();
            print_lookup(round, name, result, lookup.json);
        }
        metrics.flush();
    }
    print_summary(&cache.stats(), lookup.json);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One line per name and round: found or not, version, byte length; never the value.
fn print_lookup(
    round: u32,
    name: &str,
    result: Result<(SecretValue, ValueInfo), lambda_secrets::Error>,
    as_json: bool,
) {
    let (found, version, bytes, error) = match &result {
        Ok((value, info)) => (true, info.version.clone(), value.len(), None),
        Err(e) => (false, None, 0, Some(e.to_string())),
    };
    // With --failover-region: the Region that served it.
    let region = result.as_ref().ok().and_then(|(_, info)| info.region.clone());
    let version_text = version.clone().unwrap_or_else(|| "-".into());
    if as_json {
        let version = version.as_deref().map_or(json!(null), version_json);
        let mut line =
            json!({"round": round, "name": name, "found": found, "version": version, "bytes": bytes});
        if let Some(error) = error {
            line["error"] = json!(error);
        }
        if let Some(region) = &region {
            line["region"] = json!(region);
        }
        println!("{line}");
    } else {
        let region = region.map(|r| format!("  {r}")).unwrap_or_default();
        match error {
            None => {
                println!("round {round} {name:<60} found version {version_text:>8} {bytes:>8} bytes{region}")
            }
            Some(error) => println!("round {round} {name:<60} NOT FOUND: {error}"),
        }
    }
}

async fn run(check: Check) -> Result<ExitCode, lambda_secrets::Error> {
    if check.params.is_empty()
        && check.paths.is_empty()
        && check.secrets.is_empty()
        && check.appconfig.is_empty()
        && check.kms_env.is_empty()
    {
        eprintln!(
            "error: nothing to check; give at least one --param, --path, --secret, --appconfig or --kms-env"
        );
        return Ok(ExitCode::from(2));
    }
    if check.rate.is_some() || check.burst.is_some() {
        let default = QuotaClass::SsmGet.default_quota();
        let rate = check.rate.unwrap_or(default.rate);
        if !(rate > 0.0 && rate.is_finite()) {
            eprintln!("error: --rate must be a positive number of calls a second");
            return Ok(ExitCode::from(2));
        }
        let burst = check.burst.unwrap_or(default.burst).max(1);
        RateLimits::process().set(QuotaClass::SsmGet, Quota::new(rate, burst));
    }
    let metrics = Metrics::install(check.metrics);
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let (mut ssm, mut sm, mut kms) = (
        SsmSource::new(&config),
        SecretsManagerSource::new(&config),
        KmsSource::new(&config),
    );
    if let Some(arn) = &check.assume_role {
        let role = AssumeRole::new(arn.clone());
        (ssm, sm, kms) = (
            ssm.assume_role(role.clone())?,
            sm.assume_role(role.clone())?,
            kms.assume_role(role)?,
        );
    }
    if let Some(region) = &check.failover_region {
        (ssm, sm) = (
            ssm.failover_region(region.clone())?,
            sm.failover_region(region.clone())?,
        );
    }
    let mut builder = Secrets::builder();
    if let Some(ttl) = check.ttl {
        builder = builder.default_ttl(ttl);
    }
    for name in &check.params {
        builder = builder.add(ssm.parameter(name.clone(), name.clone()));
    }
    for path in &check.paths {
        let prefix = if path.ends_with('/') {
            path.clone()
        } else {
            format!("{path}/")
        };
        builder = builder.add(ssm.path_with_prefix(prefix, path.clone()));
    }
    for id in &check.secrets {
        builder = builder.add(sm.secret(id.clone(), id.clone()));
    }
    if !check.appconfig.is_empty() {
        if check.assume_role.is_some() {
            eprintln!("error: --appconfig profiles are read with the environment's own credentials; --assume-role does not apply to them");
            return Ok(ExitCode::from(2));
        }
        let appconfig = match check.ttl {
            Some(ttl) => AppConfigSource::new(&config).poll_interval(ttl)?,
            None => AppConfigSource::new(&config),
        };
        for spec in &check.appconfig {
            let Some((app, env, profile)) = appconfig_spec(spec) else {
                return Ok(ExitCode::from(2));
            };
            builder = builder.add(appconfig.profile(spec.clone(), app, env, profile));
        }
    }
    for var in &check.kms_env {
        let mut ciphertext = Ciphertext::env(var.clone());
        for (k, v) in &check.kms_context {
            ciphertext = ciphertext.context(k.clone(), v.clone());
        }
        builder = builder.add(kms.decrypt(var.clone(), ciphertext));
    }
    let secrets = match builder.load().await {
        Ok(secrets) => secrets,
        Err(e) => {
            metrics.flush();
            return Err(e);
        }
    };

    let mut failed = false;
    for round in 0..=check.repeat {
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(check.interval_ms)).await;
            if check.refresh {
                let keys: Vec<String> = secrets.snapshot().keys().into_iter().map(str::to_owned).collect();
                for result in join_all(keys.iter().map(|key| secrets.refresh_now(key))).await {
                    if let Err(e) = result {
                        eprintln!("error: {e}");
                        failed = true;
                    }
                }
            }
        }
        let snapshot = secrets.fresh_snapshot().await;
        failed |= print_round(&snapshot, round, check.json, check.repeat > 0);
        metrics.flush();
    }
    print_summary(&secrets.stats(), check.json);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints one line per value; returns whether some value could not be read.
fn print_round(snapshot: &Snapshot, round: u32, as_json: bool, show_round: bool) -> bool {
    let mut failed = false;
    if !as_json && show_round {
        println!("round {round}");
    }
    if !as_json && (round == 0 || show_round) {
        println!(
            "{:<40} {:<8} {:<40} {:>8} {:>8}",
            "KEY", "SOURCE", "NAME", "VERSION", "BYTES"
        );
    }
    for key in snapshot.keys() {
        let info = snapshot.info(key).expect("listed key has info");
        let version = info.version.as_deref().unwrap_or("-");
        let bytes = match snapshot.get(key) {
            Ok(value) => value.len(),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
                continue;
            }
        };
        if as_json {
            let version = version_json(version);
            let mut line = json!({"round": round, "key": key, "source": info.source, "name": info.name, "version": version, "bytes": bytes});
            if let Some(region) = &info.region {
                line["region"] = json!(region);
            }
            println!("{line}");
        } else {
            // With --failover-region: the Region that served it.
            let region = info
                .region
                .as_deref()
                .map(|r| format!("  {r}"))
                .unwrap_or_default();
            println!(
                "{key:<40} {:<8} {:<40} {version:>8} {bytes:>8}{region}",
                info.source, info.name
            );
        }
    }
    failed
}

fn print_summary(stats: &Stats, as_json: bool) {
    if as_json {
        let line = json!({
            "calls": stats.calls,
            "throttled": stats.throttled,
            "retries": stats.retries,
            "refreshes": stats.refreshes,
            "refresh_failures": stats.refresh_failures,
            "misses": stats.misses,
            "waits": stats.waits,
        });
        let mut line = line;
        if !stats.failover_calls.is_empty() {
            line["failover_calls"] = json!(stats.failover_calls);
        }
        println!("{line}");
    } else {
        let calls: Vec<String> = stats.calls.iter().map(|(op, n)| format!("{op}={n}")).collect();
        println!(
            "calls: {}  throttled: {}  retries: {}  refreshes: {}  refresh failures: {}",
            calls.join(" "),
            stats.throttled,
            stats.retries,
            stats.refreshes,
            stats.refresh_failures
        );
        // Of those, the calls to a failover Region (the rest went to the primary).
        for (region, calls) in &stats.failover_calls {
            let calls: Vec<String> = calls.iter().map(|(op, n)| format!("{op}={n}")).collect();
            println!("  of which to failover Region {region}: {}", calls.join(" "));
        }
    }
}

/// A version as JSON: a number for SSM's numeric versions, else the text (Secrets Manager's ids).
fn version_json(version: &str) -> serde_json::Value {
    version
        .parse::<u64>()
        .map(|v| json!(v))
        .unwrap_or_else(|_| json!(version))
}
