//! Test peers for the SNS backend: a moto_server child process speaking the
//! real SNS and SQS APIs, an SQS reader to see what was published, and a
//! recording proxy in front of moto to count API calls, read the requests
//! (credentials, FIFO ids) and inject faults moto cannot produce.
//!
//! One moto_server serves a whole test binary; every test uses topics and
//! queues of its own, so tests can run in parallel. moto is stopped when the
//! test process ends, however it ends: it runs under a small Python wrapper
//! that exits as soon as its stdin (a pipe held by this process) closes.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_sns::config::{BehaviorVersion, Credentials, Region};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const REGION: &str = "us-east-1";
/// moto's default account.
pub const ACCOUNT: &str = "123456789012";
/// Set in a child test process: the port of the parent's moto_server.
pub const MOTO_PORT_ENV: &str = "SNS_TEST_MOTO_PORT";

/// Runs moto in-process and exits when stdin reaches EOF, i.e. when the
/// test process that holds the other end of the pipe is gone.
const WRAPPER: &str = r#"
import os, sys, threading
def watch():
    try:
        sys.stdin.buffer.read()
    finally:
        os._exit(0)
threading.Thread(target=watch, daemon=True).start()
from moto.server import main
main(["-H", "127.0.0.1", "-p", sys.argv[1]])
"#;

pub struct Moto {
    pub port: u16,
    /// Held only for its stdin pipe: dropping the process closes it.
    _child: Option<Mutex<Child>>,
}

impl Moto {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The moto_server of this test process, started on first use.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        if let Some(port) = std::env::var(MOTO_PORT_ENV).ok().and_then(|p| p.parse().ok()) {
            return Moto { port, _child: None };
        }
        start_moto()
    })
}

fn python() -> String {
    std::env::var("MOTO_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn start_moto() -> Moto {
    let py = python();
    let check = Command::new(&py)
        .args(["-c", "import moto.server, flask, werkzeug"])
        .output();
    match check {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "moto_server is not installed for {py}: run `pip install 'moto[server]'` ({})",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => {
            panic!("cannot run {py} to start moto_server ({e}): install Python 3 and `pip install 'moto[server]'`")
        }
    }
    let port = free_port();
    let dir = option_env!("CARGO_TARGET_TMPDIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let log_path = dir.join(format!("moto-sns-{port}.log"));
    let log = std::fs::File::create(&log_path).expect("create moto log file");
    let mut child = Command::new(&py)
        .args(["-c", WRAPPER, &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start moto_server: {e}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut text = String::new();
            let _ = std::fs::File::open(&log_path).and_then(|mut f| f.read_to_string(&mut text));
            panic!("moto_server exited with {status} before answering:\n{text}");
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "moto_server did not answer on port {port} within 60 s (log: {})",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto {
        port,
        _child: Some(Mutex::new(child)),
    }
}

pub use event_pusher_testkit::free_port;

/// A name no other test (or earlier run against the same moto) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos % 1_000_000_000
    )
}

/// An SNS client straight to moto, for setting topics up.
pub async fn sns_admin() -> aws_sdk_sns::Client {
    let conf = aws_sdk_sns::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(moto().url())
        .credentials_provider(Credentials::new("admin", "admin", None, None, "test"))
        .build();
    aws_sdk_sns::Client::from_conf(conf)
}

pub async fn create_topic(sns: &aws_sdk_sns::Client, name: &str) -> String {
    let mut req = sns.create_topic().name(name);
    if name.ends_with(".fifo") {
        req = req.attributes("FifoTopic", "true");
    }
    let out = req.send().await.expect("create topic");
    out.topic_arn().expect("topic arn").to_owned()
}

/// A topic with an SQS queue subscribed to it (raw delivery off, so the
/// queue gets SNS's JSON envelope with `MessageAttributes`).
pub struct Watched {
    pub name: String,
    pub arn: String,
    pub queue: Queue,
}

pub async fn watched_topic(sns: &aws_sdk_sns::Client, sqs: &Sqs, name: &str) -> Watched {
    let arn = create_topic(sns, name).await;
    // A FIFO topic delivers only to FIFO queues.
    let queue_name = match name.strip_suffix(".fifo") {
        Some(stem) => format!("{stem}-q.fifo"),
        None => format!("{name}-q"),
    };
    let queue = sqs.create_queue(&queue_name).await;
    sns.subscribe()
        .topic_arn(&arn)
        .protocol("sqs")
        .endpoint(&queue.arn)
        .send()
        .await
        .expect("subscribe queue");
    Watched {
        name: name.to_owned(),
        arn,
        queue,
    }
}

pub struct Queue {
    pub url: String,
    pub arn: String,
}

/// One notification read back from a queue.
#[derive(Debug, Clone)]
pub struct Notification {
    pub topic_arn: String,
    /// The `Message`, parsed as JSON.
    pub message: serde_json::Value,
    /// name → (Type, Value)
    pub attributes: BTreeMap<String, (String, String)>,
}

impl Notification {
    pub fn attr(&self, name: &str) -> Option<(&str, &str)> {
        self.attributes.get(name).map(|(t, v)| (t.as_str(), v.as_str()))
    }
}

/// SQS through its JSON protocol, which moto speaks; enough to create a
/// queue and read it.
pub struct Sqs {
    http: reqwest::Client,
}

impl Sqs {
    pub fn new() -> Self {
        Sqs {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
        }
    }

    async fn call(&self, action: &str, body: serde_json::Value) -> serde_json::Value {
        let resp = self
            .http
            .post(moto().url())
            .header("X-Amz-Target", format!("AmazonSQS.{action}"))
            .header("Content-Type", "application/x-amz-json-1.0")
            // moto picks service and region from the credential scope.
            .header(
                "Authorization",
                format!("AWS4-HMAC-SHA256 Credential=admin/20260101/{REGION}/sqs/aws4_request, SignedHeaders=host, Signature=0"),
            )
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("SQS {action}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "SQS {action} answered {status}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("SQS {action} answered non-JSON ({e}): {text}"))
    }

    pub async fn create_queue(&self, name: &str) -> Queue {
        let mut body = serde_json::json!({"QueueName": name});
        if name.ends_with(".fifo") {
            body["Attributes"] = serde_json::json!({"FifoQueue": "true"});
        }
        let v = self.call("CreateQueue", body).await;
        let url = v["QueueUrl"].as_str().expect("QueueUrl").to_owned();
        Queue {
            url,
            arn: format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"),
        }
    }

    /// Everything in the queue: reads until it has at least `want` messages
    /// and a read comes back empty, or until `timeout`. Read messages stay
    /// invisible for the rest of the test, so nothing is counted twice.
    pub async fn drain(&self, queue: &Queue, want: usize, timeout: Duration) -> Vec<Notification> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let v = self
                .call(
                    "ReceiveMessage",
                    serde_json::json!({"QueueUrl": queue.url, "MaxNumberOfMessages": 10, "VisibilityTimeout": 600,
                                       "WaitTimeSeconds": 0}),
                )
                .await;
            let msgs = v["Messages"].as_array().cloned().unwrap_or_default();
            let empty = msgs.is_empty();
            for m in msgs {
                out.push(parse_notification(m["Body"].as_str().expect("message body")));
            }
            if (empty && out.len() >= want) || Instant::now() > deadline {
                return out;
            }
            if empty {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn parse_notification(body: &str) -> Notification {
    let env: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("SNS envelope is not JSON ({e}): {body}"));
    let message = env["Message"].as_str().expect("Message");
    let message = serde_json::from_str(message).unwrap_or_else(|e| panic!("Message is not JSON ({e}): {message}"));
    let mut attributes = BTreeMap::new();
    if let Some(map) = env["MessageAttributes"].as_object() {
        for (k, v) in map {
            let t = v["Type"].as_str().unwrap_or_default().to_owned();
            let val = v["Value"].as_str().unwrap_or_default().to_owned();
            attributes.insert(k.clone(), (t, val));
        }
    }
    Notification {
        topic_arn: env["TopicArn"].as_str().unwrap_or_default().to_owned(),
        message,
        attributes,
    }
}

/// One request that went through the proxy.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `Action=` of the query-protocol body: `Publish`, `PublishBatch`, ...
    pub action: String,
    pub authorization: String,
    /// The decoded form parameters.
    pub params: BTreeMap<String, String>,
}

/// A canned answer for the next request with this action (any if `None`).
#[derive(Debug, Clone)]
pub struct Fault {
    pub action: Option<String>,
    pub status: u16,
    pub body: String,
}

impl Fault {
    /// An SNS error answer as the query protocol sends it.
    pub fn error(action: &str, status: u16, code: &str, message: &str) -> Fault {
        let kind = if status >= 500 { "Receiver" } else { "Sender" };
        Fault {
            action: Some(action.to_owned()),
            status,
            body: format!(
                "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><Error><Type>{kind}</Type>\
                 <Code>{code}</Code><Message>{message}</Message></Error><RequestId>fault</RequestId></ErrorResponse>"
            ),
        }
    }

    /// A `PublishBatch` answer with these successful ids and these failed
    /// (id, code, sender_fault).
    pub fn batch_result(successful: &[&str], failed: &[(&str, &str, bool)]) -> Fault {
        let ok: String = successful
            .iter()
            .map(|id| format!("<member><Id>{id}</Id><MessageId>m-{id}</MessageId></member>"))
            .collect();
        let bad: String = failed
            .iter()
            .map(|(id, code, sender)| {
                format!(
                    "<member><Id>{id}</Id><Code>{code}</Code><Message>injected {code}</Message>\
                     <SenderFault>{sender}</SenderFault></member>"
                )
            })
            .collect();
        Fault {
            action: Some("PublishBatch".to_owned()),
            status: 200,
            body: format!(
                "<PublishBatchResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><PublishBatchResult>\
                 <Successful>{ok}</Successful><Failed>{bad}</Failed></PublishBatchResult>\
                 <ResponseMetadata><RequestId>fault</RequestId></ResponseMetadata></PublishBatchResponse>"
            ),
        }
    }
}

#[derive(Default)]
struct ProxyState {
    requests: Mutex<Vec<Recorded>>,
    faults: Mutex<VecDeque<Fault>>,
}

/// An HTTP/1.1 proxy to moto that records every request and can answer
/// some itself. Stops when dropped.
pub struct Proxy {
    pub port: u16,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// The upstream moto is started only when a request must be forwarded,
    /// so a test whose requests are all answered here does not wait for it.
    pub async fn start() -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let state = Arc::new(ProxyState::default());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((sock, _)) = listener.accept().await {
                conns.spawn(serve(sock, st.clone(), http.clone()));
            }
        });
        Proxy { port, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn inject(&self, fault: Fault) {
        self.state.faults.lock().expect("faults").push_back(fault);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().expect("requests").clone()
    }

    /// How many requests of each action went through.
    pub fn count(&self, action: &str) -> usize {
        self.requests().iter().filter(|r| r.action == action).count()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn serve(mut sock: tokio::net::TcpStream, state: Arc<ProxyState>, http: reqwest::Client) {
    let mut buf = Vec::new();
    let mut tmp = vec![0u8; 64 * 1024];
    loop {
        let head_end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p;
            }
            match sock.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split(' ');
        let method = first.next().unwrap_or("GET").to_owned();
        let path = first.next().unwrap_or("/").to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| {
                l.split_once(':')
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            })
            .collect();
        let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let start = head_end + 4;
        let expects_continue = header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        if buf.len() < start + len
            && expects_continue
            && sock.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err()
        {
            return;
        }
        while buf.len() < start + len {
            match sock.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let body = buf[start..start + len].to_vec();
        buf.drain(..start + len);

        let params: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
        let action = params.get("Action").cloned().unwrap_or_default();
        state.requests.lock().expect("requests").push(Recorded {
            action: action.clone(),
            authorization: header("authorization").unwrap_or_default(),
            params,
        });
        let fault = {
            let mut faults = state.faults.lock().expect("faults");
            let at = faults
                .iter()
                .position(|f| f.action.as_deref().is_none_or(|a| a == action));
            at.and_then(|i| faults.remove(i))
        };
        let (status, content_type, answer) = match fault {
            Some(f) => (f.status, "text/xml".to_owned(), f.body.into_bytes()),
            None => {
                let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::POST);
                let mut req = http.request(method, format!("{}{path}", moto().url()));
                for (k, v) in &headers {
                    if !matches!(
                        k.as_str(),
                        "host" | "content-length" | "connection" | "expect" | "transfer-encoding"
                    ) {
                        req = req.header(k.as_str(), v.as_str());
                    }
                }
                match req.body(body).send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let ct = resp
                            .headers()
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("text/xml")
                            .to_owned();
                        (status, ct, resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
                    }
                    Err(e) => (502, "text/plain".to_owned(), format!("proxy: {e}").into_bytes()),
                }
            }
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nx-amzn-requestid: proxy\r\n\r\n",
            answer.len()
        );
        if sock.write_all(head.as_bytes()).await.is_err() || sock.write_all(&answer).await.is_err() {
            return;
        }
    }
}
