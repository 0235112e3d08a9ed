//! Sleeps that share one host timer.
//!
//! A sleep reads the monotonic clock once and queues its deadline here; one task, the
//! driver, waits on a single `subscribe-instant` pollable for the earliest deadline and
//! wakes every sleep that is due when it fires. So N tasks sleeping at once cost the
//! host one clock read each, not a pollable, a pending wait and two handle drops each
//! (what a `wasi:io/poll` sleep per task costs; the Python guest's asyncio loop folds
//! its timers the same way).
//!
//! The driver lives only while sleeps are queued: it re-arms when an earlier deadline
//! comes, and gives its wait up (cancelling it) when the queue empties.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};

use crate::bindings::wasi::clocks::monotonic_clock;
use crate::executor;
use crate::io::wait_pollable;

/// A queued sleep: its deadline (ns) and a number unique among the queued ones.
type Key = (u64, u64);

#[derive(Default)]
struct Timers {
    queue: BTreeMap<Key, Waker>,
    next: u64,
    /// the deadline the driver waits for (`None`: no driver runs)
    armed: Option<u64>,
    driver: Option<Waker>,
}

thread_local! {
    static TIMERS: RefCell<Timers> = RefCell::new(Timers::default());
}

fn with<R>(f: impl FnOnce(&mut Timers) -> R) -> R {
    TIMERS.with(|t| f(&mut t.borrow_mut()))
}

/// What a finished driver task yields.
pub(crate) struct DriverDone;

/// Sleep until the monotonic clock reaches `deadline` (ns).
pub(crate) fn sleep_until(deadline: u64) -> Sleep {
    Sleep { deadline, key: None }
}

/// The future of a sleep; dropping it takes it out of the queue.
#[must_use = "a sleep does nothing unless awaited"]
pub(crate) struct Sleep {
    deadline: u64,
    key: Option<Key>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        let key = self.key;
        let (done, key, wake, start) = with(|t| match key {
            Some(key) => match t.queue.get_mut(&key) {
                Some(waker) => {
                    waker.clone_from(cx.waker());
                    (false, Some(key), None, false)
                }
                None => (true, None, None, false), // the driver took it out: due
            },
            None => {
                let key = (deadline, t.next);
                t.next += 1;
                t.queue.insert(key, cx.waker().clone());
                match t.armed {
                    None => {
                        t.armed = Some(deadline); // a driver starts (below)
                        (false, Some(key), None, true)
                    }
                    // it waits for a later deadline: it re-arms for this one
                    Some(armed) if deadline < armed => (false, Some(key), t.driver.take(), false),
                    Some(_) => (false, Some(key), None, false),
                }
            }
        });
        self.key = key;
        if let Some(waker) = wake {
            waker.wake();
        }
        if start {
            executor::insert(Box::pin(async {
                drive().await;
                Box::new(DriverDone) as executor::Outcome
            }));
        }
        if done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let wake = with(|t| {
            t.queue.remove(&key)?;
            // with none left the driver gives its wait up; else it waits on (at worst
            // it wakes once for nothing, then re-arms)
            if t.queue.is_empty() {
                t.driver.take()
            } else {
                None
            }
        });
        if let Some(waker) = wake {
            waker.wake();
        }
    }
}

/// Wait for the earliest queued deadline, wake the sleeps that are due; again until
/// none is queued.
async fn drive() {
    loop {
        let Some(deadline) = with(|t| {
            let first = t.queue.keys().next().map(|k| k.0);
            t.armed = first;
            first
        }) else {
            return;
        };
        {
            let pollable = monotonic_clock::subscribe_instant(deadline);
            let mut wait = pin!(wait_pollable(&pollable));
            poll_fn(|cx| {
                if wait.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                with(|t| {
                    // re-arm for an earlier deadline, or end with an empty queue
                    let first = t.queue.keys().next().map(|k| k.0);
                    if first.map_or(true, |first| first < deadline) {
                        Poll::Ready(())
                    } else {
                        t.driver = Some(cx.waker().clone());
                        Poll::Pending
                    }
                })
            })
            .await;
            with(|t| t.driver = None);
        } // an unfinished wait is cancelled here
        fire(monotonic_clock::now());
    }
}

/// Take every sleep due at `now` out of the queue and wake it.
fn fire(now: u64) {
    let due: Vec<Waker> = with(|t| {
        let later = t.queue.split_off(&(now.saturating_add(1), 0));
        let due = std::mem::replace(&mut t.queue, later);
        due.into_values().collect()
    });
    for waker in due {
        waker.wake();
    }
}
