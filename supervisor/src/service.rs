//! The pool as a `tower::Service` (feature `tower`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::Serialize;

use crate::error::Error;
use crate::pool::Shared;
use crate::response::Response;
use crate::supervisor::Supervisor;

impl Supervisor {
    /// The pool as a [`tower::Service`](tower_service::Service) of any
    /// serde request, answered with a [`Response`] (feature `tower`), for
    /// composing with tower's layers (timeouts, concurrency limits, load
    /// shedding, retries, ...):
    ///
    /// - **Readiness is capacity**: `poll_ready` is pending while the
    ///   pool's queue is full (`max_queue`), and ready again as soon as it
    ///   has room, so `LoadShed` sheds and `Buffer` waits instead of every
    ///   call failing with [`Error::QueueFull`]. A pool that is not running
    ///   is ready: its calls fail at once, saying why.
    /// - **Errors stay typed**: the error is [`Error`] (behind tower's
    ///   `BoxError`, downcast it).
    /// - **Cancellation reaches the worker**: dropping a call's future (a
    ///   timeout layer firing, a caller leaving) cancels the request, as
    ///   dropping [`enqueue`](Supervisor::enqueue)'s does.
    ///
    /// Readiness is a hint, as everywhere in tower: another handle on the
    /// same pool can fill the queue between `poll_ready` and `call`, and
    /// that call is then refused with `QueueFull`.
    pub fn service(&self) -> PoolService {
        PoolService {
            pool: self.clone(),
            room: None,
        }
    }
}

/// The boxed future of a [`PoolService`] call.
pub type ServiceFuture = Pin<Box<dyn Future<Output = Result<Response, Error>> + Send>>;

/// A [`Supervisor`] as a `tower::Service`; see [`Supervisor::service`].
/// Cheap to clone (each clone waits for room on its own).
pub struct PoolService {
    pool: Supervisor,
    /// Waiting for the queue to have room, once `poll_ready` found it full.
    room: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl PoolService {
    /// The pool underneath.
    pub fn supervisor(&self) -> &Supervisor {
        &self.pool
    }
}

fn has_room(shared: &Shared) -> bool {
    shared.lock().has_room(&shared.config)
}

impl<R: Serialize + Send + 'static> tower_service::Service<R> for PoolService {
    type Response = Response;
    type Error = Error;
    type Future = ServiceFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            if let Some(room) = &mut self.room {
                std::task::ready!(room.as_mut().poll(cx));
                self.room = None;
                return Poll::Ready(Ok(()));
            }
            let shared: Arc<Shared> = self.pool.shared().clone();
            if has_room(&shared) {
                return Poll::Ready(Ok(()));
            }
            // Woken by every change of the pool (answers settle, requests
            // leave the queue), rechecked each time.
            self.room = Some(Box::pin(async move {
                shared
                    .wait_until(|state| state.has_room(&shared.config).then_some(()))
                    .await
            }));
        }
    }

    fn call(&mut self, request: R) -> ServiceFuture {
        let pool = self.pool.clone();
        Box::pin(async move { pool.enqueue(&request).await })
    }
}

impl Clone for PoolService {
    fn clone(&self) -> Self {
        self.pool.service()
    }
}

impl fmt::Debug for PoolService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolService")
            .field("pool", &self.pool)
            .field("waiting_for_room", &self.room.is_some())
            .finish()
    }
}
