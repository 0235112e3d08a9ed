//! An HTTP guest in Rust whose paths misbehave on purpose, for the server's tests:
//!
//! * `/panic`: panics in `handle`, before any response (the server answers 500);
//! * `/panic-while-streaming`: answers 200 at once; a spawned task writes one line of the
//!   body, then panics (the response is cut off);
//! * anything else: 200 with the body `hello from Rust\n`.

isyswasfa_guest::generate!(streams, {
    path: "wit-lowered",
    world: "rust-http",
});

use isyswasfa::io::pipe::make_pipe;
use wasi::http::types::{Body, ErrorCode, Fields, Request, Response};

struct Component;

fn text_response(text: &'static str) -> Response {
    let (tx, rx) = make_pipe();
    isyswasfa_guest::spawn(async move {
        let _ = isyswasfa_guest::streams::write_all(&tx, text.as_bytes()).await;
    });
    Response::new(Fields::new(), Body::new(rx, None))
}

isyswasfa_guest::async_exports! {
    impl exports::wasi::http::handler::Guest for Component {
        async fn handle(request: Request) -> Result<Response, ErrorCode> {
            match request.path_with_query().as_deref() {
                Some("/panic") => panic!("a bug in the Rust guest"),
                Some("/panic-while-streaming") => {
                    let (tx, rx) = make_pipe();
                    isyswasfa_guest::spawn(async move {
                        let _ = isyswasfa_guest::streams::write_all(&tx, b"first line\n").await;
                        // long enough that the host has the response in hand first, even on a
                        // loaded machine (its timer could fire within the first poll)
                        isyswasfa_guest::sleep(std::time::Duration::from_millis(500)).await;
                        panic!("a bug in the Rust guest, mid-body");
                    });
                    Ok(Response::new(Fields::new(), Body::new(rx, None)))
                }
                _ => Ok(text_response("hello from Rust\n")),
            }
        }
    }
}

impl Guest for Component {
    fn isyswasfa_poll_rust_http(input: Vec<PollInput>) -> Vec<PollOutput> {
        isyswasfa_guest::poll(input)
    }
}

export!(Component);
