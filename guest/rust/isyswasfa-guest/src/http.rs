//! Helpers for `wasi:http` apps that every HTTP example needed its own copy of.
//!
//! The `wasi:http` types are the app's (its bindings come from its own world), so what
//! builds them is the [`http_helpers!`](crate::http_helpers) macro, expanded in the
//! app; what needs no binding is here.

/// An absolute URL split as an outgoing request sets it: scheme, authority, path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// `https://` (anything else is plain HTTP).
    pub https: bool,
    /// `host[:port]`.
    pub authority: String,
    /// The path and query, `/` at least.
    pub path_with_query: String,
}

/// Split `http://host:port/path?query` (a missing scheme is `http`; a missing path `/`).
pub fn split_url(url: &str) -> Url {
    let (https, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (scheme.eq_ignore_ascii_case("https"), rest),
        None => (false, url),
    };
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(cut);
    let path_with_query = match path {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    };
    Url { https, authority: authority.to_owned(), path_with_query }
}

/// Define, in an app whose world has `wasi:http` and `isyswasfa:io/pipe` (every
/// `wasi:http` world of this project), at its crate root:
///
/// * `empty_body() -> Body`: a body that ends at once;
/// * `status_only(status: u16) -> Response`: an empty response with that status;
/// * `request_to(url: &str, headers: Fields, body: Body) -> Result<Request, ()>`: a
///   request aimed at `url` (see [`split_url`]), `GET` until its method is set; `Err` if
///   the host refused a part of the URL.
///
/// Call it once, after `generate!`; helpers the app does not use are allowed.
#[macro_export]
macro_rules! http_helpers {
    () => {
        #[allow(dead_code)]
        fn empty_body() -> crate::wasi::http::types::Body {
            let (tx, rx) = crate::isyswasfa::io::pipe::make_pipe();
            drop(tx); // the end of the stream, at once
            crate::wasi::http::types::Body::new(rx, None)
        }

        #[allow(dead_code)]
        fn status_only(status: u16) -> crate::wasi::http::types::Response {
            let response = crate::wasi::http::types::Response::new(
                crate::wasi::http::types::Fields::new(),
                empty_body(),
            );
            response.set_status_code(status).expect("a fresh response is mutable");
            response
        }

        #[allow(dead_code)]
        fn request_to(
            url: &str,
            headers: crate::wasi::http::types::Fields,
            body: crate::wasi::http::types::Body,
        ) -> ::core::result::Result<crate::wasi::http::types::Request, ()> {
            use crate::wasi::http::types::{Request, Scheme};
            let url = $crate::http::split_url(url);
            let request = Request::new(headers, body, None);
            request.set_scheme(Some(&if url.https { Scheme::Https } else { Scheme::Http }))?;
            request.set_authority(Some(&url.authority))?;
            request.set_path_with_query(Some(&url.path_with_query))?;
            Ok(request)
        }
    };
}
