-- Unique keys held for a window: the job that took the key and until
-- when a push with it stores nothing, even once that job has finished.
CREATE TABLE drover_unique (
    queue TEXT NOT NULL,
    unique_key TEXT NOT NULL,
    job BIGINT NOT NULL,
    until BIGINT NOT NULL,
    PRIMARY KEY (queue, unique_key));
