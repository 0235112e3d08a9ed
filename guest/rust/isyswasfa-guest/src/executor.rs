//! A single-threaded executor: tasks are boxed futures, woken into a run queue.
//!
//! Nothing here knows the isyswasfa protocol; `runtime` drives it from the poll export.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// A task's identity, unique for the life of the instance.
pub(crate) type TaskId = u32;

/// What a task's future yields when it finishes (an export's value, or `()`).
pub(crate) type Outcome = Box<dyn Any>;

type BoxedTask = Pin<Box<dyn Future<Output = Outcome>>>;

struct TaskWaker {
    id: TaskId,
    queued: AtomicBool,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::Relaxed) {
            RUN_QUEUE.with(|q| q.borrow_mut().push_back(self.id));
        }
    }
}

struct Slot {
    future: Option<BoxedTask>,
    waker: Arc<TaskWaker>,
}

thread_local! {
    static RUN_QUEUE: RefCell<VecDeque<TaskId>> = const { RefCell::new(VecDeque::new()) };
    static TASKS: RefCell<HashMap<TaskId, Slot>> = RefCell::new(HashMap::new());
    static NEXT_ID: Cell<TaskId> = const { Cell::new(1) };
    static CURRENT: Cell<Option<TaskId>> = const { Cell::new(None) };
}

/// Add a task and queue it to run; it first runs at the next [`run_until_stalled`].
pub(crate) fn insert(future: BoxedTask) -> TaskId {
    let id = NEXT_ID.with(|n| {
        let id = n.get();
        n.set(id.wrapping_add(1).max(1));
        id
    });
    let waker = Arc::new(TaskWaker { id, queued: AtomicBool::new(false) });
    waker.wake_by_ref();
    TASKS.with(|t| t.borrow_mut().insert(id, Slot { future: Some(future), waker }));
    id
}

/// The task being polled right now, if any.
pub(crate) fn current() -> Option<TaskId> {
    CURRENT.with(Cell::get)
}

/// Number of live tasks.
pub(crate) fn len() -> usize {
    TASKS.with(|t| t.borrow().len())
}

/// Drop a task's future (cancelling everything it awaits); `false` if it is gone already.
pub(crate) fn remove(id: TaskId) -> bool {
    let slot = TASKS.with(|t| t.borrow_mut().remove(&id));
    match slot {
        // dropped with no borrow held: the futures' destructors call back into the runtime
        Some(slot) => {
            drop(slot);
            true
        }
        None => false,
    }
}

/// Poll one task once; `Some(outcome)` if it finished (it is then removed).
pub(crate) fn poll_task(id: TaskId) -> Option<Outcome> {
    let taken = TASKS.with(|t| {
        let mut tasks = t.borrow_mut();
        let slot = tasks.get_mut(&id)?;
        slot.waker.queued.store(false, Ordering::Relaxed);
        Some((slot.future.take()?, Waker::from(slot.waker.clone())))
    });
    let (mut future, waker) = taken?;
    let outer = CURRENT.with(|c| c.replace(Some(id)));
    let result = future.as_mut().poll(&mut Context::from_waker(&waker));
    CURRENT.with(|c| c.set(outer));
    match result {
        Poll::Ready(outcome) => {
            TASKS.with(|t| t.borrow_mut().remove(&id));
            Some(outcome)
        }
        Poll::Pending => {
            TASKS.with(|t| {
                if let Some(slot) = t.borrow_mut().get_mut(&id) {
                    slot.future = Some(future);
                }
            });
            None
        }
    }
}

/// Run queued tasks until none is runnable; `on_done` receives each finished task.
pub(crate) fn run_until_stalled(mut on_done: impl FnMut(TaskId, Outcome)) {
    while let Some(id) = RUN_QUEUE.with(|q| q.borrow_mut().pop_front()) {
        if let Some(outcome) = poll_task(id) {
            on_done(id, outcome);
        }
    }
}
