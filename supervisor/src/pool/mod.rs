//! The pool's state and every change to it.
//!
//! One `std::sync::Mutex` guards [`PoolState`]; every change happens in a
//! short critical section with no `.await` inside. Routing a request is
//! such a critical section, run by the caller of `enqueue` or by the
//! connection task of the worker that just freed a slot, so a request
//! reaches a worker's writer with no hop through a central task.
//!
//! Every change is a transition: a `PoolState` method that takes an
//! [`Effects`] and wakes nobody. Frames are queued on the workers'
//! outboxes under the lock, so a worker reads its requests and its stop
//! order in the order the pool decided them; the wake-up each writer is
//! owed, the kills, the callers' answers, the events, the workers to
//! launch and whether to `maintain` wait in the `Effects`, which
//! [`Shared::apply`] carries out once the lock is released
//! ([`Shared::change`] does both). `tests.rs` drives the transitions with
//! no process and checks their effects.
//!
//! [`PoolState`]'s fields are private to this module (`pub(super)` in
//! `state.rs`, seen by its siblings only): `operate.rs`, `worker.rs` and
//! `supervisor.rs` go through its methods, and metrics read a count of it
//! (`metrics::Gauges`). A worker's own lifecycle is `lifecycle.rs`'s.
//!
//! - `state.rs`: [`PoolState`] and what it holds (workers, queue, restart
//!   budget), routing, and the transitions of requests and workers.
//! - `choices.rs`: the transitions operations make (recycle, resize,
//!   reload, drain, resume), and the gauges' count.
//! - `effects.rs`: [`Effects`] and [`Launch`].
//! - `shared.rs`: [`Shared`], the lock and the carrying out.
//! - `tests.rs`: the state machine driven without processes.

mod choices;
mod effects;
mod shared;
mod state;
#[cfg(test)]
mod tests;

pub(crate) use effects::Launch;
pub(crate) use shared::Shared;
pub(crate) use state::{
    fail_all, Answer, AnswerBatch, Extras, Pending, Phase, PoolState, RssReading,
};
