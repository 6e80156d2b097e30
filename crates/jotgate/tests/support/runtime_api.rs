//! A local AWS Lambda Runtime API (the documented `2018-06-01` endpoints), enough to drive a
//! real Lambda binary: `invocation/next` hands out queued events, `invocation/{id}/response`
//! and `/error` deliver results, `init/error` reports a failed start.
//! Shared by the integration tests and the authorizer benchmark.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::{Mutex, mpsc};

/// One finished invocation.
#[derive(Debug)]
pub struct Outcome {
    pub request_id: String,
    /// `Ok(response body)` or `Err(error body)`.
    pub result: Result<Value, Value>,
    /// When the result arrived.
    pub at: std::time::Instant,
}

struct Inner {
    events: Mutex<mpsc::UnboundedReceiver<(String, Value)>>,
    outcomes: mpsc::UnboundedSender<Outcome>,
}

pub struct RuntimeApi {
    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub addr: String,
    queue: mpsc::UnboundedSender<(String, Value)>,
    pub outcomes: mpsc::UnboundedReceiver<Outcome>,
    next_id: AtomicU64,
}

async fn next(State(s): State<Arc<Inner>>) -> impl IntoResponse {
    let (id, event) = s
        .events
        .lock()
        .await
        .recv()
        .await
        .unwrap_or_else(|| (String::new(), Value::Null));
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 30_000;
    let mut h = HeaderMap::new();
    h.insert("lambda-runtime-aws-request-id", id.parse().unwrap());
    h.insert(
        "lambda-runtime-deadline-ms",
        deadline.to_string().parse().unwrap(),
    );
    h.insert(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:jotgate-authorizer"
            .parse()
            .unwrap(),
    );
    h.insert(
        "lambda-runtime-trace-id",
        "Root=1-5759e988-bd862e3fe1be46a994272793".parse().unwrap(),
    );
    (h, axum::Json(event))
}

fn body_json(b: &Bytes) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into()))
}

fn record(s: &Inner, request_id: String, result: Result<Value, Value>) -> axum::http::StatusCode {
    let at = std::time::Instant::now();
    let _ = s.outcomes.send(Outcome {
        request_id,
        result,
        at,
    });
    axum::http::StatusCode::ACCEPTED
}

async fn response(
    State(s): State<Arc<Inner>>,
    Path(id): Path<String>,
    body: Bytes,
) -> impl IntoResponse {
    record(&s, id, Ok(body_json(&body)))
}

async fn error(
    State(s): State<Arc<Inner>>,
    Path(id): Path<String>,
    body: Bytes,
) -> impl IntoResponse {
    record(&s, id, Err(body_json(&body)))
}

async fn init_error(State(s): State<Arc<Inner>>, body: Bytes) -> impl IntoResponse {
    record(&s, "init".into(), Err(body_json(&body)))
}

impl RuntimeApi {
    pub async fn start() -> Self {
        let (queue, events) = mpsc::unbounded_channel();
        let (tx, outcomes) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            events: Mutex::new(events),
            outcomes: tx,
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(inner);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            addr,
            queue,
            outcomes,
            next_id: AtomicU64::new(1),
        }
    }

    /// Queue an event; returns its request id.
    pub fn invoke(&self, event: Value) -> String {
        let id = format!("req-{}", self.next_id.fetch_add(1, Ordering::SeqCst));
        self.queue.send((id.clone(), event)).unwrap();
        id
    }

    /// The environment a Lambda function sees (besides its own settings).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_LAMBDA_RUNTIME_API", self.addr.clone()),
            ("AWS_LAMBDA_FUNCTION_NAME", "jotgate-authorizer".into()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "local".into()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "local".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// Start `jotgate authorizer --policy <policy>` against this Runtime API.
    pub fn spawn_authorizer(&self, bin: &str, policy: &std::path::Path) -> tokio::process::Child {
        tokio::process::Command::new(bin)
            .args(["authorizer", "--policy"])
            .arg(policy)
            .envs(self.env())
            .env("JOTGATE_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn jotgate authorizer")
    }

    /// The next finished invocation (panics after 30 s).
    pub async fn outcome(&mut self) -> Outcome {
        tokio::time::timeout(std::time::Duration::from_secs(30), self.outcomes.recv())
            .await
            .expect("the function answered within 30 s")
            .expect("runtime API alive")
    }
}
