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
/// ```no_run
/// # async fn run(pool: drover_supervisor::Supervisor) {
/// let report = pool.batch(1..=1000u32).concurrency(32).run().await;
/// println!("{} ok, {} failed in {:?}", report.succeeded, report.failed.len(), report.elapsed);
/// # }
/// ```
#[must_use = "a batch does nothing until it is run"]
pub struct Batch<'a, I> {
    pool: &'a Supervisor,
    jobs: I,
    concurrency: usize,
    on_answer: Option<OnAnswer<'a>>,
}

impl<I> fmt::Debug for Batch<'_, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// What a batch run did.
#[derive(Debug, Default)]
pub struct BatchReport {
    /// Jobs run.
    pub total: usize,
    /// Jobs answered.
    pub succeeded: usize,
    /// Jobs that failed: their position in the batch and why.
    pub failed: Vec<(usize, Error)>,
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

    /// Called with each job's position and outcome as it ends (answers
    /// are not kept in the report).
    pub fn on_answer(mut self, f: impl FnMut(usize, &Result<Response, Error>) + Send + 'a) -> Self {
        self.on_answer = Some(Box::new(f));
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
        } = self;
        let mut events = pool.events();
        let mut report = BatchReport::default();
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
