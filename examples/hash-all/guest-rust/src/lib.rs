//! The hash-all guest in Rust: GETs every URL named in the request's `url` headers, all
//! at once, hashing each body with SHA-256 as it streams in, and streams back one
//! `URL: HEX` line as each finishes (`URL: ERROR` for a failure, a non-2xx status
//! included, where ERROR is `status N` or the `error-code` case).
//!
//! `wit-lowered/` is `../wit` lowered for WASI 0.2 (`python -m trio_isyswasfa lower ../wit
//! -w hash-all -o wit-lowered`; `trio_isyswasfa.testing.build_rust_guest` writes it).

mod sha256;

isyswasfa_guest::generate!(streams, {
    path: "wit-lowered",
    world: "hash-all",
});

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;

use isyswasfa::io::pipe::make_pipe;
use isyswasfa_guest::streams::{read, write_all, CHUNK};
use sha256::Sha256;
use wasi::http::handler;
use wasi::http::types::{Body, ErrorCode, Fields, Request, Response};

isyswasfa_guest::http_helpers!();

struct Component;

async fn sha256_of(url: &str) -> Result<String, String> {
    let request = request_to(url, Fields::new(), empty_body())
        .map_err(|()| format!("{:?}", ErrorCode::HttpRequestUriInvalid))?;
    let response =
        isyswasfa_guest::call!(handler::handle(request)).await.map_err(|err| format!("{err:?}"))?;
    let status = response.status_code();
    let (_headers, body) = Response::into_parts(response);
    if !(200..300).contains(&status) {
        return Err(format!("status {status}"));
    }
    let stream = body.stream().map_err(|()| "the body's stream was taken".to_owned())?;
    let mut digest = Sha256::new();
    while let Some(chunk) = read(&stream, CHUNK).await.map_err(|err| format!("{err:?}"))? {
        digest.update(&chunk);
    }
    Ok(digest.hex_digest())
}

async fn line_for(url: String) -> String {
    match sha256_of(&url).await {
        Ok(hex) => format!("{url}: {hex}\n"),
        Err(err) => format!("{url}: {err}\n"), // a failure is a line too
    }
}

type Line = Pin<Box<dyn Future<Output = String>>>;

/// The next of `lines` to finish (all are polled, so all make progress), removed.
async fn next_done(lines: &mut Vec<Line>) -> String {
    poll_fn(|cx| {
        for i in 0..lines.len() {
            if let Poll::Ready(line) = lines[i].as_mut().poll(cx) {
                drop(lines.swap_remove(i));
                return Poll::Ready(line);
            }
        }
        Poll::Pending
    })
    .await
}

isyswasfa_guest::async_exports! {
    impl exports::wasi::http::handler::Guest for Component {
        async fn handle(request: Request) -> Result<Response, ErrorCode> {
            let urls: Vec<String> = request
                .headers()
                .get("url")
                .into_iter()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .collect();
            let (tx, rx) = make_pipe();
            isyswasfa_guest::spawn(async move {
                let mut lines: Vec<Line> = urls.into_iter().map(|u| Box::pin(line_for(u)) as Line).collect();
                while !lines.is_empty() {
                    let line = next_done(&mut lines).await;
                    if write_all(&tx, line.as_bytes()).await.is_err() {
                        return; // the client left: dropping the rest cancels their requests
                    }
                }
            });
            let headers = Fields::from_list(&[("content-type".to_owned(), b"text/plain".to_vec())])
                .map_err(|err| ErrorCode::InternalError(Some(format!("{err:?}"))))?;
            Ok(Response::new(headers, Body::new(rx, None)))
        }
    }
}

impl Guest for Component {
    fn isyswasfa_poll_hash_all(input: Vec<PollInput>) -> Vec<PollOutput> {
        isyswasfa_guest::poll(input)
    }
}

export!(Component);
