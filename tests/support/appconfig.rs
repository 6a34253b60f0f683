//! AppConfig in the fault proxy: what moto 5.2 lacks of it, with AWS's wire format.
//!
//! moto keeps applications, configuration profiles and hosted configuration versions; the proxy
//! forwards those calls to it and learns the ids, names and contents from moto's answers. It
//! emulates the rest itself:
//! - **environments** (`CreateEnvironment`, `GetEnvironment`, `ListEnvironments`) and
//!   **deployments** (`StartDeployment`, `GetDeployment`): a deployment completes at once (no
//!   deployment strategy's bake time or growth is emulated; any strategy id is accepted), and
//!   from then on the data plane serves the deployed version;
//! - the **data plane** (AppConfigData, REST JSON): `StartConfigurationSession` answers `201`
//!   with an initial token; `GetLatestConfiguration` answers `200` with the headers
//!   `Next-Poll-Configuration-Token`, `Next-Poll-Interval-In-Seconds`, `Content-Type` and
//!   `Version-Label` (only when the hosted version has a label and the body is not empty), and the
//!   content, or an empty body when the session has already been served the deployed version.
//!   Tokens are single use and expire (24 h, or [`AppConfigEmulator::set_token_lifetime`]); a
//!   reused, unknown or expired token, and a poll sooner than the session's interval, are
//!   `400 BadRequestException` with `Details.InvalidParameters.ConfigurationToken.Problem`
//!   `Corrupted`, `Expired` or `PollIntervalNotSatisfied`; a missing application, environment,
//!   profile or deployment is `404 ResourceNotFoundException` with its `ResourceType` (a session
//!   for a profile never deployed: `404`, `Deployment`; what the real service answers then, and
//!   to a reused token, is not documented: these are this emulator's choices).
//!   `RequiredMinimumPollIntervalInSeconds` must be 15–86,400; the interval is it (60 when not
//!   given), or longer while [`AppConfigEmulator::set_poll_interval`] says so (the service may
//!   change it during a session).
//!
//! Not emulated: multi-variant feature flags evaluated by the service, AppConfig extensions,
//! validators, configurations stored outside AppConfig (S3, SSM), KMS-encrypted content, and
//! deployment strategies' timing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;

/// The AppConfig operation a REST request is, and whether the proxy answers it itself.
pub(super) fn route(method: &Method, path: &str) -> Option<(&'static str, bool)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let get = method == Method::GET;
    let post = method == Method::POST;
    Some(match parts.as_slice() {
        ["configurationsessions"] if post => ("StartConfigurationSession", true),
        ["configuration"] if get => ("GetLatestConfiguration", true),
        ["applications"] if post => ("CreateApplication", false),
        ["applications", _] if get => ("GetApplication", false),
        ["applications", _, "configurationprofiles"] if post => ("CreateConfigurationProfile", false),
        ["applications", _, "configurationprofiles", _] if get => ("GetConfigurationProfile", false),
        ["applications", _, "configurationprofiles", _, "hostedconfigurationversions"] if post => {
            ("CreateHostedConfigurationVersion", false)
        }
        ["applications", _, "environments"] if post => ("CreateEnvironment", true),
        ["applications", _, "environments"] if get => ("ListEnvironments", true),
        ["applications", _, "environments", _] if get => ("GetEnvironment", true),
        ["applications", _, "environments", _, "deployments"] if post => ("StartDeployment", true),
        ["applications", _, "environments", _, "deployments", _] if get => ("GetDeployment", true),
        _ => return None,
    })
}

struct Named {
    id: String,
    name: String,
    /// The application it belongs to (for an environment or a profile).
    app: String,
}

struct Hosted {
    content: Bytes,
    content_type: String,
    label: Option<String>,
}

struct Session {
    app: String,
    env: String,
    profile: String,
    /// `RequiredMinimumPollIntervalInSeconds`, or 60.
    interval: u32,
    /// The version last served on this session's chain.
    served: Option<u32>,
}

struct Token {
    session: usize,
    issued: Instant,
    /// No poll with this token before this.
    not_before: Instant,
    used: bool,
}

#[derive(Default)]
struct Emu {
    apps: Vec<Named>,
    envs: Vec<Named>,
    profiles: Vec<Named>,
    hosted: HashMap<(String, String, u32), Hosted>,
    /// (application, environment, profile) -> deployed version, and the deployments in order.
    deployed: HashMap<(String, String, String), u32>,
    deployments: Vec<(String, String, String, u32)>,
    sessions: Vec<Session>,
    tokens: HashMap<String, Token>,
    next: u64,
    token_lifetime: Option<Duration>,
    poll_interval: Option<u32>,
}

/// The emulated part of AppConfig; see the module docs.
#[derive(Default)]
pub struct AppConfigEmulator(Mutex<Emu>);

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    resp
}

/// An AppConfig error: REST JSON, the type in `x-amzn-ErrorType`.
pub(super) fn error(status: StatusCode, kind: &str, mut body: serde_json::Value) -> Response<Full<Bytes>> {
    body["Message"]
        .as_str()
        .is_none()
        .then(|| body["Message"] = serde_json::json!(kind));
    let mut resp = json(status, body);
    if let Ok(v) = HeaderValue::from_str(kind) {
        resp.headers_mut().insert("x-amzn-errortype", v);
    }
    resp
}

fn not_found(kind: &str, id: &str) -> Response<Full<Bytes>> {
    error(
        StatusCode::NOT_FOUND,
        "ResourceNotFoundException",
        serde_json::json!({"Message": format!("{kind} {id} not found"), "ResourceType": kind}),
    )
}

fn bad_token(problem: &str) -> Response<Full<Bytes>> {
    error(
        StatusCode::BAD_REQUEST,
        "BadRequestException",
        serde_json::json!({
            "Message": format!("Request parameters failed validation: ConfigurationToken is {problem}"),
            "Reason": "InvalidParameters",
            "Details": {"InvalidParameters": {"ConfigurationToken": {"Problem": problem}}},
        }),
    )
}

fn find<'a>(list: &'a [Named], app: Option<&str>, ident: &str) -> Option<&'a Named> {
    list.iter()
        .find(|n| app.is_none_or(|a| n.app == a) && (n.id == ident || n.name == ident))
}

impl AppConfigEmulator {
    fn lock(&self) -> std::sync::MutexGuard<'_, Emu> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tokens expire after `lifetime` instead of 24 h.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.lock().token_lifetime = Some(lifetime);
    }

    /// The service asks sessions to poll every `seconds` at least (`None`: the sessions' own).
    pub fn set_poll_interval(&self, seconds: Option<u32>) {
        self.lock().poll_interval = seconds;
    }

    /// Learns from moto's answer to a forwarded control-plane call.
    pub(super) fn observe(
        &self,
        op: &str,
        path: &str,
        resp: &Response<Full<Bytes>>,
        req_body: &[u8],
        body: &[u8],
    ) {
        if !resp.status().is_success() {
            return;
        }
        let mut emu = self.lock();
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let answer: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        match op {
            "CreateApplication" => emu.apps.push(Named {
                id: text(&answer["Id"]),
                name: text(&answer["Name"]),
                app: String::new(),
            }),
            "CreateConfigurationProfile" => emu.profiles.push(Named {
                id: text(&answer["Id"]),
                name: text(&answer["Name"]),
                app: text(&answer["ApplicationId"]),
            }),
            "CreateHostedConfigurationVersion" => {
                let header = |name: &str| {
                    resp.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let version = header("version-number").and_then(|v| v.parse().ok()).unwrap_or(0);
                let hosted = Hosted {
                    content: Bytes::copy_from_slice(req_body),
                    content_type: header("content-type").unwrap_or_else(|| "application/octet-stream".into()),
                    label: header("versionlabel").filter(|l| !l.is_empty() && l != "None"),
                };
                emu.hosted
                    .insert((parts[1].to_owned(), parts[3].to_owned(), version), hosted);
            }
            _ => {}
        }
    }

    /// Answers an emulated operation.
    pub(super) fn answer(&self, op: &str, path: &str, query: &str, body: &[u8]) -> Response<Full<Bytes>> {
        let mut emu = self.lock();
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let input: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let field = |name: &str| input[name].as_str().unwrap_or_default().to_owned();
        match op {
            "CreateEnvironment" => {
                let Some(app) = find(&emu.apps, None, parts[1]).map(|a| a.id.clone()) else {
                    return not_found("Application", parts[1]);
                };
                emu.next += 1;
                let env = Named {
                    id: format!("env{:04}", emu.next),
                    name: field("Name"),
                    app: app.clone(),
                };
                let out = serde_json::json!({"ApplicationId": app, "Id": env.id, "Name": env.name, "State": "READY_FOR_DEPLOYMENT"});
                emu.envs.push(env);
                json(StatusCode::CREATED, out)
            }
            "ListEnvironments" | "GetEnvironment" => {
                let Some(app) = find(&emu.apps, None, parts[1]).map(|a| a.id.clone()) else {
                    return not_found("Application", parts[1]);
                };
                let view = |e: &Named| serde_json::json!({"ApplicationId": e.app, "Id": e.id, "Name": e.name, "State": "READY_FOR_DEPLOYMENT"});
                if op == "ListEnvironments" {
                    let items: Vec<_> = emu.envs.iter().filter(|e| e.app == app).map(view).collect();
                    return json(StatusCode::OK, serde_json::json!({"Items": items}));
                }
                match emu.envs.iter().find(|e| e.app == app && e.id == parts[3]) {
                    Some(e) => json(StatusCode::OK, view(e)),
                    None => not_found("Environment", parts[3]),
                }
            }
            "StartDeployment" => {
                let Some(app) = find(&emu.apps, None, parts[1]).map(|a| a.id.clone()) else {
                    return not_found("Application", parts[1]);
                };
                let Some(env) = emu
                    .envs
                    .iter()
                    .find(|e| e.app == app && e.id == parts[3])
                    .map(|e| e.id.clone())
                else {
                    return not_found("Environment", parts[3]);
                };
                let profile = field("ConfigurationProfileId");
                let Some(profile) = find(&emu.profiles, Some(&app), &profile).map(|p| p.id.clone()) else {
                    return not_found("ConfigurationProfile", &profile);
                };
                let version: u32 = field("ConfigurationVersion").parse().unwrap_or(0);
                if !emu.hosted.contains_key(&(app.clone(), profile.clone(), version)) {
                    return not_found("Configuration", &version.to_string());
                }
                emu.deployed
                    .insert((app.clone(), env.clone(), profile.clone()), version);
                emu.deployments
                    .push((app.clone(), env.clone(), profile.clone(), version));
                let number = emu.deployments.len();
                json(
                    StatusCode::CREATED,
                    serde_json::json!({"ApplicationId": app, "EnvironmentId": env, "ConfigurationProfileId": profile,
                        "ConfigurationVersion": version.to_string(), "DeploymentNumber": number, "State": "COMPLETE",
                        "DeploymentStrategyId": field("DeploymentStrategyId"), "PercentageComplete": 100.0}),
                )
            }
            "GetDeployment" => {
                let number: usize = parts[5].parse().unwrap_or(0);
                match number.checked_sub(1).and_then(|i| emu.deployments.get(i)) {
                    Some((app, env, profile, version)) => json(
                        StatusCode::OK,
                        serde_json::json!({"ApplicationId": app, "EnvironmentId": env, "ConfigurationProfileId": profile,
                            "ConfigurationVersion": version.to_string(), "DeploymentNumber": number, "State": "COMPLETE",
                            "PercentageComplete": 100.0}),
                    ),
                    None => not_found("Deployment", parts[5]),
                }
            }
            "StartConfigurationSession" => {
                let interval = match &input["RequiredMinimumPollIntervalInSeconds"] {
                    serde_json::Value::Null => 60,
                    v => match v.as_u64().filter(|s| (15..=86_400).contains(s)) {
                        Some(s) => s as u32,
                        None => {
                            return error(
                                StatusCode::BAD_REQUEST,
                                "BadRequestException",
                                serde_json::json!({"Message": "RequiredMinimumPollIntervalInSeconds must be between 15 and 86400", "Reason": "InvalidParameters",
                                    "Details": {"InvalidParameters": {"RequiredMinimumPollIntervalInSeconds": {"Problem": "Corrupted"}}}}),
                            )
                        }
                    },
                };
                let app_ident = field("ApplicationIdentifier");
                let Some(app) = find(&emu.apps, None, &app_ident).map(|a| a.id.clone()) else {
                    return not_found("Application", &app_ident);
                };
                let env_ident = field("EnvironmentIdentifier");
                let Some(env) = find(&emu.envs, Some(&app), &env_ident).map(|e| e.id.clone()) else {
                    return not_found("Environment", &env_ident);
                };
                let profile_ident = field("ConfigurationProfileIdentifier");
                let Some(profile) = find(&emu.profiles, Some(&app), &profile_ident).map(|p| p.id.clone())
                else {
                    return not_found("ConfigurationProfile", &profile_ident);
                };
                if !emu
                    .deployed
                    .contains_key(&(app.clone(), env.clone(), profile.clone()))
                {
                    return not_found("Deployment", &profile_ident);
                }
                emu.sessions.push(Session {
                    app,
                    env,
                    profile,
                    interval,
                    served: None,
                });
                let session = emu.sessions.len() - 1;
                let token = emu.token(session, Instant::now());
                json(
                    StatusCode::CREATED,
                    serde_json::json!({"InitialConfigurationToken": token}),
                )
            }
            "GetLatestConfiguration" => {
                let token = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("configuration_token="))
                    .map(percent_decode)
                    .unwrap_or_default();
                let now = Instant::now();
                let lifetime = emu.token_lifetime.unwrap_or(Duration::from_secs(86_400));
                let session = match emu.tokens.get_mut(&token) {
                    None => return bad_token("Corrupted"),
                    Some(t) if t.used => return bad_token("Corrupted"),
                    Some(t) if now.duration_since(t.issued) >= lifetime => return bad_token("Expired"),
                    Some(t) if now < t.not_before => return bad_token("PollIntervalNotSatisfied"),
                    Some(t) => {
                        t.used = true;
                        t.session
                    }
                };
                let s = &emu.sessions[session];
                let key = (s.app.clone(), s.env.clone(), s.profile.clone());
                let interval = emu.poll_interval.map_or(s.interval, |i| i.max(s.interval));
                let version = emu.deployed[&key];
                let changed = s.served != Some(version);
                emu.sessions[session].served = Some(version);
                let next = emu.token(session, now);
                if let Some(t) = emu.tokens.get_mut(&next) {
                    t.not_before = now + Duration::from_secs(u64::from(interval));
                }
                let hosted = &emu.hosted[&(key.0, key.2, version)];
                let body = if changed {
                    hosted.content.clone()
                } else {
                    Bytes::new()
                };
                let mut resp = Response::new(Full::new(body));
                let headers = resp.headers_mut();
                headers.insert(
                    "next-poll-configuration-token",
                    HeaderValue::from_str(&next).unwrap(),
                );
                headers.insert("next-poll-interval-in-seconds", HeaderValue::from(interval));
                if let Ok(v) = HeaderValue::from_str(&hosted.content_type) {
                    headers.insert("content-type", v);
                }
                if let Some(label) = hosted.label.as_deref().filter(|_| changed) {
                    if let Ok(v) = HeaderValue::from_str(label) {
                        headers.insert("version-label", v);
                    }
                }
                resp
            }
            _ => not_found("Operation", op),
        }
    }

    /// Every token may be used now (as if the sessions' poll intervals had passed).
    pub fn let_poll_intervals_pass(&self) {
        let now = Instant::now();
        for token in self.lock().tokens.values_mut() {
            token.not_before = token.not_before.min(now);
        }
    }

    /// The number of sessions started.
    pub fn sessions(&self) -> usize {
        self.lock().sessions.len()
    }
}

impl Emu {
    fn token(&mut self, session: usize, now: Instant) -> String {
        self.next += 1;
        // Opaque, URL-unsafe characters included, as AWS's are.
        let token = format!("AYADe{:08}+session{session}/x=", self.next);
        self.tokens.insert(
            token.clone(),
            Token {
                session,
                issued: now,
                not_before: now,
                used: false,
            },
        );
        token
    }
}

/// `%XX` escapes decoded (a query value; `+` stays itself, as AWS reads it).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%' && i + 2 < b.len())
            .then(|| {
                std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .flatten();
        match hex {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
