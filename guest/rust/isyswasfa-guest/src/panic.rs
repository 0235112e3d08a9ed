//! A panic hook that tells the host why the guest is about to trap
//! (`isyswasfa:isyswasfa/trap.set-reason`, so the host's `GuestTrap` carries the message)
//! and writes the message to `wasi:cli/stderr` (on wasm32-unknown-unknown std has
//! nowhere to print it), before `panic = "abort"` traps.

use std::sync::Once;

use crate::bindings::isyswasfa::isyswasfa::trap;
use crate::bindings::wasi::cli::stderr;

static INSTALL: Once = Once::new();

/// Install the hook once; called on every entry from the host (cheap after the first).
pub(crate) fn install_hook() {
    INSTALL.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let reason = info.to_string();
            trap::set_reason(&reason);
            let text = format!("isyswasfa guest panicked: {reason}\n");
            let stream = stderr::get_stderr();
            for chunk in text.as_bytes().chunks(4096) {
                if stream.blocking_write_and_flush(chunk).is_err() {
                    break;
                }
            }
        }));
    });
}
