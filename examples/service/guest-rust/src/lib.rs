//! The service guest in Rust: answers with the request's own headers, body and
//! trailers, streamed back as they arrive (the body is handed over, not copied), plus
//! `x-method` and `x-path` headers describing the request.
//!
//! `wit-lowered/` is `../wit` lowered for WASI 0.2 (`python -m trio_isyswasfa lower ../wit
//! -w service -o wit-lowered`; `trio_isyswasfa.testing.build_rust_guest` writes it).

isyswasfa_guest::generate!(streams, {
    path: "wit-lowered",
    world: "service",
});

use wasi::http::types::{ErrorCode, Fields, Method, Request, Response};

struct Component;

fn method_name(method: &Method) -> &str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(name) => name,
    }
}

fn set(headers: &Fields, name: &str, value: &str) -> Result<(), ErrorCode> {
    headers
        .set(name, &[value.as_bytes().to_vec()])
        .map_err(|err| ErrorCode::InternalError(Some(format!("cannot set {name}: {err:?}"))))
}

isyswasfa_guest::async_exports! {
    impl exports::wasi::http::handler::Guest for Component {
        async fn handle(request: Request) -> Result<Response, ErrorCode> {
            let method = request.method();
            let path = request.path_with_query().unwrap_or_else(|| "/".to_owned());
            let (headers, body) = Request::into_parts(request);
            set(&headers, "x-method", method_name(&method))?;
            set(&headers, "x-path", &path)?;
            Ok(Response::new(headers, body))
        }
    }
}

impl Guest for Component {
    fn isyswasfa_poll_service(input: Vec<PollInput>) -> Vec<PollOutput> {
        isyswasfa_guest::poll(input)
    }
}

export!(Component);
