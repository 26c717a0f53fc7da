//! The pool's state and every change to it.
//!
//! One `std::sync::Mutex` guards [`PoolState`]; every change happens in a
//! short critical section with no `.await` inside, and callers are woken
//! (oneshot replies, events) only after the lock is released. Routing a
//! request is such a critical section, run by the caller of `enqueue` or by
//! the connection task of the worker that just freed a slot, so a request
//! reaches a worker's writer with no hop through a central task.
//!
//! [`PoolState`]'s fields are private to this module (`pub(super)` in
//! `state.rs`, seen by its siblings only): `operate.rs`, `worker.rs` and
//! `supervisor.rs` go through its methods, and metrics read a count of it
//! (`metrics::Gauges`). Some transitions (`submit`, `cancel`, `register`,
//! `worker_ready`, `worker_exited`) are `PoolState` methods that hand back
//! what is left to do once the lock is released (`Settled`), so
//! `tests.rs` drives them without processes; the rest still live in
//! `Shared`'s methods, which lock, change and carry out in one place. A
//! worker's own lifecycle is `lifecycle.rs`'s.
//!
//! - `state.rs`: [`PoolState`] and what it holds (workers, queue, restart
//!   budget), routing and the transitions that are its methods.
//! - `choices.rs`: the choices operations make under the lock (recycle,
//!   resize, reload, drain, resume), and the gauges' count.
//! - `observe.rs`: the counters operators read (`status()`) and the
//!   snapshot made of them.
//! - `shared.rs`: [`Shared`], the lock and what is carried out around it.
//! - `tests.rs`: the state machine driven without processes.

mod choices;
mod observe;
mod shared;
mod state;
#[cfg(test)]
mod tests;

pub(crate) use shared::Shared;
pub(crate) use state::{
    fail_all, Answer, AnswerBatch, Extras, Pending, Phase, PoolState, RssReading,
};
