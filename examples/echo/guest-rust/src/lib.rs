//! The echo guest in Rust, without buffering:
//!
//! * `POST /echo` answers with the request body, streamed back as it arrives;
//! * `POST /double-echo` sends the body on to the URL in its one `url` header (through
//!   the host) and streams that response back;
//! * anything else: 405.
//!
//! Only `content-type` of the request's headers is kept.
//!
//! `wit-lowered/` is `../wit` lowered for WASI 0.2 (`python -m trio_isyswasfa lower ../wit
//! -w echo -o wit-lowered`; `trio_isyswasfa.testing.build_rust_guest` writes it).

isyswasfa_guest::generate!(streams, {
    path: "wit-lowered",
    world: "echo",
});

use wasi::http::handler;
use wasi::http::types::{ErrorCode, Fields, Method, Request, Response};

isyswasfa_guest::http_helpers!();

struct Component;

fn content_type_of(headers: &Fields) -> Fields {
    let entries: Vec<(String, Vec<u8>)> =
        headers.get("content-type").into_iter().map(|v| ("content-type".to_owned(), v)).collect();
    Fields::from_list(&entries).expect("content-type values came from valid fields")
}

async fn double_echo(request: Request) -> Result<Response, ErrorCode> {
    let urls = request.headers().get("url");
    let [url] = urls.as_slice() else {
        return Ok(status_only(400));
    };
    let Ok(url) = String::from_utf8(url.clone()) else {
        return Ok(status_only(400));
    };
    let (headers, body) = Request::into_parts(request);
    let invalid = |()| ErrorCode::HttpRequestUriInvalid;
    let outgoing = request_to(&url, content_type_of(&headers), body).map_err(invalid)?;
    drop(headers);
    outgoing.set_method(&Method::Post).map_err(invalid)?;
    isyswasfa_guest::call!(handler::handle(outgoing)).await
}

isyswasfa_guest::async_exports! {
    impl exports::wasi::http::handler::Guest for Component {
        async fn handle(request: Request) -> Result<Response, ErrorCode> {
            if !matches!(request.method(), Method::Post) {
                return Ok(status_only(405));
            }
            match request.path_with_query().as_deref() {
                Some("/echo") => {
                    let (headers, body) = Request::into_parts(request);
                    Ok(Response::new(content_type_of(&headers), body))
                }
                Some("/double-echo") => double_echo(request).await,
                _ => Ok(status_only(405)),
            }
        }
    }
}

impl Guest for Component {
    fn isyswasfa_poll_echo(input: Vec<PollInput>) -> Vec<PollOutput> {
        isyswasfa_guest::poll(input)
    }
}

export!(Component);
