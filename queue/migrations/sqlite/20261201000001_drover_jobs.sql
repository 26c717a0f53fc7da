-- drover-queue's first schema, as every version before versioned
-- migrations created it: a store made then is adopted as it is.
CREATE TABLE IF NOT EXISTS drover_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    payload BLOB NOT NULL,
    run_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'ready',
    locked_by TEXT,
    locked_until INTEGER,
    last_error TEXT,
    created_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS drover_jobs_due ON drover_jobs (state, run_at);
