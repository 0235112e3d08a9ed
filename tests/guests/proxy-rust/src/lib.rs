//! A standard `wasi:http/proxy` component written with the `wasi` crate, as its users
//! write one: nothing here knows trio_isyswasfa. Blocking WASI 0.2 calls throughout (each
//! request gets its own instance under `wasmtime serve`).
//!
//! The routes are those of `tests/guests/proxy-py-std/app.py` (the same answers, byte for
//! byte, but for the `x-guest` header and the wording of error codes), so the differential
//! harness `trio_isyswasfa.testing.http_differential` checks both alike.

use std::io::{Read as _, Write as _};

use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingRequest,
    OutgoingResponse, ResponseOutparam, Scheme,
};
use wasi::io::streams::{OutputStream, StreamError};

wasi::http::proxy::export!(Proxy);

const GUEST: &[u8] = b"rust";
const PIECE: usize = 4096; // what one blocking-write-and-flush may carry
const READ: u64 = 65536;
const PATTERN: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789\n";

struct Proxy;

impl wasi::exports::http::incoming_handler::Guest for Proxy {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let target = request.path_with_query().unwrap_or_else(|| "/".into());
        let path = target.split('?').next().unwrap_or("/").to_string();
        match path.as_str() {
            "/" | "/hello" => {
                let body = b"hello, world\n";
                let mut headers = text();
                headers.push(("content-length".into(), body.len().to_string().into_bytes()));
                respond(out, 200, headers, body, None);
            }
            "/echo" => echo(request, out),
            "/echo-body" => echo_body(request, out),
            "/bytes" => many_bytes(&target, out),
            "/trailers" => {
                let body = b"trailers follow\n";
                let trailers = Fields::from_list(&[
                    ("x-trailer-one".into(), b"1".to_vec()),
                    ("x-body-length".into(), body.len().to_string().into_bytes()),
                ])
                .unwrap();
                let mut headers = text();
                headers.push(("trailer".into(), b"x-trailer-one, x-body-length".to_vec()));
                respond(out, 200, headers, body, Some(trailers));
            }
            "/outgoing" => outgoing(request, out),
            "/sleep" => {
                let ms = query(&target, "ms", 100);
                wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                respond(out, 200, text(), format!("slept {ms} ms\n").as_bytes(), None);
            }
            // bad answers, for the host to handle as the spec says: never set the
            // response; write past a declared content-length; finish short of it
            "/no-response" => drop(out),
            "/overflow" => declared_length(out, 5),
            "/underflow" => declared_length(out, 100),
            _ => respond(out, 404, text(), b"not found\n", None),
        }
    }
}

type HeaderList = Vec<(String, Vec<u8>)>;

fn text() -> HeaderList {
    vec![
        ("content-type".into(), b"text/plain; charset=utf-8".to_vec()),
        ("x-guest".into(), GUEST.to_vec()),
    ]
}

fn write_all(out: &OutputStream, data: &[u8]) {
    for piece in data.chunks(PIECE) {
        out.blocking_write_and_flush(piece).unwrap();
    }
}

fn respond(
    out: ResponseOutparam,
    status: u16,
    headers: HeaderList,
    body: &[u8],
    trailers: Option<Fields>,
) {
    let response = OutgoingResponse::new(Fields::from_list(&headers).unwrap());
    response.set_status_code(status).unwrap();
    let out_body = response.body().unwrap();
    ResponseOutparam::set(out, Ok(response));
    {
        let stream = out_body.write().unwrap();
        write_all(&stream, body);
    }
    OutgoingBody::finish(out_body, trailers).unwrap();
}

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(name) => name.clone(),
    }
}

fn echo(request: IncomingRequest, out: ResponseOutparam) {
    let scheme = match request.scheme() {
        None => "none".to_string(),
        Some(Scheme::Http) => "http".into(),
        Some(Scheme::Https) => "https".into(),
        Some(Scheme::Other(name)) => name,
    };
    let mut lines = vec![
        format!("method: {}", method_name(&request.method())),
        format!("path-with-query: {}", opt(request.path_with_query())),
        format!("scheme: {scheme}"),
        format!("authority: {}", opt(request.authority())),
    ];
    let mut headers = text();
    let mut entries = request.headers().entries();
    entries.sort_by(|a, b| a.0.cmp(&b.0)); // stable: repeats keep their order
    for (name, value) in entries {
        lines.push(format!("header: {name}: {}", String::from_utf8_lossy(&value)));
        if name.starts_with("x-") {
            headers.push((name, value));
        }
    }
    let body = lines.join("\n") + "\n";
    respond(out, 200, headers, body.as_bytes(), None);
}

/// Python's `repr` of an optional string would differ; both guests print `None` alike.
fn opt(value: Option<String>) -> String {
    value.unwrap_or_else(|| "None".into())
}

fn echo_body(request: IncomingRequest, out: ResponseOutparam) {
    let fields = request.headers();
    let kind = fields
        .get("content-type")
        .into_iter()
        .next()
        .unwrap_or_else(|| b"application/octet-stream".to_vec());
    let mut headers = vec![("content-type".into(), kind), ("x-guest".into(), GUEST.to_vec())];
    // HTTP/1.1 sends only the trailers declared in a `trailer` header
    for value in fields.get("trailer") {
        headers.push(("trailer".into(), value));
    }
    drop(fields);
    let in_body = request.consume().unwrap();
    let response = OutgoingResponse::new(Fields::from_list(&headers).unwrap());
    let out_body = response.body().unwrap();
    ResponseOutparam::set(out, Ok(response));
    {
        let source = in_body.stream().unwrap();
        let sink = out_body.write().unwrap();
        loop {
            match source.blocking_read(READ) {
                Ok(chunk) => write_all(&sink, &chunk),
                Err(StreamError::Closed) => break,
                Err(err) => panic!("reading the request body: {err:?}"),
            }
        }
    }
    let trailers = wait_trailers(in_body);
    OutgoingBody::finish(out_body, trailers).unwrap();
}

fn wait_trailers(body: IncomingBody) -> Option<Fields> {
    let future = IncomingBody::finish(body);
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(trailers))) => trailers,
        _ => None,
    }
}

fn query(target: &str, name: &str, default: u64) -> u64 {
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(default)
}

fn many_bytes(target: &str, out: ResponseOutparam) {
    let n = query(target, "n", 1 << 20) as usize;
    let response = OutgoingResponse::new(
        Fields::from_list(&[
            ("content-type".into(), b"application/octet-stream".to_vec()),
            ("x-guest".into(), GUEST.to_vec()),
        ])
        .unwrap(),
    );
    let out_body = response.body().unwrap();
    ResponseOutparam::set(out, Ok(response));
    // whole patterns, so the next block goes on where this one ends
    let block = PATTERN.repeat(READ as usize / PATTERN.len());
    {
        let stream = out_body.write().unwrap();
        let mut sent = 0;
        while sent < n {
            let piece = &block[..(n - sent).min(block.len())];
            write_all(&stream, piece);
            sent += piece.len();
        }
    }
    OutgoingBody::finish(out_body, None).unwrap();
}

fn outgoing(request: IncomingRequest, out: ResponseOutparam) {
    let Some(target) = request.headers().get("x-upstream-url").into_iter().next() else {
        return respond(out, 400, text(), b"missing x-upstream-url\n", None);
    };
    let target = String::from_utf8_lossy(&target).into_owned();
    let (scheme, rest) = target.split_once("://").unwrap_or(("http", &target));
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let upstream =
        OutgoingRequest::new(Fields::from_list(&[("x-from-guest".into(), GUEST.to_vec())]).unwrap());
    upstream.set_method(&Method::Get).unwrap();
    let scheme = if scheme == "https" { Scheme::Https } else { Scheme::Http };
    upstream.set_scheme(Some(&scheme)).unwrap();
    upstream.set_authority(Some(authority)).unwrap();
    upstream.set_path_with_query(Some(path)).unwrap();
    let answer = match outgoing_handler::handle(upstream, None) {
        Ok(future) => {
            future.subscribe().block();
            future.get().expect("ready").expect("first get")
        }
        Err(err) => Err(err),
    };
    let answer = match answer {
        Ok(answer) => answer,
        Err(err) => return upstream_error(out, err),
    };
    let status = answer.status();
    let kind = answer
        .headers()
        .get("content-type")
        .into_iter()
        .next()
        .unwrap_or_else(|| b"application/octet-stream".to_vec());
    let in_body = answer.consume().unwrap();
    let mut body = Vec::new();
    {
        let mut source = in_body.stream().unwrap();
        source.read_to_end(&mut body).unwrap();
    }
    wait_trailers(in_body);
    let headers = vec![
        ("content-type".into(), kind),
        ("x-guest".into(), GUEST.to_vec()),
        ("x-upstream-status".into(), status.to_string().into_bytes()),
    ];
    respond(out, status, headers, &body, None);
}

fn upstream_error(out: ResponseOutparam, err: ErrorCode) {
    let mut body = Vec::new();
    writeln!(body, "upstream error: {err:?}").unwrap();
    respond(out, 502, text(), &body, None);
}

/// Answer `hello, world\n` (13 bytes) under a `content-length` of `declared`, going on
/// whatever the host says about the mismatch (the host must cut or fail the response).
fn declared_length(out: ResponseOutparam, declared: usize) {
    let mut headers = text();
    headers.push(("content-length".into(), declared.to_string().into_bytes()));
    let response = OutgoingResponse::new(Fields::from_list(&headers).unwrap());
    let out_body = response.body().unwrap();
    ResponseOutparam::set(out, Ok(response));
    {
        let stream = out_body.write().unwrap();
        let _ = stream.blocking_write_and_flush(b"hello, world\n");
    }
    let _ = OutgoingBody::finish(out_body, None);
}
