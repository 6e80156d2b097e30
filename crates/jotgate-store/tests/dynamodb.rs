//! The store contract against a real DynamoDB-compatible server. `scripts/test.sh` starts
//! moto in server mode and sets `JOTGATE_TEST_DYNAMODB` (its endpoint); each test gets a
//! table of its own. `JOTGATE_SKIP_DYNAMODB=1` skips them. moto is an emulator: these
//! tests prove the conditions and transactions, not AWS's latency or throttling.
#![cfg(feature = "dynamodb")]

use std::sync::Arc;

use jotgate_store::contract::dynamodb_test_table;
use jotgate_store::dynamodb::{DynamoConfig, DynamoStore};
use jotgate_store::prelude::*;

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
    // Refused when connecting, before any request needs the table, in words that say what
    // to do; `connect_existing` (jotgate check) says the same, writing nothing.
    let Err(e) = DynamoStore::connect(DynamoConfig::parse(&url).unwrap()).await else {
        panic!("connected to a missing table");
    };
    let e = e.to_string();
    assert!(
        e.contains("does not exist") && e.contains("sam deploy"),
        "{e}"
    );
    assert!(!e.contains("ServiceError"), "{e}");
    let Err(e) = DynamoStore::connect_existing(DynamoConfig::parse(&url).unwrap()).await else {
        panic!("connected to a missing table");
    };
    assert!(e.to_string().contains("does not exist"), "{e}");
    // With create_table, a missing table is a fresh store, and nothing is created.
    let fresh = format!("{url}&create_table=true");
    assert!(
        DynamoStore::connect_existing(DynamoConfig::parse(&fresh).unwrap())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        DynamoStore::connect_existing(DynamoConfig::parse(&url).unwrap())
            .await
            .is_err(),
        "connect_existing created the table"
    );
}
