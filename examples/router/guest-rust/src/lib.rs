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
use wasi::http::handler;
use wasi::http::types::{ErrorCode, Request, Response};

isyswasfa_guest::http_helpers!();

struct Component;

async fn proxy(request: Request) -> Result<Response, ErrorCode> {
    let Some(url) = request.headers().get("url").into_iter().next() else {
        return Ok(status_only(400));
    };
    let method = request.method();
    let (headers, body) = Request::into_parts(request);
    headers.delete("url").map_err(|err| ErrorCode::InternalError(Some(format!("{err:?}"))))?;
    let invalid = |()| ErrorCode::HttpRequestUriInvalid;
    let outgoing = request_to(&String::from_utf8_lossy(&url), headers, body).map_err(invalid)?;
    outgoing.set_method(&method).map_err(invalid)?;
    isyswasfa_guest::call!(handler::handle(outgoing)).await
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
