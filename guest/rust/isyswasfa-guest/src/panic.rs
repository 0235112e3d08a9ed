//! A panic hook that writes the message to `wasi:cli/stderr` (on wasm32-unknown-unknown
//! std has nowhere to print it), before `panic = "abort"` traps.

use std::sync::Once;

use crate::bindings::wasi::cli::stderr;

static INSTALL: Once = Once::new();

/// Install the hook once; called on every entry from the host (cheap after the first).
pub(crate) fn install_hook() {
    INSTALL.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let text = format!("isyswasfa guest panicked: {info}\n");
            let stream = stderr::get_stderr();
            for chunk in text.as_bytes().chunks(4096) {
                if stream.blocking_write_and_flush(chunk).is_err() {
                    break;
                }
            }
        }));
    });
}
