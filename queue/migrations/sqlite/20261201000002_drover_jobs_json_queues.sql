-- Jobs as JSON (`args`, readable in SQL); a job stored before keeps its
-- bytes in `payload` and runs as before. Named queues, priorities, unique
-- keys; counts of finished jobs; indexes that serve each query alone.
-- SQLite cannot drop NOT NULL in place: the table is made anew, rows kept.
CREATE TABLE drover_jobs_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    payload BLOB,
    args TEXT,
    run_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'ready',
    locked_by TEXT,
    locked_until INTEGER,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    queue TEXT NOT NULL DEFAULT 'default',
    priority INTEGER NOT NULL DEFAULT 0,
    unique_key TEXT);
INSERT INTO drover_jobs_new (id, payload, run_at, attempts, state, locked_by, locked_until, last_error, created_at)
    SELECT id, payload, run_at, attempts, state, locked_by, locked_until, last_error, created_at FROM drover_jobs;
DROP TABLE drover_jobs;
ALTER TABLE drover_jobs_new RENAME TO drover_jobs;
CREATE INDEX drover_jobs_ready ON drover_jobs (queue, priority DESC, run_at, id) WHERE state = 'ready';
CREATE INDEX drover_jobs_next ON drover_jobs (queue, run_at) WHERE state = 'ready';
CREATE INDEX drover_jobs_leased ON drover_jobs (locked_until) WHERE state = 'running';
CREATE INDEX drover_jobs_running ON drover_jobs (queue) WHERE state = 'running';
CREATE INDEX drover_jobs_dead ON drover_jobs (queue, id) WHERE state = 'dead';
CREATE UNIQUE INDEX drover_jobs_unique ON drover_jobs (queue, unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('ready', 'running');
CREATE TABLE drover_job_counts (
    queue TEXT PRIMARY KEY,
    completed INTEGER NOT NULL DEFAULT 0,
    cancelled INTEGER NOT NULL DEFAULT 0);
