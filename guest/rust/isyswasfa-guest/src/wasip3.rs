//! The crate on a native WASI 0.3 host (the `wasip3` feature): stock wit-bindgen's async
//! support runs the tasks, so only what an app names through this crate is here.

use std::time::Duration;

mod bindings {
    #![allow(unsafe_code, missing_docs, clippy::all)]
    wit_bindgen::generate!({
        path: "wit-wasip3",
        world: "isyswasfa:guest-wasip3/runtime",
        generate_all,
    });
}

/// Sleep for `duration` (`wasi:clocks/monotonic-clock@0.3.0.wait-for`).
pub async fn sleep(duration: Duration) {
    let ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    bindings::wasi::clocks::monotonic_clock::wait_for(ns).await;
}
