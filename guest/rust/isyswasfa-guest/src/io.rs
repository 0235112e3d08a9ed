//! Awaiting imports and pollables.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use crate::bindings::isyswasfa::io::poll as io_poll;
use crate::bindings::isyswasfa::isyswasfa::isyswasfa::{Pending, Ready};
use crate::bindings::wasi::clocks::monotonic_clock;
use crate::bindings::wasi::io::poll::Pollable;
use crate::runtime::await_ready;
use crate::timers;

/// Wait until a `wasi:io/poll.pollable` is ready, letting other tasks run.
///
/// Dropping the future cancels the wait.
pub async fn wait_pollable(pollable: &Pollable) {
    if let Err(pending) = io_poll::block_isyswasfa_start(pollable) {
        let ready = await_ready(pending, Some(Box::new(io_poll::block_isyswasfa_result))).await;
        io_poll::block_isyswasfa_result(ready);
    }
}

/// Sleep for `duration` on the monotonic clock.
///
/// Sleeps share one host timer (see `timers`): a sleep costs one clock read, however
/// many tasks sleep at once.
pub async fn sleep(duration: Duration) {
    let ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    if ns == 0 {
        return;
    }
    timers::sleep_until(monotonic_clock::now().saturating_add(ns)).await;
}

/// Call a lowered async import: `start` is the outcome of its `-isyswasfa-start`
/// call, `result` its `-isyswasfa-result` function.
///
/// ```ignore
/// let value = isyswasfa_guest::call(baz::foo_isyswasfa_start(&s), baz::foo_isyswasfa_result).await;
/// ```
/// Dropping the future cancels the call; a value that arrives anyway is fetched and dropped.
pub fn call<T: 'static>(
    start: Result<T, Pending>,
    result: fn(Ready) -> T,
) -> impl Future<Output = T> {
    async move {
        match start {
            Ok(value) => value,
            Err(pending) => {
                let discard = Box::new(move |ready: Ready| drop(result(ready)));
                result(await_ready(pending, Some(discard)).await)
            }
        }
    }
}

/// Run `future` for at most `duration`: `None` if the time ran out first, in which
/// case `future` is dropped (cancelling what it awaits).
pub async fn timeout<T>(duration: Duration, future: impl Future<Output = T>) -> Option<T> {
    let mut future = pin!(future);
    let mut timer = pin!(sleep(duration));
    poll_fn(|cx| {
        if let Poll::Ready(value) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(value));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}
