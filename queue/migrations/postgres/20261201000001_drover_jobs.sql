-- drover-queue's first schema, as every version before versioned
-- migrations created it: a store made then is adopted as it is.
CREATE TABLE IF NOT EXISTS drover_jobs (
    id BIGSERIAL PRIMARY KEY,
    payload BYTEA NOT NULL,
    run_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'ready',
    locked_by TEXT,
    locked_until BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS drover_jobs_due ON drover_jobs (state, run_at);
