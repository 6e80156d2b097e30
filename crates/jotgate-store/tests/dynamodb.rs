//! The store contract against a real DynamoDB-compatible server. `scripts/test.sh` starts
//! moto in server mode and sets `JOTGATE_TEST_DYNAMODB` (its endpoint); each test gets a
//! table of its own. `JOTGATE_SKIP_DYNAMODB=1` skips them. moto is an emulator: these
//! tests prove the conditions and transactions, not AWS's latency or throttling.
#![cfg(feature = "dynamodb")]

use std::sync::Arc;

use jotgate_store::Store;
use jotgate_store::contract::dynamodb_test_table;
use jotgate_store::dynamodb::{DynamoConfig, DynamoStore};

async fn open(url: &str) -> Arc<dyn Store> {
    Arc::new(
        DynamoStore::connect(DynamoConfig::parse(url).unwrap())
            .await
            .unwrap(),
    )
}

async fn make() -> Option<Arc<dyn Store>> {
    Some(open(&dynamodb_test_table()?).await)
}

jotgate_store::store_contract_tests!(optional make);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_clients_on_one_table_agree() {
    let Some(url) = dynamodb_test_table() else {
        return;
    };
    // Two clients are two Lambda containers: only the table's conditions serialise them.
    let a = open(&url).await;
    let b = open(&url).await;
    assert!(
        a.describe().starts_with("dynamodb://jt-"),
        "{}",
        a.describe()
    );
    jotgate_store::contract::two_handles_agree(a, b).await;
}

#[tokio::test]
async fn missing_table_is_a_clear_error() {
    let Some(url) = dynamodb_test_table() else {
        return;
    };
    let url = url.replace("&create_table=true", "");
    let s = open(&url).await;
    let e = s.keys().await.unwrap_err().to_string();
    assert!(
        e.contains("ResourceNotFound") || e.contains("not found"),
        "{e}"
    );
}
