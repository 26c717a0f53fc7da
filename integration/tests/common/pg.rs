//! The machine's PostgreSQL for the queue tests: a schema of each test's
//! own, dropped when the test is done.
#![allow(dead_code)]

use drover::queue::PgStore;

/// The database URL from `DROVER_TEST_DATABASE_URL` (set by `.ci/run`),
/// or `None` (the caller skips, saying so) when it is not set.
pub fn url() -> Option<String> {
    match std::env::var("DROVER_TEST_DATABASE_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            eprintln!("DROVER_TEST_DATABASE_URL is not set: skipping the PostgreSQL test");
            None
        }
    }
}

/// A schema named after `name` and this test process, dropped (with its
/// tables) if it exists, so a test starts from nothing.
pub async fn fresh_schema(name: &str) -> Option<Schema> {
    let url = url()?;
    let schema = Schema {
        url,
        name: format!("{name}_{}", std::process::id()),
    };
    schema.drop_tables().await;
    Some(schema)
}

/// A store in a schema of its own.
pub async fn store(name: &str) -> Option<(PgStore, Schema)> {
    let schema = fresh_schema(name).await?;
    let store = PgStore::connect_in_schema(&schema.url, &schema.name)
        .await
        .expect("the test database");
    Some((store, schema))
}

/// A test's schema.
pub struct Schema {
    /// The database.
    pub url: String,
    /// The schema's name.
    pub name: String,
}

impl Schema {
    /// A connection of the test's own, with the schema on its search path.
    pub async fn connect(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.url)
            .await
            .expect("the test database");
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{}\"", self.name))
            .execute(&mut conn)
            .await
            .expect("create the test schema");
        sqlx::query(&format!("SET search_path TO \"{}\"", self.name))
            .execute(&mut conn)
            .await
            .expect("set the search path");
        conn
    }

    async fn drop_tables(&self) {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.url)
            .await
            .expect("the test database");
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name))
            .execute(&mut conn)
            .await
            .expect("drop the test schema");
    }

    /// Drops the schema.
    pub async fn drop_now(self) {
        self.drop_tables().await;
    }
}
