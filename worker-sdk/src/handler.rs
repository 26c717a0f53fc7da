//! What a worker runs for each request.

use std::fmt::Display;
use std::future::Future;

use crate::request::Request;

/// Handles one request. Implemented for every
/// `Fn(Request) -> impl Future<Output = Result<(), E>>` where `E: Display`,
/// so a closure or an `async fn` is a handler.
///
/// The handler answers through the [`Request`] (`respond`, `ack`, `fail`).
/// Returning `Err` before answering fails the request with the error's text;
/// a panic fails it too, and the worker stays up.
pub trait Handler: Send + Sync + 'static {
    /// The handler's error; its `Display` text reaches the caller.
    type Error: Display + Send + 'static;
    /// The future handling one request.
    type Future: Future<Output = Result<(), Self::Error>> + Send + 'static;

    /// Starts handling `request`.
    fn call(&self, request: Request) -> Self::Future;
}

impl<F, Fut, E> Handler for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display + Send + 'static,
{
    type Error = E;
    type Future = Fut;

    fn call(&self, request: Request) -> Fut {
        self(request)
    }
}
