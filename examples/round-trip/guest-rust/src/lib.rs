//! The round-trip guest in Rust: sleeps 10 ms, calls the host's `foo`, wraps the answer.
//!
//! The same source builds two ways:
//!
//! * on the isyswasfa ABI for WASI 0.2 (the default): `wit-lowered/` is `../wit`
//!   lowered (`python -m trio_isyswasfa lower ../wit -w round-trip -o wit-lowered`;
//!   `trio_isyswasfa.testing.build_rust_guest` writes it);
//! * as a native WASI 0.3 component (`--features wasip3`, stock wit-bindgen's async
//!   support): `wit-p3/` is `../wit` with its dependencies
//!   (`trio_isyswasfa.testing.build_rust_wasip3` writes it).

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
            let value = isyswasfa_guest::call!(baz::foo(&entered)).await;
            format!("{value} - exited guest")
        }
    }
}

isyswasfa_guest::export_component!(Component, isyswasfa_poll_round_trip);
