//! The isyswasfa protocol, guest side (docs/abi.md §4–5): exports that go pending,
//! awaits of pending handles, cancellation both ways, and the poll export.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::bindings::isyswasfa::isyswasfa::isyswasfa as abi;
use crate::executor::{self, Outcome, TaskId};
use abi::{
    Cancel, Pending, PollInput, PollOutput, PollOutputListen, PollOutputPending, PollOutputReady,
    Ready,
};

/// Frees a `ready` handle that arrived for an await nobody wants any more (for an
/// import: calls its `-isyswasfa-result` and drops the value).
pub(crate) type Discard = Box<dyn FnOnce(Ready)>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Someone awaits it.
    Waiting,
    /// Dropped before `listening` came: send `cancel` when it does.
    Abandoned,
    /// `cancel` sent: `cancel-complete` will follow.
    Cancelling,
}

/// One await of a pending handle (caller side); keyed by its listen-state.
struct Listen {
    mode: Mode,
    cancel: Option<Cancel>,
    ready: Option<Ready>,
    waker: Option<Waker>,
    discard: Option<Discard>,
    owner: Option<TaskId>,
}

/// One exported call that went pending (callee side); keyed by its future-state.
struct Export {
    task: TaskId,
    ready: Option<Ready>,
    cancel: Option<Cancel>,
    value: Option<Outcome>,
}

#[derive(Default)]
struct State {
    listens: HashMap<u32, Listen>,
    exports: HashMap<u32, Export>,
    /// export task -> its future-state
    export_of_task: HashMap<TaskId, u32>,
    /// a task's outcome that finished before it had a future-state (first poll)
    finished_early: HashMap<TaskId, Outcome>,
    /// cancellations of a task's awaits that are not confirmed yet
    unconfirmed: HashMap<TaskId, u32>,
    spawned: u32,
    outputs: Vec<PollOutput>,
    next_listen: u32,
    next_export: u32,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

fn fresh_id<V>(next: &mut u32, in_use: &HashMap<u32, V>) -> u32 {
    loop {
        *next = next.wrapping_add(1).max(1);
        if !in_use.contains_key(next) {
            return *next;
        }
    }
}

/// Counts of live protocol state, for tests and leak checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Statistics {
    /// Awaits of pending handles not settled yet (including cancellations in flight).
    pub listens: usize,
    /// Exported calls that went pending and were not fetched or cancelled yet.
    pub exports: usize,
    /// Spawned tasks still running.
    pub spawned: usize,
    /// Tasks of any kind alive in the executor.
    pub tasks: usize,
    /// Outputs waiting for the next poll call.
    pub buffered_outputs: usize,
}

/// Counts of live protocol state (see [`Statistics`]).
pub fn statistics() -> Statistics {
    with(|s| Statistics {
        listens: s.listens.len(),
        exports: s.exports.len(),
        spawned: s.spawned as usize,
        tasks: executor::len(),
        buffered_outputs: s.outputs.len(),
    })
}

// -- running --------------------------------------------------------------------------

fn run() {
    executor::run_until_stalled(task_done);
}

fn task_done(id: TaskId, outcome: Outcome) {
    with(|s| {
        if let Some(&fid) = s.export_of_task.get(&id) {
            s.export_of_task.remove(&id);
            let record = s.exports.get_mut(&fid).expect("isyswasfa: export record lost");
            let ready = record.ready.take().expect("isyswasfa: export finished twice");
            record.value = Some(outcome);
            s.outputs.push(PollOutput::Ready(PollOutputReady { state: fid, ready }));
        } else if outcome.is::<Spawned>() {
            s.spawned -= 1;
        } else if outcome.is::<crate::timers::DriverDone>() {
            // the sleeps' timer: nobody awaits it
        } else {
            s.finished_early.insert(id, outcome);
        }
        s.unconfirmed.remove(&id);
    });
}

struct Spawned;

/// Start `future` as a task that may outlive the call that spawned it.
///
/// It first runs when the current export call or poll call runs its tasks, then
/// whenever the host delivers its events. It lives as long as the instance.
pub fn spawn(future: impl Future<Output = ()> + 'static) {
    with(|s| s.spawned += 1);
    executor::insert(Box::pin(async move {
        future.await;
        Box::new(Spawned) as Outcome
    }));
}

// -- callee side: exports -------------------------------------------------------------

/// Run an exported call until it blocks: for `<name>-isyswasfa-start` glue.
///
/// Returns `Ok(value)` if it finished; otherwise calls `make-task`, buffers
/// `pending` for the next poll and returns `Err(pending)`.
pub fn first_poll<T: 'static>(future: impl Future<Output = T> + 'static) -> Result<T, Pending> {
    crate::panic::install_hook();
    let id = executor::insert(Box::pin(async move { Box::new(future.await) as Outcome }));
    run();
    if let Some(outcome) = with(|s| s.finished_early.remove(&id)) {
        return Ok(unbox(outcome));
    }
    let (pending, cancel, ready) = abi::make_task();
    with(|s| {
        let fid = fresh_id(&mut s.next_export, &s.exports);
        s.exports.insert(fid, Export { task: id, ready: Some(ready), cancel: None, value: None });
        s.export_of_task.insert(id, fid);
        s.outputs.push(PollOutput::Pending(PollOutputPending { state: fid, cancel }));
    });
    Err(pending)
}

fn unbox<T: 'static>(outcome: Outcome) -> T {
    match outcome.downcast::<T>() {
        Ok(value) => *value,
        Err(_) => panic!("isyswasfa: an export's value has the wrong type"),
    }
}

/// The value of a finished export: for `<name>-isyswasfa-result` glue.
pub fn get_ready<T: 'static>(ready: Ready) -> T {
    let fid = ready.state();
    drop(ready);
    let outcome = with(|s| {
        let record = s.exports.get(&fid);
        if record.map_or(true, |r| r.value.is_none() || r.cancel.is_some()) {
            panic!("isyswasfa: no finished call with state {fid}");
        }
        s.exports.remove(&fid).and_then(|r| r.value)
    });
    unbox(outcome.expect("checked above"))
}

fn cancel_export(fid: u32, cancel: Cancel) {
    let task = with(|s| {
        let record = s
            .exports
            .get_mut(&fid)
            .unwrap_or_else(|| panic!("isyswasfa: cancel for unknown call {fid}"));
        if record.cancel.is_some() {
            panic!("isyswasfa: call {fid} cancelled twice");
        }
        if record.value.is_some() {
            // finished, but the caller gave up before fetching it: discard the value
            s.exports.remove(&fid);
            s.outputs.push(PollOutput::CancelComplete(cancel));
            return None;
        }
        record.cancel = Some(cancel);
        Some(record.task)
    });
    if let Some(task) = task {
        // dropping the future cancels what it awaits; confirm once they all confirmed
        executor::remove(task);
        with(|s| {
            s.export_of_task.remove(&task);
            if !s.unconfirmed.contains_key(&task) {
                confirm_export_cancel(s, fid);
            }
        });
    }
}

fn confirm_export_cancel(s: &mut State, fid: u32) {
    if let Some(mut record) = s.exports.remove(&fid) {
        drop(record.ready.take());
        let cancel = record.cancel.take().expect("isyswasfa: not being cancelled");
        s.outputs.push(PollOutput::CancelComplete(cancel));
    }
}

/// A cancellation of one of `owner`'s awaits was confirmed.
fn settle(s: &mut State, lid: u32) {
    let Some(listen) = s.listens.remove(&lid) else { return };
    let Some(owner) = listen.owner else { return };
    let Some(count) = s.unconfirmed.get_mut(&owner) else { return };
    *count -= 1;
    if *count > 0 {
        return;
    }
    s.unconfirmed.remove(&owner);
    // an export being cancelled waits for this before it confirms
    let fid =
        s.exports.iter().find(|(_, r)| r.task == owner && r.cancel.is_some()).map(|(fid, _)| *fid);
    if let Some(fid) = fid {
        confirm_export_cancel(s, fid);
    }
}

// -- caller side: awaiting pending handles ----------------------------------------------

/// Wait until the host reports `pending` ready, and return the `ready` handle.
///
/// Dropping the future before it finished asks for the operation's cancellation;
/// `discard` then receives a `ready` that arrived too late (to free the callee's value).
pub fn await_ready(pending: Pending, discard: Option<Discard>) -> ReadyFuture {
    let lid = with(|s| {
        let lid = fresh_id(&mut s.next_listen, &s.listens);
        let listen = Listen {
            mode: Mode::Waiting,
            cancel: None,
            ready: None,
            waker: None,
            discard,
            owner: executor::current(),
        };
        s.listens.insert(lid, listen);
        s.outputs.push(PollOutput::Listen(PollOutputListen { state: lid, pending }));
        lid
    });
    ReadyFuture { lid: Some(lid) }
}

/// The future of [`await_ready`].
#[must_use = "a pending operation is cancelled when its future is dropped"]
pub struct ReadyFuture {
    lid: Option<u32>,
}

impl Future for ReadyFuture {
    type Output = Ready;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ready> {
        let lid = self.lid.expect("isyswasfa: ReadyFuture polled after it finished");
        let ready = with(|s| {
            let listen = s.listens.get_mut(&lid).expect("isyswasfa: listen record lost");
            match listen.ready.take() {
                Some(ready) => {
                    s.listens.remove(&lid);
                    Some(ready)
                }
                None => {
                    listen.waker = Some(cx.waker().clone());
                    None
                }
            }
        });
        match ready {
            Some(ready) => {
                self.lid = None;
                Poll::Ready(ready)
            }
            None => Poll::Pending,
        }
    }
}

impl Drop for ReadyFuture {
    fn drop(&mut self) {
        let Some(lid) = self.lid.take() else { return };
        let late = with(|s| {
            let listen = s.listens.get_mut(&lid)?;
            if let Some(ready) = listen.ready.take() {
                // it finished, but nobody will take the value: free it
                let discard = listen.discard.take();
                s.listens.remove(&lid);
                return Some((ready, discard));
            }
            if let Some(owner) = listen.owner {
                *s.unconfirmed.entry(owner).or_insert(0) += 1;
            }
            listen.waker = None;
            match listen.cancel.take() {
                Some(cancel) => {
                    listen.mode = Mode::Cancelling;
                    s.outputs.push(PollOutput::Cancel(cancel));
                }
                None => listen.mode = Mode::Abandoned,
            }
            None
        });
        if let Some((ready, discard)) = late {
            discard_ready(ready, discard);
        }
    }
}

fn discard_ready(ready: Ready, discard: Option<Discard>) {
    match discard {
        Some(discard) => discard(ready),
        None => drop(ready),
    }
}

// -- the poll export ----------------------------------------------------------------

/// Apply the host's events, run everything runnable, return the buffered outputs:
/// the body of the `isyswasfa-poll-<suffix>` export.
pub fn poll(input: Vec<PollInput>) -> Vec<PollOutput> {
    crate::panic::install_hook();
    for event in input {
        match event {
            PollInput::Ready(event) => on_ready(event.state, event.ready),
            PollInput::Listening(event) => {
                let cancel = event.cancel;
                with(|s| {
                    let listen = listen_mut(s, event.state);
                    if listen.mode == Mode::Abandoned {
                        listen.mode = Mode::Cancelling;
                        s.outputs.push(PollOutput::Cancel(cancel));
                    } else {
                        listen.cancel = Some(cancel);
                    }
                });
            }
            PollInput::Cancel(event) => cancel_export(event.state, event.cancel),
            PollInput::CancelComplete(lid) => with(|s| {
                listen_mut(s, lid);
                settle(s, lid);
            }),
        }
    }
    run();
    with(|s| std::mem::take(&mut s.outputs))
}

fn listen_mut(s: &mut State, lid: u32) -> &mut Listen {
    s.listens
        .get_mut(&lid)
        .unwrap_or_else(|| panic!("isyswasfa: event for unknown listen state {lid}"))
}

fn on_ready(lid: u32, ready: Ready) {
    let late = with(|s| {
        let listen = listen_mut(s, lid);
        drop(listen.cancel.take());
        match listen.mode {
            Mode::Waiting => {
                listen.ready = Some(ready);
                if let Some(waker) = listen.waker.take() {
                    waker.wake();
                }
                None
            }
            // cancel-complete still follows
            Mode::Cancelling => Some((ready, listen.discard.take(), false)),
            // finished before it heard of our cancel: nothing more will come
            Mode::Abandoned => Some((ready, listen.discard.take(), true)),
        }
    });
    if let Some((ready, discard, settled)) = late {
        discard_ready(ready, discard);
        if settled {
            with(|s| settle(s, lid));
        }
    }
}
