//! Batch runs: many jobs through the pool, one report.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use drover_proto::EVENT_STAT;
use futures::StreamExt;
use serde::Serialize;

use crate::error::Error;
use crate::event::Event;
use crate::response::Response;
use crate::supervisor::Supervisor;

type OnAnswer<'a> = Box<dyn FnMut(usize, &Result<Response, Error>) + Send + 'a>;

/// A batch of jobs to run through a pool, from [`Supervisor::batch`].
///
/// ```
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
/// let report = pool.batch(1..=1000u32).concurrency(32).run().await;
/// println!("{} ok, {} failed in {:?}", report.succeeded, report.failed.len(), report.elapsed);
/// # pool.soft_kill().await;
/// # Ok(()) }
/// ```
#[must_use = "a batch does nothing until it is run"]
pub struct Batch<'a, I> {
    pool: &'a Supervisor,
    jobs: I,
    concurrency: usize,
    on_answer: Option<OnAnswer<'a>>,
    keep_answers: bool,
}

impl<I> fmt::Debug for Batch<'_, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("concurrency", &self.concurrency)
            .field("keep_answers", &self.keep_answers)
            .finish_non_exhaustive()
    }
}

/// What a batch run did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct BatchReport {
    /// Jobs run.
    pub total: usize,
    /// Jobs answered.
    pub succeeded: usize,
    /// Jobs that failed: their position in the batch and why.
    pub failed: Vec<(usize, Error)>,
    /// Only with [`Batch::keep_answers`] (empty otherwise): every job's
    /// answer by its position in the batch, `answers[i]` for job `i`, one
    /// for each job run; `None` for a job that failed (its error is in
    /// `failed`).
    pub answers: Vec<Option<Response>>,
    /// From the first job sent to the last answer.
    pub elapsed: Duration,
    /// Jobs answered by each worker, by pid.
    pub per_worker: BTreeMap<u32, usize>,
    /// The sums of the statistics workers reported during the run
    /// (`Worker::add_stat`), by name.
    pub stats: BTreeMap<String, f64>,
}

impl<'a, I> Batch<'a, I> {
    pub(crate) fn new(pool: &'a Supervisor, jobs: I, concurrency: usize) -> Batch<'a, I> {
        Batch {
            pool,
            jobs,
            concurrency,
            on_answer: None,
            keep_answers: false,
        }
    }
}

impl<'a, I, T> Batch<'a, I>
where
    I: Iterator<Item = T> + Send + 'a,
    T: Serialize + Send + 'a,
{
    /// How many jobs are in flight at once (default: the pool's workers
    /// times their concurrency cap, so the queue stays empty).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Called with each job's position and outcome as it ends (the
    /// report keeps answers only with [`keep_answers`](Batch::keep_answers)).
    pub fn on_answer(mut self, f: impl FnMut(usize, &Result<Response, Error>) + Send + 'a) -> Self {
        self.on_answer = Some(Box::new(f));
        self
    }

    /// Keeps every answer in the report, by position
    /// ([`BatchReport::answers`]). Off by default, since the answers of a
    /// long batch add up: each kept answer is a [`Response`] (under 100
    /// bytes) and its payload, which shares the buffer its worker's
    /// connection read it into, so a batch keeps about as many bytes alive
    /// as its workers answered with, until the report is dropped. For
    /// answers too many to keep, fold them as they come with
    /// [`on_answer`](Batch::on_answer).
    ///
    /// ```
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
    /// let report = pool.batch(["a", "b", "c"]).keep_answers().run().await;
    /// for (i, answer) in report.answers.iter().enumerate() {
    ///     match answer {
    ///         Some(answer) => println!("job {i}: {}", answer.data::<String>()?),
    ///         None => println!("job {i} failed"),
    ///     }
    /// }
    /// # pool.soft_kill().await;
    /// # Ok(()) }
    /// ```
    pub fn keep_answers(mut self) -> Self {
        self.keep_answers = true;
        self
    }

    /// Runs every job, at most `concurrency` at once, and reports.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the jobs in flight; the rest never run.
    pub async fn run(self) -> BatchReport {
        let Batch {
            pool,
            jobs,
            concurrency,
            mut on_answer,
            keep_answers,
        } = self;
        let mut events = pool.events();
        let mut report = BatchReport::default();
        if keep_answers {
            report.answers.reserve(jobs.size_hint().0);
        }
        let started = Instant::now();
        let mut answers = futures::stream::iter(jobs.enumerate())
            .map(|(index, job)| async move { (index, pool.enqueue(&job).await) })
            .buffer_unordered(concurrency);
        loop {
            tokio::select! {
                next = answers.next() => {
                    let Some((index, outcome)) = next else { break };
                    report.total += 1;
                    if let Some(f) = on_answer.as_mut() {
                        f(index, &outcome);
                    }
                    match outcome {
                        Ok(answer) => {
                            report.succeeded += 1;
                            *report.per_worker.entry(answer.pid()).or_default() += 1;
                            if keep_answers {
                                if report.answers.len() <= index {
                                    report.answers.resize(index + 1, None);
                                }
                                report.answers[index] = Some(answer);
                            }
                        }
                        Err(error) => report.failed.push((index, error)),
                    }
                }
                Some(event) = events.recv() => add_stat(&mut report, event),
            }
        }
        report.elapsed = started.elapsed();
        // Statistics sent just before the last answers may still be queued.
        while let Ok(Some(event)) = tokio::time::timeout(Duration::ZERO, events.recv()).await {
            add_stat(&mut report, event);
        }
        report.failed.sort_by_key(|(index, _)| *index);
        if keep_answers {
            // Failed jobs at the end have no entry yet.
            report.answers.resize(report.total, None);
        }
        report
    }
}

fn add_stat(report: &mut BatchReport, event: Event) {
    if let Event::Custom(custom) = event {
        if custom.name == EVENT_STAT {
            if let Ok((name, value)) = custom.data::<(String, f64)>() {
                *report.stats.entry(name).or_default() += value;
            }
        }
    }
}
