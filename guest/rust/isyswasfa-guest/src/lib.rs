//! async/await for Rust components on the isyswasfa ABI (WASI 0.2 + composable async).
//!
//! A single-threaded executor runs inside the component; the host drives it through
//! the exported `isyswasfa-poll-<suffix>` function (see `docs/abi.md`):
//!
//! * an exported `async fn` runs as a task; if it cannot finish during its
//!   `-isyswasfa-start` call, we call `make-task` and report `pending`
//!   ([`first_poll`], [`get_ready`], or the [`async_exports!`] macro);
//! * awaiting an imported async function ([`call`]) or a `wasi:io/poll.pollable`
//!   ([`wait_pollable`]) emits `listen` and suspends until `ready`; sleeps ([`sleep`],
//!   [`timeout`]) share one timer queue, waited on through a single `subscribe-instant`
//!   pollable for the earliest deadline: one `listen` at a time, however many sleep;
//! * [`spawn`] starts a task that may outlive the call that created it;
//! * cancellation: a host `cancel` drops the export's future, which cancels every
//!   operation it awaits (dropping a pending future sends `cancel`); the export's
//!   `cancel-complete` goes out once all of those confirmed. (A future dropped by a
//!   task that goes on, as [`timeout`] does, is confirmed in the background: `drop`
//!   cannot wait, so the task may finish before the confirmation arrives.)
//!
//! A panic hands its message to the host (`isyswasfa:isyswasfa/trap`: the `GuestTrap`
//! the caller gets carries it) and writes it to `wasi:cli/stderr`, then traps (the
//! instance is dead).
//!
//! Bindings come from stock wit-bindgen: [`generate!`] runs `wit_bindgen::generate!`
//! on the world written by `python -m trio_isyswasfa lower`, mapping the ABI
//! interfaces to this crate's types.
#![deny(unsafe_code)]
#![warn(missing_docs)]

//!
//! **The upgrade path.** With the `wasip3` feature the same app source builds as a
//! native WASI 0.3 component on stock wit-bindgen's async support, for hosts that have
//! it (`wasmtime run -W component-model-async=y -S p3=y`): [`generate!`] then reads the
//! world as written (from `wit-p3/`, not the lowered one), [`async_exports!`] keeps the
//! `async fn`s as they are, [`call!`] calls the import's own `async fn`, and
//! [`export_component!`] exports no poll function; [`sleep`] waits on
//! `wasi:clocks/monotonic-clock@0.3.0`. The rest of the crate (pollables, streams,
//! `spawn`) is for the isyswasfa ABI only.

#[cfg(not(feature = "wasip3"))]
pub mod bindings;
#[cfg(not(feature = "wasip3"))]
mod executor;
pub mod http;
#[cfg(not(feature = "wasip3"))]
mod io;
#[cfg(not(feature = "wasip3"))]
mod panic;
#[cfg(not(feature = "wasip3"))]
mod runtime;
#[cfg(not(feature = "wasip3"))]
pub mod streams;
#[cfg(not(feature = "wasip3"))]
mod timers;
#[cfg(feature = "wasip3")]
mod wasip3;

#[doc(hidden)]
pub use paste as __paste;
#[doc(hidden)]
pub use wit_bindgen;

#[cfg(not(feature = "wasip3"))]
pub use bindings::isyswasfa::isyswasfa::isyswasfa::{Pending, PollInput, PollOutput, Ready};
#[cfg(not(feature = "wasip3"))]
pub use io::{call, sleep, timeout, wait_pollable};
#[cfg(not(feature = "wasip3"))]
pub use runtime::{
    await_ready, first_poll, get_ready, poll, spawn, statistics, ReadyFuture, Statistics,
};
#[cfg(feature = "wasip3")]
pub use wasip3::sleep;

/// `wit_bindgen::generate!` for a lowered world, reusing this crate's bindings of
/// `isyswasfa:isyswasfa/isyswasfa`, `isyswasfa:io/poll`, `wasi:io/poll@0.2.0` and
/// `wasi:clocks/monotonic-clock@0.2.0` (which every lowered world imports): `Pending`,
/// `Ready` and pollables are then one type in the app and here.
///
/// Takes the same options as `wit_bindgen::generate!`, except `with` and `runtime_path`.
///
/// `generate!(streams, { … })` also reuses the crate's `wasi:io/streams@0.2.0` and
/// `wasi:io/error@0.2.0`, so the [`streams`] helpers take the app's streams: for worlds
/// that import them (every `wasi:http` world). (wit-bindgen refuses a `with` entry the
/// world does not use, hence the two forms.)
///
/// With the `wasip3` feature: `wit_bindgen::generate!` on the world as written, read
/// from `wit-p3/` (the app's WIT with its dependencies, which
/// `trio_isyswasfa.testing.build_rust_wasip3` writes) instead of `path`; async
/// functions get stock wit-bindgen's native async bindings. Only the first form.
#[cfg(not(feature = "wasip3"))]
#[macro_export]
macro_rules! generate {
    (streams, { $($opts:tt)* }) => {
        $crate::wit_bindgen::generate!({
            $($opts)*
            runtime_path: "::isyswasfa_guest::wit_bindgen::rt",
            generate_all,
            with: {
                "isyswasfa:isyswasfa/isyswasfa": ::isyswasfa_guest::bindings::isyswasfa::isyswasfa::isyswasfa,
                "isyswasfa:io/poll": ::isyswasfa_guest::bindings::isyswasfa::io::poll,
                "wasi:io/poll@0.2.0": ::isyswasfa_guest::bindings::wasi::io::poll,
                "wasi:io/streams@0.2.0": ::isyswasfa_guest::bindings::wasi::io::streams,
                "wasi:io/error@0.2.0": ::isyswasfa_guest::bindings::wasi::io::error,
                "wasi:clocks/monotonic-clock@0.2.0": ::isyswasfa_guest::bindings::wasi::clocks::monotonic_clock,
            },
        });
    };
    ({ $($opts:tt)* }) => {
        $crate::wit_bindgen::generate!({
            $($opts)*
            runtime_path: "::isyswasfa_guest::wit_bindgen::rt",
            generate_all,
            with: {
                "isyswasfa:isyswasfa/isyswasfa": ::isyswasfa_guest::bindings::isyswasfa::isyswasfa::isyswasfa,
                "isyswasfa:io/poll": ::isyswasfa_guest::bindings::isyswasfa::io::poll,
                "wasi:io/poll@0.2.0": ::isyswasfa_guest::bindings::wasi::io::poll,
                "wasi:clocks/monotonic-clock@0.2.0": ::isyswasfa_guest::bindings::wasi::clocks::monotonic_clock,
            },
        });
    };
}

#[cfg(feature = "wasip3")]
#[macro_export]
#[allow(missing_docs)]
macro_rules! generate {
    ({ path: $path:literal, $($opts:tt)* }) => {
        $crate::wit_bindgen::generate!({
            path: "wit-p3",
            $($opts)*
            runtime_path: "::isyswasfa_guest::wit_bindgen::rt",
            generate_all,
        });
    };
}

/// Implement a generated `Guest` trait from `async fn`s.
///
/// Each `async fn NAME(args) -> T { … }` becomes the lowered pair
/// `NAME_isyswasfa_start(args) -> Result<T, Pending>` (run by [`first_poll`]) and
/// `NAME_isyswasfa_result(ready) -> T` (by [`get_ready`]); other items (the sync
/// functions of the interface) are kept as they are.
///
/// ```ignore
/// isyswasfa_guest::async_exports! {
///     impl exports::example::round_trip::baz::Guest for Component {
///         async fn foo(s: String) -> String {
///             format!("{s}!")
///         }
///     }
/// }
/// ```
///
/// With the `wasip3` feature the `impl` is kept as written: stock wit-bindgen's traits
/// take the `async fn`s themselves.
#[cfg(not(feature = "wasip3"))]
#[macro_export]
macro_rules! async_exports {
    (impl $($trait:ident)::+ for $ty:ty { $($items:tt)* }) => {
        impl $($trait)::+ for $ty {
            $crate::__async_items! { $($items)* }
        }
    };
}

#[cfg(feature = "wasip3")]
#[macro_export]
#[allow(missing_docs)]
macro_rules! async_exports {
    (impl $($trait:ident)::+ for $ty:ty { $($items:tt)* }) => {
        impl $($trait)::+ for $ty { $($items)* }
    };
}

/// Call an imported async function and get its future: `call!(baz::foo(&s)).await`.
///
/// On the isyswasfa ABI this is [`call()`] with the import's lowered pair
/// (`baz::foo_isyswasfa_start(&s)`, `baz::foo_isyswasfa_result`); with the `wasip3`
/// feature, the import's own `async fn` (`baz::foo(s)`, each argument converted with
/// `Into`, since those take strings and lists owned). Dropping the future cancels the
/// call.
#[macro_export]
macro_rules! call {
    (@path [$($path:tt)*] $func:ident ( $($arg:expr),* $(,)? )) => {
        $crate::__call_import!([$($path)*] $func ($($arg),*))
    };
    (@path [$($path:tt)*] $module:ident :: $($rest:tt)+) => {
        $crate::call!(@path [$($path)* $module ::] $($rest)+)
    };
    ($($call:tt)+) => {
        $crate::call!(@path [] $($call)+)
    };
}

#[cfg(not(feature = "wasip3"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __call_import {
    ([$($path:tt)*] $func:ident ($($arg:expr),*)) => {
        $crate::__paste::paste! {
            $crate::call(
                $($path)* [<$func _isyswasfa_start>]($($arg),*),
                $($path)* [<$func _isyswasfa_result>],
            )
        }
    };
}

#[cfg(feature = "wasip3")]
#[doc(hidden)]
#[macro_export]
macro_rules! __call_import {
    ([$($path:tt)*] $func:ident ($($arg:expr),*)) => {
        $($path)* $func($(::core::convert::Into::into($arg)),*)
    };
}

/// Export the component: `export_component!(Component, isyswasfa_poll_round_trip)`.
///
/// On the isyswasfa ABI, implements the world's `Guest` trait with the poll export
/// (named `isyswasfa-poll-<suffix>` in the lowered world) running [`poll`], then calls
/// the bindings' `export!`; with the `wasip3` feature, only `export!` (there is no poll
/// function: the host's component model runs the tasks).
#[cfg(not(feature = "wasip3"))]
#[macro_export]
macro_rules! export_component {
    ($ty:ident, $poll:ident) => {
        impl Guest for $ty {
            fn $poll(
                input: ::std::vec::Vec<$crate::PollInput>,
            ) -> ::std::vec::Vec<$crate::PollOutput> {
                $crate::poll(input)
            }
        }
        export!($ty);
    };
}

#[cfg(feature = "wasip3")]
#[macro_export]
#[allow(missing_docs)]
macro_rules! export_component {
    ($ty:ident, $poll:ident) => {
        export!($ty);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __async_items {
    () => {};
    (
        async fn $name:ident ( $($arg:ident : $argty:ty),* $(,)? ) $(-> $ret:ty)?
            $body:block
        $($rest:tt)*
    ) => {
        $crate::__paste::paste! {
            fn [<$name _isyswasfa_start>]($($arg: $argty),*)
                -> ::core::result::Result<$crate::__ret!($($ret)?), $crate::Pending> {
                $crate::first_poll(async move $body)
            }
            fn [<$name _isyswasfa_result>](ready: $crate::Ready) -> $crate::__ret!($($ret)?) {
                $crate::get_ready(ready)
            }
        }
        $crate::__async_items! { $($rest)* }
    };
    ($item:item $($rest:tt)*) => {
        $item
        $crate::__async_items! { $($rest)* }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __ret {
    () => {
        ()
    };
    ($ret:ty) => {
        $ret
    };
}
