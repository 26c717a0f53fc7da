//! Requests typed by their [`Task`]: the answer's type comes with the
//! request's.

use std::fmt;
use std::marker::PhantomData;

use drover_proto::Task;

use crate::error::Error;
use crate::supervisor::Supervisor;

impl Supervisor {
    /// Sends `task` and decodes its answer as the task's
    /// [`Output`](Task::Output): [`enqueue`](Supervisor::enqueue) and
    /// [`Response::data`](crate::Response::data) in one, with the answer's
    /// type named once, by the task.
    ///
    /// ```
    /// use drover_supervisor::{Supervisor, Task};
    /// use serde::{Deserialize, Serialize};
    ///
    /// // In a crate the application shares with its worker.
    /// #[derive(Serialize, Deserialize)]
    /// struct Upper(String);
    ///
    /// impl Task for Upper {
    ///     type Output = String;
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # // An in-process pool (what `drover::testing` makes) stands in for a
    /// # // worker binary: it upper-cases text and echoes anything else.
    /// # let pool = drover_supervisor::Supervisor::builder("upper")
    /// #     .in_process(|socket| async move {
    /// #         let worker = drover_worker::Worker::connect_over(socket).await.unwrap();
    /// #         let _ = worker
    /// #             .serve(|req: drover_worker::Request| async move {
    /// #                 match req.data::<String>() {
    /// #                     Ok(text) => req.respond(&text.to_uppercase()),
    /// #                     Err(_) => {
    /// #                         let bytes = req.payload_bytes();
    /// #                         req.respond_bytes(bytes)
    /// #                     }
    /// #                 }
    /// #             })
    /// #             .await;
    /// #     })
    /// #     .spawn()
    /// #     .await?;
    /// let shout: String = pool.call(&Upper("hello".into())).await?;
    /// assert_eq!(shout, "HELLO");
    /// # pool.soft_kill().await;
    /// # Ok(()) }
    /// ```
    ///
    /// Asking for an answer of another type than the task's is a compile
    /// error, not a decoding failure at run time:
    ///
    /// ```compile_fail,E0308
    /// use drover_supervisor::{Supervisor, Task};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Upper(String);
    ///
    /// impl Task for Upper {
    ///     type Output = String;
    /// }
    ///
    /// async fn run(pool: Supervisor) -> Result<(), drover_supervisor::Error> {
    ///     let count: u32 = pool.call(&Upper("hello".into())).await?;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`enqueue`](Supervisor::enqueue); [`Error::Decode`] (naming
    /// the type and the worker) when the answer is not a `T::Output`.
    ///
    /// # Cancel safety
    ///
    /// As [`enqueue`](Supervisor::enqueue): dropping the future cancels
    /// the request.
    pub async fn call<T: Task>(&self, task: &T) -> Result<T::Output, Error> {
        self.enqueue(task).await?.data::<T::Output>()
    }

    /// A handle on this pool that sends `T`s only, each answered with a
    /// `T::Output`: for code that should not be able to send the pool
    /// anything else. Cheap to clone; it shares the pool.
    pub fn typed<T: Task>(&self) -> Pool<T> {
        Pool {
            supervisor: self.clone(),
            task: PhantomData,
        }
    }
}

/// A [`Supervisor`] that takes one [`Task`] type and answers with its
/// output; made by [`Supervisor::typed`]. The worker side serves it with
/// `drover::worker::serve_tasks`.
pub struct Pool<T> {
    supervisor: Supervisor,
    task: PhantomData<fn(T) -> T>,
}

impl<T: Task> Pool<T> {
    /// Sends `task`; see [`Supervisor::call`].
    ///
    /// # Errors
    ///
    /// As [`Supervisor::call`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the request.
    pub async fn call(&self, task: &T) -> Result<T::Output, Error> {
        self.supervisor.call(task).await
    }

    /// The untyped pool underneath: health, events, operations.
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }
}

impl<T> Clone for Pool<T> {
    fn clone(&self) -> Self {
        Pool {
            supervisor: self.supervisor.clone(),
            task: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("task", &std::any::type_name::<T>())
            .field("supervisor", &self.supervisor)
            .finish()
    }
}
