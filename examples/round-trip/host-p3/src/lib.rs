//! The host's side of the round trip, for `wasmtime run`: `foo` wraps its argument as
//! the Python host in `run.py` does (without its 10 ms sleep).

wit_bindgen::generate!({ path: "wit", world: "host-p3" });

struct Host;

impl exports::example::round_trip::baz::Guest for Host {
    async fn foo(s: String) -> String {
        format!("{s} - entered host - exited host")
    }
}

export!(Host);
