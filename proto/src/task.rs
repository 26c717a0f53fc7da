//! Request types tied to their answer types.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A request type that names the type of its answer, declared once in a
/// crate that the application and its worker binary share.
///
/// With it, a caller writes `pool.call(&Thumbnail { .. })` and gets a
/// `Thumbnail::Output` back without naming it, and a worker built with
/// `serve_tasks` can only answer with that type: a caller and a worker
/// that disagree on the answer no longer compile, where before they
/// failed at run time with a decode error. The untyped API
/// (`enqueue` / `Response::data`, `Request::data` / `respond`) stays for
/// everything else, and both kinds of request can share one pool.
///
/// # Examples
///
/// ```
/// use drover_proto::Task;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Upper(String);
///
/// impl Task for Upper {
///     type Output = String;
/// }
/// ```
pub trait Task: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// What a worker answers to this task.
    type Output: Serialize + DeserializeOwned + Send + 'static;
}
