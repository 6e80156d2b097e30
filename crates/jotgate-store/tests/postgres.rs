//! The store contract against a real PostgreSQL server. `scripts/test.sh` starts a
//! throwaway cluster and sets `JOTGATE_TEST_POSTGRES` (an admin URL); each test gets a
//! database of its own. `JOTGATE_SKIP_POSTGRES=1` skips them.
#![cfg(feature = "postgres")]

use std::sync::Arc;

use jotgate_store::postgres::PostgresStore;
use jotgate_store::prelude::*;

use jotgate_store::contract::postgres_test_database as fresh_database;

async fn make() -> Option<Arc<dyn Store>> {
    let url = fresh_database().await?;
    Some(Arc::new(PostgresStore::connect(&url, 8).await.unwrap()))
}

jotgate_store::store_contract_tests!(optional make);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_pools_on_one_database_agree() {
    let Some(url) = fresh_database().await else {
        return;
    };
    // Two pools are two jotgate instances: only the database can serialise them.
    let a: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url, 4).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url, 4).await.unwrap());
    let shown = a.describe();
    assert!(
        shown.starts_with("postgres://postgres@127.0.0.1:"),
        "{shown}"
    );
    jotgate_store::contract::two_handles_agree(a, b).await;
}
