//! A scripted peer for the push provider tests: it records every request
//! and answers from a queue (200 with an empty body when the queue is
//! empty). Plain HTTP/1 plays a Web Push service; HTTP/2 over TLS with ALPN
//! `h2` only, under a CA made here, plays APNs.

#![allow(dead_code)] // each test binary uses its own part

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use event_pusher_backends::push::provider::Notification;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// No test waits longer than this for anything.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(20);

pub async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test took longer than its time limit")
}

/// One request as the peer received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .unwrap()
    }
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

#[derive(Default)]
struct Script {
    requests: Mutex<Vec<Recorded>>,
    answers: Mutex<VecDeque<Answer>>,
}

/// The peer: its address, what it received, what it answers next.
#[derive(Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    script: Arc<Script>,
}

impl Peer {
    /// A plain HTTP/1.1 peer.
    pub async fn http() -> Peer {
        Self::spawn(None).await
    }

    /// An HTTP/2-only peer over TLS (ALPN `h2`), with `ca`'s certificate.
    pub async fn h2_tls(ca: &TestCa) -> Peer {
        Self::spawn(Some(TlsAcceptor::from(ca.server_config.clone()))).await
    }

    async fn spawn(tls: Option<TlsAcceptor>) -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Script::default());
        let shared = script.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (script, tls) = (shared.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(script.clone(), req));
                    match tls {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(tcp).await else { return };
                            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        None => {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(tcp), service)
                                .await;
                        }
                    }
                });
            }
        });
        Peer { addr, script }
    }

    /// Queue an answer.
    pub fn answer(&self, status: u16, body: &str) {
        self.answer_with(status, &[], body);
    }

    /// Queue an answer with headers.
    pub fn answer_with(&self, status: u16, headers: &[(&str, &str)], body: &str) {
        self.script.answers.lock().unwrap().push_back(Answer {
            status,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: body.into(),
        });
    }

    /// Everything received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.script.requests.lock().unwrap().clone()
    }
}

async fn answer(script: Arc<Script>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    script.requests.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        version: parts.version,
        headers: parts.headers,
        body,
    });
    let next = script.answers.lock().unwrap().pop_front().unwrap_or(Answer {
        status: 200,
        headers: vec![],
        body: String::new(),
    });
    let mut resp = Response::builder().status(next.status);
    for (k, v) in next.headers {
        resp = resp.header(k, v);
    }
    Ok(resp.body(Full::new(Bytes::from(next.body))).unwrap())
}

/// A CA made for one test, and a server certificate it issued for
/// `localhost` and `127.0.0.1`.
pub struct TestCa {
    /// The CA certificate (PEM), for the client's `ca_file`.
    pub ca_pem: String,
    server_config: Arc<ServerConfig>,
}

pub fn test_ca() -> TestCa {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "event-pusher test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec()), ca.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    // HTTP/2 only, as APNs: a client that cannot negotiate h2 fails.
    config.alpn_protocols = vec![b"h2".to_vec()];
    TestCa {
        ca_pem: ca.pem(),
        server_config: Arc::new(config),
    }
}

/// A fixture file's path.
pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/push/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A notification as the push backend would build it for `content = "full"`.
pub fn notification(event_id: &str, silent: bool) -> Notification {
    Notification {
        event_id: event_id.into(),
        title: (!silent).then(|| "alice@localhost".to_string()),
        body: (!silent).then(|| "hi Bob ✓".to_string()),
        badge: 2,
        data: BTreeMap::from([
            ("event_id".to_string(), event_id.to_string()),
            ("message_id".to_string(), "m-1".to_string()),
            ("from".to_string(), "alice@localhost".to_string()),
            ("type".to_string(), "chat".to_string()),
            ("message_count".to_string(), "2".to_string()),
        ]),
        silent,
        collapse_key: Some("bob@localhost alice@localhost".to_string()),
        last_sender: Some("alice@localhost".to_string()),
    }
}
