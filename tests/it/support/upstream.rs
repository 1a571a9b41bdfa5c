//! A recording mock OpenAI-compatible upstream. It records every request (method, path,
//! headers, body) and every accepted connection, and its behaviour is steered per request by
//! the `x-mock` header the test sends (sluice forwards it untouched):
//! - (none): a chat.completion JSON answer; with `"stream": true` in the body, 3 SSE chunks
//! - `sse:N:MS`: N SSE events, MS milliseconds apart
//! - `stall:MS`: wait MS before sending response headers
//! - `stall-mid`: send headers and one SSE event, then stall for a minute
//! - `status:CODE`: answer with that status and an OpenAI-shaped error
//! - `sse-text:TEXT`: a chat completion stream of TEXT (percent-encoded), a character per event
//! - `responses-text:TEXT`: the same as a Responses API stream
//! - `json-text:TEXT` / `gzip-json:TEXT`: a chat completion whose content is TEXT (gzip-encoded)
//! - `type:CONTENT-TYPE`: a small body of that type

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the whole request had arrived.
    pub at: std::time::Instant,
}

impl Recorded {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    connections: AtomicUsize,
}

/// A running mock upstream; stops with the test process.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Texts the mock answers with, by number (see [`mock_text`]).
static SCRIPTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// An `X-Mock` value: answer in `mode` with `text`. The text stays in this process (the mock
/// runs in it); only its number goes through sluice.
pub fn mock_text(mode: &str, text: &str) -> String {
    let mut s = SCRIPTS.lock().unwrap();
    s.push(text.to_string());
    format!("{mode}:#{}", s.len() - 1)
}

impl Upstream {
    /// Start on a free port.
    pub fn start() -> Upstream {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let sh = shared.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let sh = sh.clone();
                    tokio::spawn(async move {
                        // Count connections that carry bytes: sluice's TCP health checks
                        // connect and close without sending anything.
                        let mut probe = [0u8; 1];
                        if !matches!(stream.peek(&mut probe).await, Ok(n) if n > 0) {
                            return;
                        }
                        sh.connections.fetch_add(1, Ordering::SeqCst);
                        let svc = service_fn(move |req| handle(sh.clone(), req));
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
        let addr = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        Upstream { addr, shared }
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// How many TCP connections carried data (health-check connects that send nothing are
    /// not counted).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

async fn handle(
    sh: Arc<Shared>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mock = req
        .headers()
        .get("x-mock")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let parsed = serde_json::from_slice::<serde_json::Value>(&body).ok();
    let wants_stream = parsed
        .as_ref()
        .and_then(|v| v.get("stream").and_then(|s| s.as_bool()))
        .unwrap_or(false);
    // As OpenAI does: `"usage": null` in every chunk, then a usage-only chunk before `[DONE]`.
    let include_usage = parsed
        .as_ref()
        .and_then(|v| v.pointer("/stream_options/include_usage"))
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    sh.requests.lock().unwrap().push(Recorded {
        method,
        path,
        headers,
        body,
        at: std::time::Instant::now(),
    });

    // Modes carrying a text: `#N`, a text registered with `mock_text` (PII and secrets never
    // cross sluice in the request: its headers are scanned too), or percent-encoded.
    if let Some((mode, text)) = mock.split_once(':') {
        let text = match text.strip_prefix('#').and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => SCRIPTS.lock().unwrap().get(n).cloned().unwrap_or_default(),
            None => urlencoding::decode(text)
                .map(|t| t.into_owned())
                .unwrap_or_default(),
        };
        match mode {
            "sse-text" => return Ok(sse_text(&text, "\n")),
            // The same streams with lone-CR or CRLF line ends (the event-stream format's others).
            "sse-text-cr" => return Ok(sse_text(&text, "\r")),
            "sse-text-crlf" => return Ok(sse_text(&text, "\r\n")),
            // The same stream under `text/plain` (as servers that forget the type send it).
            "sse-as-plain" => {
                let mut r = sse_text(&text, "\n");
                r.headers_mut()
                    .insert("content-type", "text/plain".parse().unwrap());
                return Ok(r);
            }
            // Answers with token log probabilities (as `logprobs: true` asks), streamed or not,
            // and a streamed audio transcript.
            "sse-logprobs" => return Ok(sse_logprobs(&text)),
            "json-logprobs" => {
                let mut v = completion();
                v["choices"][0]["message"]["content"] = text.clone().into();
                v["choices"][0]["logprobs"] = serde_json::json!({"content": text.chars()
                    .map(|c| serde_json::json!({"token": c.to_string(), "logprob": -0.1,
                        "bytes": [c as u32], "top_logprobs": [{"token": c.to_string(),
                        "logprob": -0.1, "bytes": [c as u32]}]}))
                    .collect::<Vec<_>>()});
                return Ok(json(200, v));
            }
            "responses-text" => return Ok(responses_text(&text, "\n")),
            "responses-text-cr" => return Ok(responses_text(&text, "\r")),
            "json-text" => {
                let mut v = completion();
                v["choices"][0]["message"]["content"] = text.into();
                return Ok(json(200, v));
            }
            "gzip-json" => {
                use std::io::Write;
                let mut v = completion();
                v["choices"][0]["message"]["content"] = text.into();
                let mut gz =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                gz.write_all(v.to_string().as_bytes()).unwrap();
                return Ok(Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .header("content-encoding", "gzip")
                    .body(Full::new(Bytes::from(gz.finish().unwrap())).boxed())
                    .unwrap());
            }
            "type" => {
                return Ok(Response::builder()
                    .status(200)
                    .header("content-type", text)
                    .body(Full::new(Bytes::from_static(b"raw bytes bob@example.com")).boxed())
                    .unwrap())
            }
            _ => {}
        }
    }
    let parts: Vec<&str> = mock.split(':').collect();
    match parts.as_slice() {
        ["stall", ms] => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
            Ok(json(200, completion()))
        }
        // A long answer (900 tokens: 10 in, 890 out) after `ms`.
        ["big-usage", ms] => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
            let mut v = completion();
            v["usage"] = serde_json::json!({"prompt_tokens": 10, "completion_tokens": 890,
                "total_tokens": 900});
            Ok(json(200, v))
        }
        ["status", code] => Ok(json(
            code.parse().unwrap(),
            serde_json::json!({"error": {"message": "mock error", "type": "server_error", "code": null}}),
        )),
        ["sse", n, ms] => Ok(sse(
            n.parse().unwrap(),
            Duration::from_millis(ms.parse().unwrap()),
            false,
            include_usage,
        )),
        ["stall-mid"] => Ok(sse(1, Duration::ZERO, true, include_usage)),
        // `[DONE]`, then the body stays open a moment before it ends (a client that stops at
        // `[DONE]` has closed by then, as the official SDKs do).
        ["sse-linger"] => Ok(linger_after_done()),
        _ if wants_stream => Ok(sse(3, Duration::from_millis(10), false, include_usage)),
        _ => Ok(json(200, completion())),
    }
}

fn completion() -> serde_json::Value {
    serde_json::json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello from mock"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}
    })
}

fn json(status: u16, v: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-request-id", "req_upstream_123")
        // What the provider says of its account's limits (shared by every org behind sluice:
        // never passed on).
        .header("x-ratelimit-limit-requests", "10000")
        .header("x-ratelimit-remaining-requests", "9999")
        .header("x-ratelimit-reset-requests", "6ms")
        .header("x-ratelimit-limit-tokens", "2000000")
        .header("x-ratelimit-remaining-tokens", "1999990")
        .header("x-ratelimit-reset-tokens", "0s")
        .header("anthropic-ratelimit-requests-remaining", "42")
        .body(Full::new(Bytes::from(serde_json::to_vec(&v).unwrap())).boxed())
        .unwrap()
}

fn chunk(i: usize, include_usage: bool) -> Bytes {
    let mut v = serde_json::json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1,
        "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"content": format!("tok{i} ")}, "finish_reason": null}]});
    if include_usage {
        v["usage"] = serde_json::Value::Null;
    }
    Bytes::from(format!("data: {v}\n\n"))
}

fn linger_after_done() -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    tokio::spawn(async move {
        for i in 0..3 {
            if tx.send(Ok(Frame::data(chunk(i, false)))).await.is_err() {
                return;
            }
        }
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))))
            .await;
        // A keep-alive after the end, then the body ends: by then the client has gone, so
        // writing these fails (the connection was reset).
        tokio::time::sleep(Duration::from_millis(150)).await;
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(b": bye\n\n"))))
            .await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    });
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .body(StreamBody::new(tokio_stream_from(rx)).boxed())
        .unwrap()
}

/// The usage-only chunk of a stream of `n` chunks: 11 prompt tokens, one per chunk out.
fn usage_chunk(n: usize) -> Bytes {
    let v = serde_json::json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1,
        "model": "gpt-4o-mini", "choices": [],
        "usage": {"prompt_tokens": 11, "completion_tokens": n, "total_tokens": 11 + n}});
    Bytes::from(format!("data: {v}\n\n"))
}

fn sse(n: usize, gap: Duration, stall_after: bool, include_usage: bool) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    tokio::spawn(async move {
        for i in 0..n {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            if tx
                .send(Ok(Frame::data(chunk(i, include_usage))))
                .await
                .is_err()
            {
                return;
            }
        }
        if stall_after {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return;
        }
        if include_usage && tx.send(Ok(Frame::data(usage_chunk(n)))).await.is_err() {
            return;
        }
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))))
            .await;
    });
    let stream = tokio_stream_from(rx);
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(StreamBody::new(stream).boxed())
        .unwrap()
}

/// Stream `events` (each already a full SSE event), 2 ms apart.
fn stream_events(events: Vec<String>) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(8);
    tokio::spawn(async move {
        for e in events {
            if tx.send(Ok(Frame::data(Bytes::from(e)))).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .body(StreamBody::new(tokio_stream_from(rx)).boxed())
        .unwrap()
}

/// A chat completion stream of `text`, one character per event, then the finish chunk with
/// usage and `[DONE]`.
fn sse_text(text: &str, eol: &str) -> Response<Body> {
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        let v = serde_json::json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk",
            "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {v}\n\n")
    };
    let mut events = vec![chunk(
        serde_json::json!({"role": "assistant", "content": ""}),
        serde_json::Value::Null,
    )];
    for c in text.chars() {
        events.push(chunk(
            serde_json::json!({"content": c.to_string()}),
            serde_json::Value::Null,
        ));
    }
    let mut last: serde_json::Value = serde_json::from_str(
        chunk(serde_json::json!({}), "stop".into())
            .trim_start_matches("data: ")
            .trim(),
    )
    .unwrap();
    last["usage"] =
        serde_json::json!({"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12});
    events.push(format!("data: {last}\n\n"));
    events.push("data: [DONE]\n\n".into());
    if eol != "\n" {
        // With an `id` line before the data, as servers that support resuming send them.
        events = (events.iter().enumerate())
            .map(|(i, e)| format!("id: {i}\n{e}").replace('\n', eol))
            .collect();
    }
    stream_events(events)
}

/// A chat completion stream of `text`, one character per event, each with its token's log
/// probability and the same character as the audio transcript.
fn sse_logprobs(text: &str) -> Response<Body> {
    let mut events: Vec<String> = text
        .chars()
        .map(|c| {
            let v = serde_json::json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk",
                "created": 1, "model": "gpt-4o-mini", "choices": [{"index": 0,
                "delta": {"content": c.to_string(), "audio": {"transcript": c.to_string()}},
                "logprobs": {"content": [{"token": c.to_string(), "logprob": -0.1,
                    "bytes": [c as u32], "top_logprobs": []}]},
                "finish_reason": null}]});
            format!("data: {v}\n\n")
        })
        .collect();
    let last = serde_json::json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk",
        "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    events.push(format!("data: {last}\n\n"));
    events.push("data: [DONE]\n\n".into());
    stream_events(events)
}

/// A Responses API stream of `text`, one character per delta event, numbered from 0 with no gap
/// as OpenAI numbers them.
fn responses_text(text: &str, eol: &str) -> Response<Body> {
    let ev =
        |v: serde_json::Value| format!("event: {}\ndata: {v}\n\n", v["type"].as_str().unwrap());
    let mut events = vec![ev(
        serde_json::json!({"type": "response.created", "sequence_number": 0,
        "response": {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}}),
    )];
    for (n, c) in text.chars().enumerate() {
        events.push(ev(serde_json::json!({"type": "response.output_text.delta", "item_id": "msg_1",
            "output_index": 0, "content_index": 0, "delta": c.to_string(), "sequence_number": n + 1})));
    }
    events.push(ev(
        serde_json::json!({"type": "response.output_text.done", "item_id": "msg_1",
        "output_index": 0, "content_index": 0, "text": text, "sequence_number": text.chars().count() + 1}),
    ));
    events.push(ev(
        serde_json::json!({"type": "response.completed", "sequence_number": text.chars().count() + 2,
        "response": {"id": "resp_1", "object": "response", "status": "completed",
            "output": [{"id": "msg_1", "type": "message", "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}]}]}}),
    ));
    stream_events(events.iter().map(|e| e.replace('\n', eol)).collect())
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + Sync + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// An upstream that answers every request with fixed raw bytes (for malformed or hostile
/// responses hyper cannot produce), then closes the connection. Counts the requests it read.
#[derive(Clone)]
pub struct RawUpstream {
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl RawUpstream {
    /// Start on a free port; every request gets `response` verbatim.
    pub fn start(response: Vec<u8>) -> RawUpstream {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let response = response.clone();
                let count = count.clone();
                std::thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    // Read one request head and its Content-Length body; health checks that
                    // connect and close read nothing and are not counted.
                    let mut buf = Vec::new();
                    let mut byte = [0u8; 1];
                    while !buf.ends_with(b"\r\n\r\n") {
                        match s.read(&mut byte) {
                            Ok(1) => buf.push(byte[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    let mut body = vec![0u8; len];
                    let _ = s.read_exact(&mut body);
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = s.write_all(&response);
                    let _ = s.flush();
                });
            }
        });
        RawUpstream { addr, requests }
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests it answered.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}
