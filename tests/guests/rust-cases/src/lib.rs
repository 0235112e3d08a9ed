//! The Rust test guest: one export per behaviour the host's tests check.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

isyswasfa_guest::generate!({
    path: "wit-lowered",
    world: "rust-cases",
});

use self::test::rust_cases::host;

struct Component;

/// Spawned tasks still running, and the waker of the call that waits for them all.
#[derive(Default)]
struct Countdown {
    left: Cell<u32>,
    waiter: RefCell<Option<Waker>>,
}

impl Countdown {
    fn done(&self) {
        self.left.set(self.left.get() - 1);
        if self.left.get() == 0 {
            if let Some(waker) = self.waiter.borrow_mut().take() {
                waker.wake();
            }
        }
    }
}

async fn echo_later(s: &str, ms: u32) -> String {
    isyswasfa_guest::call(host::echo_later_isyswasfa_start(s, ms), host::echo_later_isyswasfa_result)
        .await
}

isyswasfa_guest::async_exports! {
    impl exports::test::rust_cases::cases::Guest for Component {
        fn add(a: u32, b: u32) -> u32 {
            a + b
        }

        async fn immediate(s: String) -> String {
            s.to_uppercase()
        }

        async fn echo_via_host(s: String, ms: u32) -> String {
            echo_later(&s, ms).await
        }

        async fn spawn_then_note(ms: u32) -> String {
            isyswasfa_guest::spawn(async move {
                isyswasfa_guest::sleep(Duration::from_millis(ms.into())).await;
                host::note("spawned task done");
            });
            "returned".to_string()
        }

        async fn sleep_ms(ms: u32) -> u32 {
            isyswasfa_guest::sleep(Duration::from_millis(ms.into())).await;
            ms
        }

        async fn gather_sleeps(n: u32, ms: u32) -> u32 {
            let countdown = Rc::new(Countdown::default());
            countdown.left.set(n);
            for _ in 0..n {
                let countdown = countdown.clone();
                isyswasfa_guest::spawn(async move {
                    isyswasfa_guest::sleep(Duration::from_millis(ms.into())).await;
                    countdown.done();
                });
            }
            poll_fn(|cx| {
                if countdown.left.get() == 0 {
                    return Poll::Ready(n);
                }
                *countdown.waiter.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            })
            .await
        }

        async fn fail(msg: String) -> String {
            isyswasfa_guest::sleep(Duration::from_millis(1)).await;
            panic!("{msg}");
        }

        async fn import_with_timeout(ms: u32) -> String {
            let forever =
                isyswasfa_guest::call(host::forever_isyswasfa_start(), host::forever_isyswasfa_result);
            match isyswasfa_guest::timeout(Duration::from_millis(ms.into()), forever).await {
                Some(value) => value,
                None => "timed out".to_string(),
            }
        }
    }
}

impl Guest for Component {
    fn isyswasfa_poll_rust_cases(input: Vec<PollInput>) -> Vec<PollOutput> {
        isyswasfa_guest::poll(input)
    }
}

export!(Component);
