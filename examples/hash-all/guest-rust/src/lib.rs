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
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

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

/// The URLs' lines being computed, each polled only when its own waker fired: polling
/// them all at every wake-up would cost N polls per finished line, N² over a fan-out.
struct Lines {
    lines: Vec<Option<(Line, Waker)>>,
    woken: Arc<Woken>,
    left: usize,
}

/// Which lines were woken since they were last polled, and who waits for them.
#[derive(Default)]
struct Woken {
    ids: Mutex<Vec<usize>>,
    waiter: Mutex<Option<Waker>>,
}

/// The waker of line `id`.
struct LineWaker {
    id: usize,
    woken: Arc<Woken>,
}

impl Wake for LineWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.ids.lock().unwrap().push(self.id);
        if let Some(waiter) = self.woken.waiter.lock().unwrap().take() {
            waiter.wake();
        }
    }
}

impl Lines {
    fn new(urls: Vec<String>) -> Self {
        let woken = Arc::new(Woken::default());
        let lines: Vec<_> = urls
            .into_iter()
            .enumerate()
            .map(|(id, url)| {
                let waker = Waker::from(Arc::new(LineWaker { id, woken: woken.clone() }));
                Some((Box::pin(line_for(url)) as Line, waker))
            })
            .collect();
        *woken.ids.lock().unwrap() = (0..lines.len()).collect(); // each runs once at first
        Lines { left: lines.len(), lines, woken }
    }

    /// Every line that finished since the last call (at least one), in one string: one
    /// write for all the answers that came in together.
    async fn next_batch(&mut self) -> String {
        poll_fn(|cx| {
            *self.woken.waiter.lock().unwrap() = Some(cx.waker().clone());
            let mut batch = String::new();
            loop {
                let ids = std::mem::take(&mut *self.woken.ids.lock().unwrap());
                if ids.is_empty() {
                    break;
                }
                for id in ids {
                    let Some((line, waker)) = &mut self.lines[id] else { continue };
                    if let Poll::Ready(done) = line.as_mut().poll(&mut Context::from_waker(waker)) {
                        batch.push_str(&done);
                        self.lines[id] = None;
                        self.left -= 1;
                    }
                }
            }
            if batch.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(batch)
            }
        })
        .await
    }
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
                let mut lines = Lines::new(urls);
                while lines.left > 0 {
                    let batch = lines.next_batch().await;
                    if write_all(&tx, batch.as_bytes()).await.is_err() {
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
