-- Periodic jobs: a cron expression, the job, and when it next falls due.
-- Runners fire a tick by moving next_run on from the value they read, so
-- however many share the queue, one of them fires each tick.
CREATE TABLE drover_periodic (
    queue TEXT NOT NULL,
    name TEXT NOT NULL,
    cron TEXT NOT NULL,
    payload BLOB,
    args TEXT,
    next_run INTEGER NOT NULL,
    PRIMARY KEY (queue, name));
