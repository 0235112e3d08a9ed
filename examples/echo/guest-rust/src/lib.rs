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

use isyswasfa::io::pipe::make_pipe;
use wasi::http::handler;
use wasi::http::types::{Body, ErrorCode, Fields, Method, Request, Response, Scheme};

struct Component;

fn empty_body() -> Body {
    let (tx, rx) = make_pipe();
    drop(tx); // the end of the stream, at once
    Body::new(rx, None)
}

fn status_only(status: u16) -> Response {
    let response = Response::new(Fields::new(), empty_body());
    response.set_status_code(status).expect("a fresh response is mutable");
    response
}

fn content_type_of(headers: &Fields) -> Fields {
    let entries: Vec<(String, Vec<u8>)> =
        headers.get("content-type").into_iter().map(|v| ("content-type".to_owned(), v)).collect();
    Fields::from_list(&entries).expect("content-type values came from valid fields")
}

/// `http://host:port/path?query` → (is https, authority, path with query).
fn split_url(url: &str) -> (bool, String, String) {
    let (https, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (scheme.eq_ignore_ascii_case("https"), rest),
        None => (false, url),
    };
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(cut);
    let path = match path {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    };
    (https, authority.to_owned(), path)
}

async fn double_echo(request: Request) -> Result<Response, ErrorCode> {
    let urls = request.headers().get("url");
    let [url] = urls.as_slice() else {
        return Ok(status_only(400));
    };
    let Ok(url) = String::from_utf8(url.clone()) else {
        return Ok(status_only(400));
    };
    let (https, authority, path) = split_url(&url);
    let (headers, body) = Request::into_parts(request);
    let outgoing = Request::new(content_type_of(&headers), body, None);
    drop(headers);
    let unset = |_| ErrorCode::InternalError(Some("a fresh request is mutable".to_owned()));
    outgoing.set_method(&Method::Post).map_err(unset)?;
    outgoing.set_scheme(Some(&if https { Scheme::Https } else { Scheme::Http })).map_err(unset)?;
    outgoing.set_authority(Some(&authority)).map_err(unset)?;
    outgoing.set_path_with_query(Some(&path)).map_err(unset)?;
    isyswasfa_guest::call(
        handler::handle_isyswasfa_start(outgoing),
        handler::handle_isyswasfa_result,
    )
    .await
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
