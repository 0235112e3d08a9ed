//! The round-trip guest in Rust: sleeps 10 ms, calls the host's `foo`, wraps the answer.
//!
//! `wit-lowered/` is `../wit` lowered for WASI 0.2 (`python -m trio_isyswasfa lower ../wit
//! -w round-trip -o wit-lowered`; `trio_isyswasfa.testing.build_rust_guest` writes it).

use std::time::Duration;


isyswasfa_guest::generate!({
    path: "wit-lowered",
    world: "round-trip",
});

use example::round_trip::baz;

struct Component;

isyswasfa_guest::async_exports! {
    impl exports::example::round_trip::baz::Guest for Component {
        async fn foo(s: String) -> String {
            isyswasfa_guest::sleep(Duration::from_millis(10)).await;
            let entered = format!("{s} - entered guest");
            let value = isyswasfa_guest::call(
                baz::foo_isyswasfa_start(&entered),
                baz::foo_isyswasfa_result,
            )
            .await;
            format!("{value} - exited guest")
        }
    }
}

impl Guest for Component {
    fn isyswasfa_poll_round_trip(input: Vec<PollInput>) -> Vec<PollOutput> {
        isyswasfa_guest::poll(input)
    }
}

export!(Component);
