//! Push peers for the push tests: one local server that plays a Google
//! OAuth2 token endpoint (checking the RS256 grant with the fixture
//! service account's public key), the FCM v1 send endpoint, a
//! MongoosePush v3 service and a Web Push service (`/webpush/{device}`: it
//! takes the encrypted body without reading it), answering per device as
//! a test scripts; and
//! admin helpers for the device registry.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::*;

/// One notification a fake provider took in (answered 2xx or not).
#[derive(Debug, Clone)]
pub struct Pushed {
    pub at: Instant,
    /// `fcm`, `mongoosepush` or `webpush`.
    pub provider: &'static str,
    /// FCM registration token, MongoosePush device id, or the last path
    /// segment of a Web Push endpoint.
    pub device: String,
    pub status: u16,
    pub body: Value,
    pub authorization: Option<String>,
    /// Every request header, names lower-case.
    pub headers: HashMap<String, String>,
}

impl Pushed {
    /// A request header, by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

#[derive(Default)]
struct FakeState {
    pushed: Vec<Pushed>,
    /// Per device: answers to give first, in order.
    script: HashMap<String, VecDeque<Answer>>,
    /// Per device: the answer once its script ran out (else 200).
    default: HashMap<String, Answer>,
    /// Access tokens handed out, in order.
    tokens: Vec<String>,
    /// Grants refused because the assertion did not verify.
    bad_grants: usize,
    /// Answer the next N sends with 401, whatever the token.
    reject_next: usize,
}

/// The fake push services, on one port.
#[derive(Clone)]
pub struct FakePush {
    pub addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
}

impl FakePush {
    pub async fn start() -> FakePush {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake push");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(FakeState::default()));
        let app = axum::Router::new().fallback(handle).with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakePush { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers `device` gets first.
    pub fn script(&self, device: &str, answers: impl IntoIterator<Item = Answer>) {
        let mut s = self.state.lock().unwrap();
        s.script.entry(device.to_owned()).or_default().extend(answers);
    }

    /// What `device` gets once its script ran out.
    pub fn set_default(&self, device: &str, answer: Answer) {
        self.state.lock().unwrap().default.insert(device.to_owned(), answer);
    }

    /// Answer the next `n` FCM sends with 401.
    pub fn reject_next(&self, n: usize) {
        self.state.lock().unwrap().reject_next = n;
    }

    /// Every send, whatever the answer.
    pub fn pushed(&self) -> Vec<Pushed> {
        self.state.lock().unwrap().pushed.clone()
    }

    /// Sends to `device` answered 2xx.
    pub fn delivered_to(&self, device: &str) -> Vec<Pushed> {
        self.pushed()
            .into_iter()
            .filter(|p| p.device == device && p.status < 300)
            .collect()
    }

    pub fn tokens_issued(&self) -> usize {
        self.state.lock().unwrap().tokens.len()
    }

    pub fn bad_grants(&self) -> usize {
        self.state.lock().unwrap().bad_grants
    }

    /// Wait until `device` got `n` notifications answered 2xx.
    pub async fn wait_delivered(&self, device: &str, n: usize, timeout: Duration) -> Vec<Pushed> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.delivered_to(device);
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A `[backends.push.NAME.webpush]` table with the test VAPID key, to
/// append to [`push_backend`]'s.
pub fn webpush_provider(name: &str) -> String {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/backends/tests/fixtures/push/vapid_test_pkcs8.pem"
    );
    format!(
        "[backends.push.{name}.webpush]\nvapid_private_key_file = \"{key}\"\nsubject = \"mailto:ops@example.com\"\n"
    )
}

/// A `[backends.push.NAME.apns]` table with the test key, sending to
/// `fake`'s `/3/device/{token}` (plain HTTP/1.1: the fake is no HTTP/2
/// TLS server), to append to [`push_backend`]'s.
pub fn apns_provider(name: &str, fake: &FakePush) -> String {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/backends/tests/fixtures/push/apns_test_AuthKey.p8"
    );
    format!(
        "[backends.push.{name}.apns]\nkey_file = \"{key}\"\nkey_id = \"ABC123DEFG\"\nteam_id = \"DEF123GHIJ\"\ntopic = \"com.example.chat\"\nendpoint_url = \"{}\"\n",
        fake.url()
    )
}

/// A `[backends.push.NAME.fcm]` table with the fixture service account
/// (written into a directory kept for the test's life), sending to `fake`.
pub fn fcm_provider(name: &str, fake: &FakePush) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let account = service_account_file(dir.path(), fake);
    std::mem::forget(dir);
    format!(
        "[backends.push.{name}.fcm]\nservice_account_file = \"{account}\"\nendpoint_url = \"{}\"\n",
        fake.url()
    )
}

/// A Web Push device whose endpoint is `fake`'s `/webpush/{device_id}`;
/// the keys are RFC 8291's example (the fake does not decrypt).
pub fn webpush_device(fake: &FakePush, device_id: &str) -> Value {
    json!({"provider": "webpush", "subscription": {
        "endpoint": format!("{}/webpush/{device_id}", fake.url()),
        "keys": {
            "p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
            "auth": "BTBZMqHH6r4Tts7J_aSIgg",
        },
    }})
}

/// The fixture service account with `token_uri` pointing at `fake`,
/// written into `dir`; returns its path.
pub fn service_account_file(dir: &std::path::Path, fake: &FakePush) -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/push/fcm_service_account.json"
    ))
    .expect("fixture");
    let mut v: Value = serde_json::from_str(&text).expect("fixture JSON");
    v["token_uri"] = json!(format!("{}/token", fake.url()));
    let path = dir.join("fcm.json");
    std::fs::write(&path, v.to_string()).expect("write service account");
    path_str(&path)
}

async fn handle(State(state): State<Arc<Mutex<FakeState>>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    if path == "/token" {
        return token(&state, &body);
    }
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (provider, device) = if let Some(id) = path.strip_prefix("/v3/notification/") {
        ("mongoosepush", id.to_owned())
    } else if let Some(token) = path.strip_prefix("/3/device/") {
        ("apns", token.to_owned())
    } else if let Some(id) = path.strip_prefix("/webpush/") {
        ("webpush", id.to_owned())
    } else if path.ends_with("/messages:send") {
        ("fcm", json["message"]["token"].as_str().unwrap_or_default().to_owned())
    } else {
        return (StatusCode::NOT_FOUND, "no such path").into_response();
    };
    let mut s = state.lock().unwrap();
    let answer = if provider == "fcm" && s.reject_next > 0 {
        s.reject_next -= 1;
        Answer::status(401).with_body(r#"{"error":{"code":401,"status":"UNAUTHENTICATED"}}"#)
    } else if provider == "fcm" && authorization.as_deref() != s.tokens.last().map(|t| format!("Bearer {t}")).as_deref()
    {
        Answer::status(401).with_body(r#"{"error":{"code":401,"message":"not the current token"}}"#)
    } else {
        match s.script.get_mut(&device).and_then(VecDeque::pop_front) {
            Some(a) => a,
            None => s.default.get(&device).cloned().unwrap_or_else(|| Answer::status(200)),
        }
    };
    s.pushed.push(Pushed {
        at: Instant::now(),
        provider,
        device,
        status: answer.status,
        body: json,
        authorization,
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
            .collect(),
    });
    let mut resp = (StatusCode::from_u16(answer.status).unwrap(), answer.body.clone()).into_response();
    for (k, v) in &answer.headers {
        resp.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    resp
}

/// The OAuth2 JWT-bearer grant: verify the assertion (RS256, the fixture
/// public key, audience = this endpoint, the FCM scope) and hand out a
/// fresh token.
fn token(state: &Mutex<FakeState>, body: &[u8]) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let public = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/push/fcm_public.pem"
    ))
    .expect("fixture public key");
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&public).expect("fixture public key PEM");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    validation.set_issuer(&["pusher@test-project.iam.gserviceaccount.com"]);
    let ok = form.get("grant_type").map(String::as_str) == Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
        && form
            .get("assertion")
            .and_then(|a| jsonwebtoken::decode::<Value>(a, &key, &validation).ok())
            .is_some_and(|t| {
                t.claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
                    && t.claims["aud"].as_str().is_some_and(|a| a.ends_with("/token"))
            });
    let mut s = state.lock().unwrap();
    if !ok {
        s.bad_grants += 1;
        return (StatusCode::BAD_REQUEST, r#"{"error":"invalid_grant"}"#).into_response();
    }
    let token = format!("ya29.token-{}", s.tokens.len() + 1);
    s.tokens.push(token.clone());
    axum::Json(json!({"access_token": token, "expires_in": 3600, "token_type": "Bearer"})).into_response()
}

/// PUT a device; status and answer.
pub async fn put_device(sc: &Sidecar, jid: &str, device_id: &str, body: &Value) -> (u16, Value) {
    let url = format!("{}/v1/push/devices/{}/{}", sc.url, enc(jid), enc(device_id));
    let r = with_token(sc, reqwest::Client::new().put(url).json(body))
        .send()
        .await
        .expect("put device");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// DELETE a device; the status.
pub async fn delete_device(sc: &Sidecar, jid: &str, device_id: &str) -> u16 {
    let url = format!("{}/v1/push/devices/{}/{}", sc.url, enc(jid), enc(device_id));
    with_token(sc, reqwest::Client::new().delete(url))
        .send()
        .await
        .expect("delete device")
        .status()
        .as_u16()
}

/// The device ids of `GET /v1/push/devices/{jid}`.
pub async fn device_ids(sc: &Sidecar, jid: &str) -> Vec<String> {
    let (status, v) = sc.get(&format!("/v1/push/devices/{}", enc(jid))).await;
    assert_eq!(status, 200, "{v}");
    v["devices"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["device_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn with_token(sc: &Sidecar, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match &sc.token {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A chat message being delivered to local user `to` (hook
/// `filter_local_packet`: direction out).
pub fn chat_to(from: &str, to: &str, body: &str) -> Value {
    json!({"hook": "filter_local_packet", "from": from, "to": to, "type": "chat", "body": body, "id": format!("m-{body}")})
}

/// `[backends.push.NAME]` with fast retries and a MongoosePush at `url`,
/// plus `extra` lines in the table.
pub fn push_backend(name: &str, mongoosepush_url: &str, extra: &str) -> String {
    format!(
        "[backends.push.{name}]\n{extra}\n[backends.push.{name}.retry]\nmax_attempts = 3\ninitial_backoff_ms = 50\nmax_backoff_ms = 200\n[backends.push.{name}.mongoosepush]\nurl = \"{mongoosepush_url}\"\n"
    )
}
