//! The stores' schemas: versioned migrations (`migrations/<database>/`),
//! compiled into the crate and run by sqlx's migrator when a store opens.
//!
//! Versions are never edited once released: a change is a new file. The
//! first version is the schema every release before migrations created
//! (`CREATE ... IF NOT EXISTS`), so a store made by one is adopted as it
//! is, then brought up to date; its jobs are kept (see each file).
//!
//! The migrator records what it applied in `_sqlx_migrations`, in the
//! store's schema (PostgreSQL) or file (SQLite). It ignores versions it
//! does not know there, so an application's own sqlx migrations may share
//! the table; but the application's migrator would find drover's versions
//! unknown to it, so keep the queue in a schema of its own
//! ([`PgStoreBuilder::schema`](crate::PgStoreBuilder::schema)) or a file
//! of its own when both use sqlx's migrator.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use crate::error::QueueError;

/// A database's migrations, as compiled in: version, description, SQL.
type Files = &'static [(i64, &'static str, &'static str)];

#[cfg(feature = "sqlite")]
pub(crate) const SQLITE: Files = &[
    (
        20261201000001,
        "drover jobs",
        include_str!("../migrations/sqlite/20261201000001_drover_jobs.sql"),
    ),
    (
        20261201000002,
        "drover jobs json queues",
        include_str!("../migrations/sqlite/20261201000002_drover_jobs_json_queues.sql"),
    ),
    (
        20261201000003,
        "drover periodic",
        include_str!("../migrations/sqlite/20261201000003_drover_periodic.sql"),
    ),
    (
        20261201000004,
        "drover unique",
        include_str!("../migrations/sqlite/20261201000004_drover_unique.sql"),
    ),
];

#[cfg(feature = "postgres")]
pub(crate) const POSTGRES: Files = &[
    (
        20261201000001,
        "drover jobs",
        include_str!("../migrations/postgres/20261201000001_drover_jobs.sql"),
    ),
    (
        20261201000002,
        "drover jobs json queues",
        include_str!("../migrations/postgres/20261201000002_drover_jobs_json_queues.sql"),
    ),
    (
        20261201000003,
        "drover periodic",
        include_str!("../migrations/postgres/20261201000003_drover_periodic.sql"),
    ),
    (
        20261201000004,
        "drover unique",
        include_str!("../migrations/postgres/20261201000004_drover_unique.sql"),
    ),
];

/// Compiled-in migrations, as sqlx's migrator reads them.
#[derive(Debug)]
struct Embedded(Files);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// The migrator for `files`.
pub(crate) async fn migrator(files: Files) -> Result<Migrator, QueueError> {
    let mut migrator = Migrator::new(Embedded(files))
        .await
        .map_err(|source| QueueError::Migrate { source })?;
    // An application's own migrations may share the history table.
    migrator.set_ignore_missing(true);
    Ok(migrator)
}
