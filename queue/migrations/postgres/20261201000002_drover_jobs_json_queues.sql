-- Jobs as JSON (`args`, readable in SQL); a job stored before keeps its
-- bytes in `payload` and runs as before. Named queues, priorities, unique
-- keys; counts of finished jobs; indexes that serve each query alone.
ALTER TABLE drover_jobs ALTER COLUMN payload DROP NOT NULL;
ALTER TABLE drover_jobs ADD COLUMN args JSONB;
ALTER TABLE drover_jobs ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE drover_jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE drover_jobs ADD COLUMN unique_key TEXT;
DROP INDEX IF EXISTS drover_jobs_due;
CREATE INDEX drover_jobs_ready ON drover_jobs (queue, priority DESC, run_at, id) WHERE state = 'ready';
CREATE INDEX drover_jobs_next ON drover_jobs (queue, run_at) WHERE state = 'ready';
CREATE INDEX drover_jobs_leased ON drover_jobs (locked_until) WHERE state = 'running';
CREATE INDEX drover_jobs_running ON drover_jobs (queue) WHERE state = 'running';
CREATE INDEX drover_jobs_dead ON drover_jobs (queue, id) WHERE state = 'dead';
CREATE UNIQUE INDEX drover_jobs_unique ON drover_jobs (queue, unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('ready', 'running');
CREATE TABLE drover_job_counts (
    queue TEXT PRIMARY KEY,
    completed BIGINT NOT NULL DEFAULT 0,
    cancelled BIGINT NOT NULL DEFAULT 0);
