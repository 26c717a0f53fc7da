// The peers of `drover-bench --queue pg`, on the same PostgreSQL and the
// same workload: N no-op jobs pushed one call at a time, then drained
// with 2-way concurrency. One JSON line per run on stdout.
//
//   cd bench/compare/queue && npm install
//   DROVER_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//     node queue_peers.js graphile|graphile-local64|pgboss64|pgboss256 [N]
//
// graphile: graphile-worker with its defaults (concurrency 2);
// graphile-local64: with a local queue of 64 jobs fetched at once;
// pgboss64 / pgboss256: pg-boss, two workers each fetching and completing
// batches of 64 or 256.
"use strict";

const mode = process.argv[2];
const n = Number(process.argv[3] || 20000);
const url =
  process.env.DROVER_BENCH_DATABASE_URL || process.env.DROVER_TEST_DATABASE_URL;
if (!url || !mode) {
  console.error("usage: DROVER_BENCH_DATABASE_URL=... node queue_peers.js MODE [N]");
  process.exit(2);
}

const now = () => Number(process.hrtime.bigint()) / 1e9;

async function graphile(localQueue) {
  const { run, makeWorkerUtils } = require("graphile-worker");
  const schema = `gw_bench_${process.pid}`;
  const utils = await makeWorkerUtils({ connectionString: url, schema });
  await utils.migrate();
  let t = now();
  for (let i = 0; i < n; i++) await utils.addJob("noop", { i });
  const insert = n / (now() - t);
  let done = 0;
  let finish;
  const all = new Promise((resolve) => (finish = resolve));
  t = now();
  const preset = localQueue
    ? { worker: { localQueue: { size: 64 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } }
    : undefined;
  const runner = await run({
    connectionString: url,
    schema,
    concurrency: 2,
    noHandleSignals: true,
    pollInterval: 1000,
    logger: quietLogger(),
    preset,
    taskList: {
      noop: async () => {
        if (++done === n) finish();
      },
    },
  });
  await all;
  // Completions are recorded after the task resolves: wait for the table.
  const pool = new (require("pg").Pool)({ connectionString: url });
  for (;;) {
    const { rows } = await pool.query(`SELECT count(*)::int AS c FROM "${schema}"._private_jobs`);
    if (rows[0].c === 0) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  const drain = n / (now() - t);
  await runner.stop();
  await pool.query(`DROP SCHEMA "${schema}" CASCADE`);
  await pool.end();
  await utils.release();
  return { insert, drain };
}

function quietLogger() {
  const { Logger } = require("graphile-worker");
  return new Logger(() => () => {});
}

async function pgboss(batchSize) {
  const PgBoss = require("pg-boss");
  const schema = `pgboss_bench_${process.pid}`;
  const boss = new PgBoss({ connectionString: url, schema, max: 4 });
  boss.on("error", (e) => console.error(e));
  await boss.start();
  await boss.createQueue("noop");
  let t = now();
  for (let i = 0; i < n; i++) await boss.send("noop", { i });
  const insert = n / (now() - t);
  let done = 0;
  let finish;
  const all = new Promise((resolve) => (finish = resolve));
  t = now();
  // pg-boss 10 waits its polling interval after every fetch unless its
  // worker is notified: a full batch notifies, so a backlog is fetched
  // again at once (as its documentation suggests for throughput).
  const workers = [];
  const handler = async (jobs) => {
    done += jobs.length;
    if (done >= n) setImmediate(finish);
    if (jobs.length === batchSize) for (const id of workers) boss.notifyWorker(id);
  };
  for (let w = 0; w < 2; w++) {
    workers.push(await boss.work("noop", { batchSize, pollingIntervalSeconds: 0.5 }, handler));
  }
  await all;
  // Until every job is recorded completed.
  for (;;) {
    const { rows } = await boss
      .getDb()
      .executeSql(`SELECT count(*)::int AS c FROM "${schema}".job WHERE state <> 'completed'`);
    if (rows[0].c === 0) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  const drain = n / (now() - t);
  await boss.stop({ graceful: false, wait: true });
  const pool = new (require("pg").Pool)({ connectionString: url });
  await pool.query(`DROP SCHEMA "${schema}" CASCADE`);
  await pool.end();
  return { insert, drain };
}

(async () => {
  let result;
  switch (mode) {
    case "graphile": result = await graphile(false); break;
    case "graphile-local64": result = await graphile(true); break;
    case "pgboss64": result = await pgboss(64); break;
    case "pgboss256": result = await pgboss(256); break;
    default:
      console.error(`unknown mode ${mode}`);
      process.exit(2);
  }
  console.log(JSON.stringify({ impl: mode, jobs: n, insert_jobs_per_s: result.insert, drain_jobs_per_s: result.drain }));
  process.exit(0);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
