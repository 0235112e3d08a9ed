//! The router guest in Rust: dispatches by path to the components it is composed with.
//!
//! * `/echo`, `/double-echo`: the echo component
//! * `/hash-all`: the hash-all component
//! * `/service`: the service component
//! * `/middleware`: the middleware component (composed in front of the service)
//! * `/proxy`: through the host, to the URL in the `url` header (path and all)
//! * anything else: 405
//!
//! `wit-lowered/` is `../wit` lowered for WASI 0.2 (`python -m trio_isyswasfa lower ../wit
//! -w router -o wit-lowered`; `trio_isyswasfa.testing.build_rust_guest` writes it).

isyswasfa_guest::generate!(streams, {
    path: "wit-lowered",
    world: "router",
});

use example::router::{echo, hash_all, middleware, service};
use isyswasfa::io::pipe::make_pipe;
use wasi::http::handler;
use wasi::http::types::{Body, ErrorCode, Fields, Request, Response, Scheme};

struct Component;

fn status_only(status: u16) -> Response {
    let (tx, rx) = make_pipe();
    drop(tx); // an empty body
    let response = Response::new(Fields::new(), Body::new(rx, None));
    response.set_status_code(status).expect("a fresh response is mutable");
    response
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

async fn proxy(request: Request) -> Result<Response, ErrorCode> {
    let Some(url) = request.headers().get("url").into_iter().next() else {
        return Ok(status_only(400));
    };
    let (https, authority, path) = split_url(&String::from_utf8_lossy(&url));
    let method = request.method();
    let (headers, body) = Request::into_parts(request);
    headers.delete("url").map_err(|err| ErrorCode::InternalError(Some(format!("{err:?}"))))?;
    let outgoing = Request::new(headers, body, None);
    let unset = |()| ErrorCode::InternalError(Some("a fresh request is mutable".to_owned()));
    outgoing.set_method(&method).map_err(unset)?;
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
            let path = request.path_with_query().unwrap_or_else(|| "/".to_owned());
            let route = path.split('?').next().unwrap_or_default();
            let call = isyswasfa_guest::call;
            match route {
                "/echo" | "/double-echo" => {
                    call(echo::handle_isyswasfa_start(request), echo::handle_isyswasfa_result).await
                }
                "/hash-all" => {
                    call(hash_all::handle_isyswasfa_start(request), hash_all::handle_isyswasfa_result)
                        .await
                }
                "/service" => {
                    call(service::handle_isyswasfa_start(request), service::handle_isyswasfa_result)
                        .await
                }
                "/middleware" => {
                    call(
                        middleware::handle_isyswasfa_start(request),
                        middleware::handle_isyswasfa_result,
                    )
                    .await
                }
                "/proxy" => proxy(request).await,
                _ => Ok(status_only(405)),
            }
        }
    }
}

impl Guest for Component {
    fn isyswasfa_poll_router(input: Vec<PollInput>) -> Vec<PollOutput> {
        isyswasfa_guest::poll(input)
    }
}

export!(Component);
