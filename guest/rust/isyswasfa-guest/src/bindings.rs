//! The ABI shim: stock wit-bindgen bindings of the imports the runtime calls.
//!
//! This is the only module allowed `unsafe` (the generated code needs it).
#![allow(unsafe_code, missing_docs, clippy::all)]

wit_bindgen::generate!({
    path: [
        "../../../wit/deps/io",
        "../../../wit/deps/clocks",
        "../../../wit/deps/cli",
        "../../../wit/deps/isyswasfa",
        "../../../wit/deps/isyswasfa-io",
        "wit",
    ],
    world: "isyswasfa:guest/runtime",
    generate_all,
    generate_unused_types: true,
});
