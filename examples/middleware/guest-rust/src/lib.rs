//! The middleware guest in Rust: transparent deflate in front of another handler (the
//! imported one).
//!
//! A request body with `content-encoding: deflate` is inflated on its way in; if the
//! client accepts deflate, the response body is deflated on its way out. Bodies are
//! transformed chunk by chunk in spawned tasks (nothing is buffered), and trailers are
//! passed along.
//!
//! `wit-lowered/` is `../wit` lowered for WASI 0.2 (`python -m trio_isyswasfa lower ../wit
//! -w middleware -o wit-lowered`; `trio_isyswasfa.testing.build_rust_guest` writes it).

isyswasfa_guest::generate!(streams, {
    path: "wit-lowered",
    world: "middleware",
});

use isyswasfa::io::pipe::make_pipe;
use isyswasfa_guest::streams::{read, write_all, OutputStream, CHUNK};
use miniz_oxide::deflate::core::{create_comp_flags_from_zip_params, CompressorOxide};
use miniz_oxide::inflate::stream::InflateState;
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus, MZ_DEFAULT_WINDOW_BITS};
use wasi::http::handler;
use wasi::http::types::{
    make_trailers, Body, ErrorCode, Fields, Request, Response, TrailersSender,
};

struct Component;

/// The content codings listed in header `name` (q=0 ones left out), lower-cased.
fn codings(headers: &Fields, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for value in headers.get(name) {
        let text: String = value.iter().map(|&b| char::from(b)).collect(); // latin-1
        for item in text.split(',') {
            let (coding, params) = item.trim().split_once(';').unwrap_or((item.trim(), ""));
            let params: String = params.chars().filter(|c| *c != ' ').collect();
            if !coding.is_empty() && !matches!(params.as_str(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000")
            {
                out.push(coding.to_ascii_lowercase());
            }
        }
    }
    out
}

/// A zlib-format ("deflate" in HTTP) coder, fed chunk by chunk.
enum Coder {
    Inflate(Box<InflateState>),
    Deflate(Box<CompressorOxide>),
}

impl Coder {
    fn inflater() -> Self {
        Coder::Inflate(InflateState::new_boxed(DataFormat::Zlib))
    }

    fn deflater() -> Self {
        // level 1, as the Python guest's zlib.compressobj(1); a zlib header
        let flags = create_comp_flags_from_zip_params(1, MZ_DEFAULT_WINDOW_BITS, 0);
        Coder::Deflate(Box::new(CompressorOxide::new(flags)))
    }

    /// What `input` turns into now; `finish` ends a deflate stream.
    fn step(&mut self, mut input: &[u8], finish: bool) -> Result<Vec<u8>, MZError> {
        let mut out = Vec::new();
        let mut buf = vec![0; CHUNK as usize];
        loop {
            let result = match self {
                Coder::Inflate(state) => {
                    miniz_oxide::inflate::stream::inflate(state, input, &mut buf, MZFlush::None)
                }
                Coder::Deflate(compressor) => {
                    let flush = if finish { MZFlush::Finish } else { MZFlush::None };
                    miniz_oxide::deflate::stream::deflate(compressor, input, &mut buf, flush)
                }
            };
            input = &input[result.bytes_consumed..];
            out.extend_from_slice(&buf[..result.bytes_written]);
            match result.status {
                Ok(MZStatus::StreamEnd) | Err(MZError::Buf) => return Ok(out),
                Ok(_) => {}
                Err(err) => return Err(err),
            }
            let stuck = result.bytes_consumed == 0 && result.bytes_written == 0;
            let drained = input.is_empty() && result.bytes_written < buf.len();
            if stuck || (drained && !finish) {
                return Ok(out);
            }
        }
    }
}

/// Copy `body` through `coder` into `tx`; `false` if it stopped early (bad data, or the
/// reader left).
async fn pump(body: &Body, tx: &OutputStream, mut coder: Coder) -> bool {
    let Ok(stream) = body.stream() else { return false };
    loop {
        let (chunk, finish) = match read(&stream, CHUNK).await {
            Ok(Some(chunk)) => (chunk, false),
            Ok(None) => (Vec::new(), true),
            Err(_) => return false,
        };
        let Ok(out) = coder.step(&chunk, finish) else { return false };
        if !out.is_empty() && write_all(tx, &out).await.is_err() {
            return false;
        }
        if finish {
            return true;
        }
    }
}

/// A body that is `body` passed through `coder`, in a spawned task.
fn transformed(body: Body, coder: Coder) -> Body {
    let (tx, rx) = make_pipe();
    let (trailers_tx, trailers_rx) = make_trailers();
    isyswasfa_guest::spawn(async move {
        let complete = pump(&body, &tx, coder).await;
        drop(tx); // the end of the transformed stream
        if !complete {
            return; // trailers_tx dropped: the receiver gets none
        }
        let finished =
            isyswasfa_guest::call(Body::finish_isyswasfa_start(body), Body::finish_isyswasfa_result)
                .await;
        if let Ok(Some(trailers)) = finished {
            TrailersSender::send(trailers_tx, trailers);
        }
    });
    Body::new(rx, Some(trailers_rx))
}

fn internal(what: &str) -> impl Fn(()) -> ErrorCode + '_ {
    move |()| ErrorCode::InternalError(Some(what.to_owned()))
}

fn delete(headers: &Fields, name: &str) -> Result<(), ErrorCode> {
    headers
        .delete(name)
        .map_err(|err| ErrorCode::InternalError(Some(format!("cannot delete {name}: {err:?}"))))
}

isyswasfa_guest::async_exports! {
    impl exports::wasi::http::handler::Guest for Component {
        async fn handle(request: Request) -> Result<Response, ErrorCode> {
            let (method, scheme) = (request.method(), request.scheme());
            let (path, authority) = (request.path_with_query(), request.authority());
            let (headers, mut body) = Request::into_parts(request);
            let accepts_deflate = codings(&headers, "accept-encoding").iter().any(|c| c == "deflate");
            if accepts_deflate {
                delete(&headers, "accept-encoding")?;
            }
            if codings(&headers, "content-encoding") == ["deflate"] {
                delete(&headers, "content-encoding")?;
                delete(&headers, "content-length")?;
                body = transformed(body, Coder::inflater());
            }
            let forwarded = Request::new(headers, body, None);
            forwarded.set_method(&method).map_err(internal("set-method"))?;
            forwarded.set_scheme(scheme.as_ref()).map_err(internal("set-scheme"))?;
            forwarded.set_path_with_query(path.as_deref()).map_err(internal("set-path"))?;
            forwarded.set_authority(authority.as_deref()).map_err(internal("set-authority"))?;
            let response = isyswasfa_guest::call(
                handler::handle_isyswasfa_start(forwarded),
                handler::handle_isyswasfa_result,
            )
            .await?;
            if !accepts_deflate {
                return Ok(response);
            }
            let status = response.status_code();
            let (headers, body) = Response::into_parts(response);
            delete(&headers, "content-length")?;
            headers
                .set("content-encoding", &[b"deflate".to_vec()])
                .map_err(|err| ErrorCode::InternalError(Some(format!("{err:?}"))))?;
            let out = Response::new(headers, transformed(body, Coder::deflater()));
            out.set_status_code(status).map_err(internal("set-status-code"))?;
            Ok(out)
        }
    }
}

impl Guest for Component {
    fn isyswasfa_poll_middleware(input: Vec<PollInput>) -> Vec<PollOutput> {
        isyswasfa_guest::poll(input)
    }
}

export!(Component);
