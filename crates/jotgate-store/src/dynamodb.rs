//! The DynamoDB backend, for jotgate on AWS Lambda: one table, every item addressed by a
//! string partition key `pk` and sort key `sk` (the layout and the access pattern of each
//! method are in `docs/dynamodb.md`). Every read that a decision depends on is strongly
//! consistent; every rule that must hold across Lambda containers (one username, one
//! rotation per refresh token, one feed position per revocation) is a condition in a
//! conditional write or a `TransactWriteItems`. Expiring items carry the TTL attribute
//! `expires_ttl`, and reads filter on expiry because DynamoDB deletes expired items late.
//!
//! Not for: creating production tables on the request path — the deployment template
//! creates the table; [`DynamoStore::create_table`] is for tests and local emulators.
//!
//! The SDK is used without aws-config: the client comes from [`jotgate_aws::sdk_config`],
//! with credentials from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, as Lambda sets them), so building it makes no network call and
//! start-up stays fast.

use crate::prelude::*;
use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, KeysAndAttributes, Projection, ProjectionType, Put, ReturnValue, ScalarAttributeType,
    TableStatus, TimeToLiveSpecification, TransactWriteItem, Update,
};

use crate::feedpos::{FEED_SETTLE, feed_position, micros_now, settled_horizon};
use crate::{
    ClientRecord, FamilyRef, LoginFailures, NewRefresh, NewUser, Result, Revocation, Rotate,
    RotateOutcome, Store, StoreError, StoredKey, User, UserPatch, UserRecord,
};

type Item = HashMap<String, AttributeValue>;

/// The sparse index that lists users (only user items carry `g1pk`).
const USERS_INDEX: &str = "users_by_created";
/// The TTL attribute (epoch seconds).
const TTL_ATTR: &str = "expires_ttl";
/// Attempts at a transaction that lost a race (condition or transaction conflict).
const MAX_ATTEMPTS: u32 = 12;

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn config(e: impl std::fmt::Display) -> StoreError {
    StoreError::Config(e.to_string())
}

fn sdk<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let text = format!("DynamoDB: {}", DisplayErrorContext(&e));
    let transient = match &e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        // Throttling and DynamoDB's own failures (its 5xx error codes).
        SdkError::ServiceError(_) => [
            "Throttl",
            "ProvisionedThroughputExceeded",
            "RequestLimitExceeded",
            "InternalServerError",
            "ServiceUnavailable",
        ]
        .iter()
        .any(|c| text.contains(c)),
        _ => false,
    };
    if transient {
        StoreError::Unavailable(text)
    } else {
        StoreError::Backend(text)
    }
}

/// Where the table is: parsed from `dynamodb://TABLE?region=R&endpoint=URL&create_table=true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamoConfig {
    pub table: String,
    /// From the URL, else `AWS_REGION` / `AWS_DEFAULT_REGION` (Lambda sets `AWS_REGION`).
    pub region: Option<String>,
    /// A DynamoDB-compatible endpoint (a local emulator); AWS's own endpoint otherwise.
    pub endpoint: Option<String>,
    /// Create the table (with its index and TTL) when it does not exist: for tests and
    /// local emulators, not for production.
    pub create_table: bool,
    /// How long a revocation may take to become readable in the feed (`feed_settle_ms`;
    /// default [`FEED_SETTLE`], 1 s). Raise it for an emulator whose writes take longer
    /// than half of it under load.
    pub feed_settle: Duration,
}

impl DynamoConfig {
    /// Parse a `dynamodb://` URL. Errors name what is wrong, never echo credentials.
    pub fn parse(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("dynamodb://")
            .ok_or_else(|| config("a DynamoDB store URL starts with dynamodb://"))?;
        let (table, query) = rest.split_once('?').unwrap_or((rest, ""));
        let table = table.trim_end_matches('/');
        let valid = (3..=255).contains(&table.len())
            && table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            return Err(config(format!(
                "invalid DynamoDB table name {table:?}: 3 to 255 of a-z, A-Z, 0-9, '_', '-', '.'"
            )));
        }
        let mut cfg = Self {
            table: table.to_string(),
            region: None,
            endpoint: None,
            create_table: false,
            feed_settle: FEED_SETTLE,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "region" if !v.is_empty() => cfg.region = Some(v.to_string()),
                "endpoint" if v.starts_with("http://") || v.starts_with("https://") => {
                    cfg.endpoint = Some(v.to_string())
                }
                "endpoint" => {
                    return Err(config("the DynamoDB endpoint must be an http(s):// URL"));
                }
                "create_table" => {
                    cfg.create_table = match v {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(config("create_table is true or false")),
                    }
                }
                "feed_settle_ms" => {
                    let ms: u64 = v
                        .parse()
                        .ok()
                        .filter(|ms| (100..=60_000).contains(ms))
                        .ok_or_else(|| config("feed_settle_ms is 100 to 60000"))?;
                    cfg.feed_settle = Duration::from_millis(ms);
                }
                _ => {
                    return Err(config(format!(
                        "unknown or empty DynamoDB URL parameter {k:?} (known: region, endpoint, create_table, feed_settle_ms)"
                    )));
                }
            }
        }
        Ok(cfg)
    }
}

/// DynamoDB-backed [`Store`].
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    describe: String,
    /// Set once this process has retired the old feed counter (see `revoke_token`).
    counter_retired: std::sync::Arc<std::sync::atomic::AtomicBool>,
    feed_settle: Duration,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

fn item(pk: impl Into<String>, sk: impl Into<String>, attrs: Vec<(&str, AttributeValue)>) -> Item {
    let mut it = key(pk, sk);
    it.extend(attrs.into_iter().map(|(k, v)| (k.to_string(), v)));
    it
}

fn get_s(it: &Item, name: &str) -> Result<String> {
    match it.get(name) {
        Some(AttributeValue::S(v)) => Ok(v.clone()),
        _ => Err(backend(format!(
            "DynamoDB item lacks string attribute {name}"
        ))),
    }
}

fn get_opt_s(it: &Item, name: &str) -> Option<String> {
    match it.get(name) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    }
}

fn get_opt_n(it: &Item, name: &str) -> Result<Option<i64>> {
    match it.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(v)) => v
            .parse()
            .map(Some)
            .map_err(|_| backend(format!("DynamoDB attribute {name} is not an integer"))),
        Some(_) => Err(backend(format!(
            "DynamoDB attribute {name} is not a number"
        ))),
    }
}

fn get_n(it: &Item, name: &str) -> Result<i64> {
    get_opt_n(it, name)?.ok_or_else(|| backend(format!("DynamoDB item lacks number {name}")))
}

fn user_pk(id: &str) -> String {
    format!("USER#{id}")
}

fn name_pk(key: &str) -> String {
    format!("NAME#{key}")
}

fn user_attrs(u: &NewUser) -> Vec<(&'static str, AttributeValue)> {
    vec![
        ("user_id", s(&u.id)),
        ("username_key", s(&u.username_key)),
        ("username_display", s(&u.username_display)),
        ("password_hash", s(&u.password_hash)),
        (
            "role_list",
            AttributeValue::L(u.roles.iter().map(s).collect()),
        ),
        ("created_at", n(u.created_at)),
    ]
    .into_iter()
    .chain(u.email.as_ref().map(|e| ("email", s(e))))
    .collect()
}

/// The user an item shows (a user item, or its projection in the users index).
fn user_of(it: &Item) -> Result<User> {
    let roles = match it.get("role_list") {
        Some(AttributeValue::L(l)) => l
            .iter()
            .map(|v| match v {
                AttributeValue::S(r) => Ok(r.clone()),
                _ => Err(backend("DynamoDB role_list holds a non-string")),
            })
            .collect::<Result<Vec<_>>>()?,
        _ => Vec::new(),
    };
    let flag = |name: &str| matches!(it.get(name), Some(AttributeValue::Bool(true)));
    let app_metadata = match it.get("app_metadata") {
        Some(AttributeValue::S(m)) => serde_json::from_str(m).map_err(backend)?,
        _ => Default::default(),
    };
    Ok(User {
        id: get_s(it, "user_id")?,
        username: get_s(it, "username_display")?,
        roles,
        created_at: get_n(it, "created_at")?,
        email: get_opt_s(it, "email"),
        email_verified: flag("email_verified"),
        blocked: flag("blocked"),
        app_metadata,
        last_login: get_opt_n(it, "last_login")?,
    })
}

fn user_record(it: &Item) -> Result<UserRecord> {
    Ok(UserRecord {
        user: user_of(it)?,
        username_key: get_s(it, "username_key")?,
        password_hash: get_s(it, "password_hash")?,
        devices_not_before: get_opt_n(it, "devices_nbf")?.unwrap_or(0),
    })
}

/// Why a transaction was cancelled, per item (DynamoDB's `CancellationReason` codes).
enum Txn {
    Done,
    /// The codes, in item order (`"None"` for items that were fine).
    Cancelled(Vec<String>),
}

impl Txn {
    fn failed(codes: &[String], i: usize) -> bool {
        codes.get(i).is_some_and(|c| c == "ConditionalCheckFailed")
    }

    fn lost_race(codes: &[String]) -> bool {
        codes
            .iter()
            .any(|c| c == "ConditionalCheckFailed" || c == "TransactionConflict")
    }
}

fn is_condition_failed<E, R>(e: &SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    matches!(e, SdkError::ServiceError(se) if se.err().code() == Some("ConditionalCheckFailedException"))
}

/// A signing key's item; its DER moves into the item.
fn key_item(mut k: StoredKey) -> Item {
    let inserted = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    let mut attrs = vec![
        ("kid", s(&k.kid)),
        ("key_alg", s(&k.alg)),
        (
            "private_der",
            AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(std::mem::take(
                &mut k.private_der,
            ))),
        ),
        ("created_at", n(k.created_at)),
        ("inserted_at", n(inserted)),
    ];
    if let Some(r) = k.retired_at {
        attrs.push(("retired_at", n(r)));
    }
    item("KEYS", format!("KEY#{}", k.kid), attrs)
}

fn feed_entry(seq: i64, id: &str, expires_at: i64) -> Item {
    item(
        "REVOKED",
        format!("SEQ#{seq:020}"),
        vec![
            ("seq_no", n(seq)),
            ("token_id", s(id)),
            ("expires_at", n(expires_at)),
            (TTL_ATTR, n(expires_at)),
        ],
    )
}

/// Wait a little before retrying a transaction that lost a race (spread the contenders).
async fn backoff(attempt: u32) {
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 8;
    tokio::time::sleep(Duration::from_millis(2 + u64::from(attempt) * 3 + jitter)).await;
}

fn put(table: &str, it: Item, condition: Option<&str>) -> Result<TransactWriteItem> {
    let p = Put::builder()
        .table_name(table)
        .set_item(Some(it))
        .set_condition_expression(condition.map(str::to_string))
        .build()
        .map_err(backend)?;
    Ok(TransactWriteItem::builder().put(p).build())
}

struct Upd<'a> {
    key: Item,
    expr: &'a str,
    condition: Option<&'a str>,
    names: Vec<(&'a str, &'a str)>,
    values: Vec<(&'a str, AttributeValue)>,
}

fn update(table: &str, u: Upd<'_>) -> Result<TransactWriteItem> {
    let mut b = Update::builder()
        .table_name(table)
        .set_key(Some(u.key))
        .update_expression(u.expr)
        .set_condition_expression(u.condition.map(str::to_string));
    for (k, v) in u.names {
        b = b.expression_attribute_names(k, v);
    }
    for (k, v) in u.values {
        b = b.expression_attribute_values(k, v);
    }
    Ok(TransactWriteItem::builder()
        .update(b.build().map_err(backend)?)
        .build())
}

/// A transaction item that deletes `key` (on `condition`, with `values`).
fn delete(
    table: &str,
    key: Item,
    condition: Option<&str>,
    values: Vec<(&str, AttributeValue)>,
) -> Result<TransactWriteItem> {
    let mut b = aws_sdk_dynamodb::types::Delete::builder()
        .table_name(table)
        .set_key(Some(key))
        .set_condition_expression(condition.map(str::to_string));
    for (k, v) in values {
        b = b.expression_attribute_values(k, v);
    }
    Ok(TransactWriteItem::builder()
        .delete(b.build().map_err(backend)?)
        .build())
}

/// A transaction item that writes nothing and holds only if `key` does not exist.
fn absent(table: &str, key: Item) -> Result<TransactWriteItem> {
    let c = aws_sdk_dynamodb::types::ConditionCheck::builder()
        .table_name(table)
        .set_key(Some(key))
        .condition_expression("attribute_not_exists(pk)")
        .build()
        .map_err(backend)?;
    Ok(TransactWriteItem::builder().condition_check(c).build())
}

fn email_pk(email: &str) -> String {
    format!("EMAIL#{email}")
}

impl DynamoStore {
    /// Build the client (no network call) and, when `create_table` is set, create the table
    /// if it is missing.
    pub async fn connect(cfg: DynamoConfig) -> Result<Self> {
        let region = cfg
            .region
            .clone()
            .or_else(jotgate_aws::region_from_env)
            .ok_or_else(|| {
                config("no AWS region: add ?region=… to the dynamodb:// URL or set AWS_REGION")
            })?;
        let conf = jotgate_aws::sdk_config(&region, cfg.endpoint.as_deref())
            .map_err(|e| config(e.to_string()))?;
        let describe = match &cfg.endpoint {
            Some(e) => format!("dynamodb://{}?region={region}&endpoint={e}", cfg.table),
            None => format!("dynamodb://{}?region={region}", cfg.table),
        };
        let store = Self {
            client: Client::new(&conf),
            table: cfg.table.clone(),
            describe,
            counter_retired: Default::default(),
            feed_settle: cfg.feed_settle,
        };
        if cfg.create_table {
            store.create_table().await?;
        } else {
            store.check_table().await?;
        }
        Ok(store)
    }

    /// Build the client and check that the table exists, writing nothing: `None` when it
    /// does not and `create_table` would create it. For `jotgate check`.
    pub async fn connect_existing(mut cfg: DynamoConfig) -> Result<Option<Self>> {
        let create = std::mem::take(&mut cfg.create_table);
        match Self::connect(cfg).await {
            Ok(store) => Ok(Some(store)),
            Err(StoreError::Setup { what, .. }) if create && what.contains("does not exist") => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The table must exist and be ACTIVE; each failure explained for the person starting
    /// jotgate (the SDK's error goes to the debug log).
    pub async fn check_table(&self) -> Result<()> {
        let out = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await;
        let table = &self.table;
        let at = &self.describe;
        match out {
            Ok(o) => {
                let status = o.table.and_then(|t| t.table_status);
                if matches!(
                    status,
                    Some(TableStatus::Active) | Some(TableStatus::Updating)
                ) {
                    Ok(())
                } else {
                    Err(StoreError::Setup {
                        what: format!(
                            "the DynamoDB table {table} is not active ({status:?}) at {at}"
                        ),
                        todo:
                            "wait until it is ACTIVE (aws dynamodb describe-table) and start again"
                                .into(),
                    })
                }
            }
            Err(e) => {
                let text = DisplayErrorContext(&e).to_string();
                tracing::debug!(error = %text, "DescribeTable failed");
                let not_found = matches!(&e, SdkError::ServiceError(s) if s.err().is_resource_not_found_exception());
                // A role from before the template allowed DescribeTable (deploy/aws/
                // template.yaml): start as before, without the start-up check.
                if text.contains("AccessDenied") && text.contains("DescribeTable") {
                    tracing::warn!(
                        table = %table,
                        "this role may not call dynamodb:DescribeTable, so start-up cannot check the table; allow it (deploy/aws/template.yaml) for clear errors"
                    );
                    return Ok(());
                }
                let (what, todo) = if not_found {
                    (
                        format!("the DynamoDB table {table} does not exist ({at})"),
                        "create it with `sam deploy` (deploy/aws/template.yaml; docs/dynamodb.md), or add &create_table=true to the store URL for a local emulator".to_string(),
                    )
                } else if text.contains("credentials") && !text.contains("security token") {
                    (
                        format!("no AWS credentials to reach the DynamoDB table {table} ({at})"),
                        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (Lambda sets them from the function's role); a local emulator takes any dummy pair".to_string(),
                    )
                } else if text.contains("UnrecognizedClient")
                    || text.contains("security token")
                    || text.contains("InvalidSignature")
                    || text.contains("AccessDenied")
                {
                    (
                        format!("AWS refused these credentials for the DynamoDB table {table} ({at})"),
                        "check the access key, its secret and its IAM policy (dynamodb:DescribeTable and the actions in deploy/aws/template.yaml)".to_string(),
                    )
                } else if matches!(&e, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)) {
                    (
                        format!("cannot reach DynamoDB ({at})"),
                        "check the endpoint and region in the store URL, and that the service (or emulator) is running".to_string(),
                    )
                } else {
                    (
                        format!("cannot read the DynamoDB table {table} ({at})"),
                        "run with JOTGATE_LOG=debug for the SDK's full error".to_string(),
                    )
                };
                Err(StoreError::Setup { what, todo })
            }
        }
    }

    /// Create the table, its user-listing index and TTL, unless it exists. Tests and local
    /// emulators use this; production tables come from `deploy/aws/template.yaml`.
    pub async fn create_table(&self) -> Result<()> {
        if self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(backend)
        };
        let schema = |hash: &str, range: &str| -> Result<Vec<KeySchemaElement>> {
            Ok(vec![
                KeySchemaElement::builder()
                    .attribute_name(hash)
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(backend)?,
                KeySchemaElement::builder()
                    .attribute_name(range)
                    .key_type(KeyType::Range)
                    .build()
                    .map_err(backend)?,
            ])
        };
        let index = GlobalSecondaryIndex::builder()
            .index_name(USERS_INDEX)
            .set_key_schema(Some(schema("g1pk", "g1sk")?))
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::Include)
                    .non_key_attributes("user_id")
                    .non_key_attributes("username_display")
                    .non_key_attributes("role_list")
                    .non_key_attributes("created_at")
                    .build(),
            )
            .build()
            .map_err(backend)?;
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .set_attribute_definitions(Some(vec![
                attr("pk")?,
                attr("sk")?,
                attr("g1pk")?,
                attr("g1sk")?,
            ]))
            .set_key_schema(Some(schema("pk", "sk")?))
            .global_secondary_indexes(index)
            .send()
            .await;
        match created {
            Ok(_) => {}
            // Another instance created it first.
            Err(SdkError::ServiceError(e)) if e.err().is_resource_in_use_exception() => {}
            Err(e) => return Err(sdk(e)),
        }
        // DynamoDB creates tables asynchronously (emulators at once): wait until ACTIVE.
        for _ in 0..120 {
            let status = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(sdk)?
                .table
                .and_then(|t| t.table_status);
            if status == Some(TableStatus::Active) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(TTL_ATTR)
                    .build()
                    .map_err(backend)?,
            )
            .send()
            .await
            .map_err(sdk)?;
        Ok(())
    }

    /// After a revocation written at `started`: if it took half the settle time or more,
    /// readers may already have passed its position, so post it again at a fresh one
    /// (entries are idempotent for readers), until one lands in time.
    async fn settle(&self, mut started: i64, id: &str, expires_at: i64) -> Result<()> {
        let half = self.feed_settle.as_micros() as i64 / 2;
        let mut attempt = 0;
        while micros_now() - started >= half {
            attempt += 1;
            if attempt > MAX_ATTEMPTS {
                return Err(backend(
                    "the revocation feed entry kept landing late; try again",
                ));
            }
            started = micros_now();
            if !self
                .move_entry(id, expires_at, feed_position(started))
                .await?
            {
                // The position was taken, or another writer moved it meanwhile: again.
                started = micros_now() - half;
            }
        }
        Ok(())
    }

    /// Move revocation `id`'s feed entry to position `seq` (one entry per revocation, as
    /// on the other stores): delete the old entry, put the new one, point `REVID#` at it.
    /// `false` when the position was taken or the entry moved meanwhile.
    async fn move_entry(&self, id: &str, expires_at: i64, seq: i64) -> Result<bool> {
        let Some(once) = self.get(format!("REVID#{id}"), "REVID").await? else {
            return Err(backend("a revocation without its REVID item"));
        };
        let old = get_n(&once, "seq_no")?;
        let delete = aws_sdk_dynamodb::types::Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key("REVOKED", format!("SEQ#{old:020}"))))
            .build()
            .map_err(backend)?;
        let items = vec![
            TransactWriteItem::builder().delete(delete).build(),
            put(
                &self.table,
                feed_entry(seq, id, expires_at),
                Some("attribute_not_exists(pk)"),
            )?,
            update(
                &self.table,
                Upd {
                    key: key(format!("REVID#{id}"), "REVID"),
                    expr: "SET seq_no = :seq",
                    condition: Some("seq_no = :old"),
                    names: vec![],
                    values: vec![(":seq", n(seq)), (":old", n(old))],
                },
            )?,
        ];
        match self.transact(items).await? {
            Txn::Done => Ok(true),
            Txn::Cancelled(codes) if Txn::lost_race(&codes) => Ok(false),
            Txn::Cancelled(codes) => Err(backend(format!(
                "DynamoDB refused to move a revocation ({})",
                codes.join(", ")
            ))),
        }
    }

    async fn get(&self, pk: String, sk: &str) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk)?;
        Ok(out.item)
    }

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<Txn> {
        let res = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        match res {
            Ok(_) => Ok(Txn::Done),
            Err(SdkError::ServiceError(e)) => match e.err() {
                TransactWriteItemsError::TransactionCanceledException(c) => Ok(Txn::Cancelled(
                    c.cancellation_reasons()
                        .iter()
                        .map(|r| r.code().unwrap_or("None").to_string())
                        .collect(),
                )),
                _ => Err(sdk(SdkError::ServiceError(e))),
            },
            Err(e) => Err(sdk(e)),
        }
    }

    /// Every item a query matches, all pages.
    async fn query_all(&self, q: QueryFluentBuilder) -> Result<Vec<Item>> {
        q.into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(sdk)
    }

    /// The items at `keys` that exist, strongly consistent: `BatchGetItem`, 100 keys at a
    /// time, asking again for keys DynamoDB did not get to.
    async fn batch_get(&self, keys: Vec<Item>) -> Result<Vec<Item>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            let mut request = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(chunk.to_vec()))
                    .consistent_read(true)
                    .build()
                    .map_err(backend)?,
            );
            for attempt in 0..MAX_ATTEMPTS {
                let Some(req) = request.take() else { break };
                let res = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, req)
                    .send()
                    .await
                    .map_err(sdk)?;
                out.extend(
                    res.responses
                        .and_then(|mut r| r.remove(&self.table))
                        .unwrap_or_default(),
                );
                request = res
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                    .filter(|k| !k.keys().is_empty());
                if request.is_some() {
                    backoff(attempt).await;
                }
            }
            if request.is_some() {
                return Err(StoreError::Unavailable(
                    "DynamoDB kept leaving keys of a batch read unprocessed".into(),
                ));
            }
        }
        Ok(out)
    }

    /// Every item of one partition with a sort-key prefix, strongly consistent.
    async fn query_partition(&self, pk: &str, sk_prefix: &str) -> Result<Vec<Item>> {
        let q = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":p", s(sk_prefix));
        self.query_all(q).await
    }

    /// Whether the stored user `u.id` is `u` (a retried insert that landed).
    async fn own_user(&self, u: &NewUser) -> Result<bool> {
        Ok(self
            .get(user_pk(&u.id), "USER")
            .await?
            .is_some_and(|it| get_opt_s(&it, "username_key").as_deref() == Some(&u.username_key)))
    }

    /// Whether refresh token `hash` exists in `family_id` (a retried insert that landed).
    async fn own_refresh(&self, hash: &str, family_id: &str) -> Result<bool> {
        Ok(self
            .get(format!("RT#{hash}"), "RT")
            .await?
            .is_some_and(|it| get_opt_s(&it, "family_id").as_deref() == Some(family_id)))
    }

    /// Set `revoked_at` on a session unless it is already set. `Ok(false)`: it was already
    /// revoked, or there is no such session.
    /// Run `f` on each of `items`, 32 at a time; results in no particular order.
    async fn each_32<T, R, F, Fut>(&self, items: Vec<T>, f: F) -> Result<Vec<R>>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: Fn(Self, T) -> Fut,
        Fut: std::future::Future<Output = Result<R>> + Send + 'static,
    {
        let mut out = Vec::with_capacity(items.len());
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let mut set = tokio::task::JoinSet::new();
            for item in items.by_ref().take(32) {
                set.spawn(f(self.clone(), item));
            }
            while let Some(r) = set.join_next().await {
                out.push(r.map_err(backend)??);
            }
        }
        Ok(out)
    }

    /// Drop an ended session from its user's index.
    async fn forget_session(&self, user_id: &str, family_id: &str) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), format!("FAM#{family_id}"))))
            .send()
            .await
            .map_err(sdk)?;
        Ok(())
    }

    async fn revoke_family_item(&self, family_id: &str, now: i64) -> Result<bool> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("FAM#{family_id}"), "FAM")))
            .update_expression("SET revoked_at = :now")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(revoked_at)")
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk(e)),
        }
    }
}

/// A throttle counter's item: `THROTTLE#<key>` / `THROTTLE`, or for a grouped key
/// (`group#member`) `THROTTLE#<group>` / `M#<member>`, so one Query lists a group.
fn key_for_throttle(k: &str) -> Item {
    match k.split_once(crate::THROTTLE_GROUP_SEP) {
        Some((group, member)) => key(format!("THROTTLE#{group}"), format!("M#{member}")),
        None => key(format!("THROTTLE#{k}"), "THROTTLE"),
    }
}

/// The throttle key an item holds (the inverse of [`key_for_throttle`]).
fn throttle_key_of(it: &Item) -> Result<Option<String>> {
    let pk = get_s(it, "pk")?;
    let Some(k) = pk.strip_prefix("THROTTLE#") else {
        return Ok(None);
    };
    let sk = get_s(it, "sk")?;
    Ok(Some(match sk.strip_prefix("M#") {
        Some(member) => format!("{k}{}{member}", crate::THROTTLE_GROUP_SEP),
        None => k.to_string(),
    }))
}

fn failures_of(key: &str, it: &Item) -> Result<LoginFailures> {
    Ok(LoginFailures {
        key: key.to_string(),
        count: u32::try_from(get_n(it, "failure_count")?).unwrap_or(0),
        last_ms: get_n(it, "last_failure_ms")?,
    })
}

fn stored_key(it: &Item) -> Result<(StoredKey, i64)> {
    let der = match it.get("private_der") {
        Some(AttributeValue::B(b)) => b.clone().into_inner(),
        _ => return Err(backend("DynamoDB key item lacks private_der")),
    };
    Ok((
        StoredKey {
            kid: get_s(it, "kid")?,
            alg: get_s(it, "key_alg")?,
            private_der: der,
            created_at: get_n(it, "created_at")?,
            retired_at: get_opt_n(it, "retired_at")?,
        },
        get_n(it, "inserted_at")?,
    ))
}

#[async_trait]
impl Store for DynamoStore {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn feed_settle(&self) -> Duration {
        self.feed_settle
    }

    async fn shared_secret(&self, name: &str) -> Result<String> {
        // One item per secret, written once: of two instances asking first, one write
        // wins and both read it back.
        let sk = format!("SECRET#{name}");
        // Read first: made only when missing (the first draw from aws-lc's generator seeds
        // it, ~30 ms of a cold start; and a refused write costs capacity all the same).
        if let Some(it) = self.get("META".into(), &sk).await? {
            return get_s(&it, "secret");
        }
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some({
                let mut it = key("META", &sk);
                it.insert("secret".into(), s(jotgate_core::random::token(32)));
                it
            }))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match res {
            Ok(_) => {}
            Err(e) if is_condition_failed(&e) => {}
            Err(e) => return Err(sdk(e)),
        }
        match self.get("META".into(), &sk).await? {
            Some(it) => get_s(&it, "secret"),
            None => Err(backend("DynamoDB lost a secret it just wrote")),
        }
    }

    async fn store_id(&self, create: bool) -> Result<Option<String>> {
        // One item, written once: of two instances asking first, one write wins and both
        // read it back.
        if create {
            let res = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some({
                    let mut it = key("META", "STORE");
                    it.insert("store_id".into(), s(uuid::Uuid::new_v4().to_string()));
                    it
                }))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await;
            match res {
                Ok(_) => {}
                Err(e) if is_condition_failed(&e) => {}
                Err(e) => return Err(sdk(e)),
            }
        }
        match self.get("META".into(), "STORE").await? {
            None => Ok(None),
            Some(it) => match it.get("store_id") {
                Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
                _ => Err(backend("DynamoDB store id item lacks store_id")),
            },
        }
    }
}

#[async_trait]
impl Users for DynamoStore {
    async fn create_user(&self, user: NewUser) -> Result<User> {
        let mut by_id = item(user_pk(&user.id), "USER", user_attrs(&user));
        by_id.insert("g1pk".into(), s("USERS"));
        by_id.insert(
            "g1sk".into(),
            s(format!("{:020}#{}", user.created_at, user.username_key)),
        );
        let by_name = item(name_pk(&user.username_key), "NAME", user_attrs(&user));
        let cond = Some("attribute_not_exists(pk)");
        let mut items = vec![
            put(&self.table, by_id, cond)?,
            put(&self.table, by_name, cond)?,
        ];
        if let Some(email) = &user.email {
            // The address is an item of its own, so that it is unique; and it must not be
            // an account's username (usernames made before addresses could hold '@').
            items.push(put(
                &self.table,
                item(email_pk(email), "EMAIL", vec![("user_id", s(&user.id))]),
                cond,
            )?);
            items.push(absent(&self.table, key(name_pk(email), "NAME"))?);
        }
        let txn = self.transact(items).await?;
        match txn {
            Txn::Done => {}
            // Both items exist: the name is taken — or our own attempt committed though its
            // answer was lost (an SDK retry after a timeout), and the id item is ours.
            Txn::Cancelled(codes)
                if Txn::failed(&codes, 0)
                    && Txn::failed(&codes, 1)
                    && self.own_user(&user).await? => {}
            Txn::Cancelled(codes) if Txn::failed(&codes, 1) => {
                return Err(StoreError::Conflict("username"));
            }
            Txn::Cancelled(codes) if Txn::failed(&codes, 0) => {
                return Err(StoreError::Conflict("user id"));
            }
            Txn::Cancelled(codes) if Txn::failed(&codes, 2) || Txn::failed(&codes, 3) => {
                return Err(StoreError::Conflict("email"));
            }
            Txn::Cancelled(codes) => {
                return Err(backend(format!(
                    "DynamoDB refused the new user ({})",
                    codes.join(", ")
                )));
            }
        }
        Ok(User::new(&user))
    }

    async fn user_by_key(&self, username_key: &str) -> Result<Option<UserRecord>> {
        self.get(name_pk(username_key), "NAME")
            .await?
            .as_ref()
            .map(user_record)
            .transpose()
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        Ok(self
            .get(user_pk(id), "USER")
            .await?
            .as_ref()
            .map(user_record)
            .transpose()?
            .map(|r| r.user))
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        // The index says who (in order of creation); it is eventually consistent, so a user
        // created a moment ago may be missing for a moment. What each user is now comes
        // from their item: the index projects only what the first release had.
        let q = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(USERS_INDEX)
            .key_condition_expression("g1pk = :u")
            .expression_attribute_values(":u", s("USERS"));
        let ids: Vec<String> = self
            .query_all(q)
            .await?
            .iter()
            .map(|it| get_s(it, "user_id"))
            .collect::<Result<_>>()?;
        let items = self
            .batch_get(ids.iter().map(|id| key(user_pk(id), "USER")).collect())
            .await?;
        let mut by_id: HashMap<String, User> = items
            .iter()
            .map(|it| user_of(it).map(|u| (u.id.clone(), u)))
            .collect::<Result<_>>()?;
        // In the index's order; a user deleted since is left out.
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    async fn revoke_devices(&self, user_id: &str, at: i64) -> Result<()> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(rec) = self.get(user_pk(user_id), "USER").await? else {
                return Ok(());
            };
            let username_key = get_s(&rec, "username_key")?;
            // Both copies (login reads the name's); only ever later: a revocation that
            // lost the race to a later one is already covered by it.
            let upd = |k: Item| Upd {
                key: k,
                expr: "SET devices_nbf = :t",
                condition: Some(
                    "attribute_exists(pk) AND (attribute_not_exists(devices_nbf) OR devices_nbf < :t)",
                ),
                names: vec![],
                values: vec![(":t", n(at))],
            };
            let txn = self
                .transact(vec![
                    update(&self.table, upd(key(user_pk(user_id), "USER")))?,
                    update(&self.table, upd(key(name_pk(&username_key), "NAME")))?,
                ])
                .await?;
            match txn {
                Txn::Done => return Ok(()),
                // Another write to the user at the same moment (a login's last_login):
                // again.
                Txn::Cancelled(codes) if codes.iter().any(|c| c == "TransactionConflict") => {
                    continue;
                }
                // Gone, or revoked at this instant or later already.
                Txn::Cancelled(codes)
                    if codes
                        .iter()
                        .all(|c| c == "ConditionalCheckFailed" || c == "None") =>
                {
                    return Ok(());
                }
                Txn::Cancelled(codes) => {
                    return Err(backend(format!(
                        "DynamoDB refused the device revocation ({})",
                        codes.join(", ")
                    )));
                }
            }
        }
        Err(StoreError::Unavailable(
            "DynamoDB: the device revocation kept conflicting with other writes".into(),
        ))
    }

    async fn set_password_hash(&self, user_id: &str, password_hash: &str) -> Result<()> {
        let Some(rec) = self.get(user_pk(user_id), "USER").await? else {
            return Err(StoreError::NotFound("user"));
        };
        let username_key = get_s(&rec, "username_key")?;
        let upd = |k: Item| Upd {
            key: k,
            expr: "SET password_hash = :h",
            condition: Some("attribute_exists(pk)"),
            names: vec![],
            values: vec![(":h", s(password_hash))],
        };
        let txn = self
            .transact(vec![
                update(&self.table, upd(key(user_pk(user_id), "USER")))?,
                update(&self.table, upd(key(name_pk(&username_key), "NAME")))?,
            ])
            .await?;
        match txn {
            Txn::Done => Ok(()),
            Txn::Cancelled(codes) if Txn::failed(&codes, 0) => Err(StoreError::NotFound("user")),
            Txn::Cancelled(codes) => Err(backend(format!(
                "DynamoDB refused the password change ({})",
                codes.join(", ")
            ))),
        }
    }

    async fn set_user_roles(&self, user_id: &str, roles: Vec<String>) -> Result<Vec<String>> {
        let list = AttributeValue::L(roles.iter().map(s).collect());
        for _ in 0..MAX_ATTEMPTS {
            let Some(rec) = self.get(user_pk(user_id), "USER").await? else {
                return Err(StoreError::NotFound("user"));
            };
            let before = user_of(&rec)?.roles;
            let old = rec
                .get("role_list")
                .cloned()
                .unwrap_or(AttributeValue::L(Vec::new()));
            let username_key = get_s(&rec, "username_key")?;
            // Both copies, on condition that the roles are still those read: of two changes
            // at once one wins, and the other reads again and reports what it replaced.
            let upd = |k: Item| Upd {
                key: k,
                expr: "SET role_list = :r",
                condition: Some("role_list = :old"),
                names: vec![],
                values: vec![(":r", list.clone()), (":old", old.clone())],
            };
            let txn = self
                .transact(vec![
                    update(&self.table, upd(key(user_pk(user_id), "USER")))?,
                    update(&self.table, upd(key(name_pk(&username_key), "NAME")))?,
                ])
                .await?;
            match txn {
                Txn::Done => return Ok(before),
                Txn::Cancelled(codes) if Txn::lost_race(&codes) => continue,
                Txn::Cancelled(codes) => {
                    return Err(backend(format!(
                        "DynamoDB refused the role change ({})",
                        codes.join(", ")
                    )));
                }
            }
        }
        Err(StoreError::Unavailable(
            "DynamoDB: the user's roles kept changing; try again".into(),
        ))
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>> {
        let Some(it) = self.get(email_pk(email), "EMAIL").await? else {
            return Ok(None);
        };
        let id = get_s(&it, "user_id")?;
        self.get(user_pk(&id), "USER")
            .await?
            .as_ref()
            .map(user_record)
            .transpose()
    }

    async fn update_user(&self, user_id: &str, patch: UserPatch) -> Result<(User, User)> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(rec) = self.get(user_pk(user_id), "USER").await? else {
                return Err(StoreError::NotFound("user"));
            };
            let before = user_of(&rec)?;
            let after = patch.apply(&before);
            let username_key = get_s(&rec, "username_key")?;
            // Optimistic: on condition that the item is still the version read.
            let version = get_opt_n(&rec, "user_ver")?.unwrap_or(0);
            let meta = serde_json::to_string(&after.app_metadata).map_err(backend)?;
            let expr = if after.email.is_some() {
                "SET email_verified = :v, blocked = :b, app_metadata = :m, user_ver = :nv, email = :e"
            } else {
                "SET email_verified = :v, blocked = :b, app_metadata = :m, user_ver = :nv REMOVE email"
            };
            let mut values = vec![
                (":v", AttributeValue::Bool(after.email_verified)),
                (":b", AttributeValue::Bool(after.blocked)),
                (":m", s(&meta)),
                (":nv", n(version + 1)),
            ];
            if let Some(e) = &after.email {
                values.push((":e", s(e)));
            }
            let mut by_id_values = values.clone();
            by_id_values.push((":ov", n(version)));
            let mut items = vec![
                update(
                    &self.table,
                    Upd {
                        key: key(user_pk(user_id), "USER"),
                        expr,
                        condition: Some("attribute_not_exists(user_ver) OR user_ver = :ov"),
                        names: vec![],
                        values: by_id_values,
                    },
                )?,
                update(
                    &self.table,
                    Upd {
                        key: key(name_pk(&username_key), "NAME"),
                        expr,
                        condition: Some("attribute_exists(pk)"),
                        names: vec![],
                        values,
                    },
                )?,
            ];
            let email_changed = after.email != before.email;
            if email_changed {
                if let Some(new) = &after.email {
                    items.push(put(
                        &self.table,
                        item(email_pk(new), "EMAIL", vec![("user_id", s(user_id))]),
                        Some("attribute_not_exists(pk)"),
                    )?);
                    // (Its own name item is updated above: one operation per item.)
                    if *new != username_key {
                        items.push(absent(&self.table, key(name_pk(new), "NAME"))?);
                    }
                }
                if let Some(old) = &before.email {
                    items.push(delete(
                        &self.table,
                        key(email_pk(old), "EMAIL"),
                        Some("user_id = :me"),
                        vec![(":me", s(user_id))],
                    )?);
                }
            }
            match self.transact(items).await? {
                Txn::Done => return Ok((before, after)),
                Txn::Cancelled(codes)
                    if email_changed
                        && after.email.is_some()
                        && (Txn::failed(&codes, 2) || Txn::failed(&codes, 3)) =>
                {
                    return Err(StoreError::Conflict("email"));
                }
                Txn::Cancelled(codes) if Txn::lost_race(&codes) => continue,
                Txn::Cancelled(codes) => {
                    return Err(backend(format!(
                        "DynamoDB refused the user change ({})",
                        codes.join(", ")
                    )));
                }
            }
        }
        Err(StoreError::Unavailable(
            "DynamoDB: the user kept changing; try again".into(),
        ))
    }

    async fn record_login(&self, user_id: &str, at: i64) -> Result<()> {
        // On the id item only (what user_by_id and the users index show); a missing user
        // is not recreated.
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user_id), "USER")))
            .update_expression("SET last_login = :t")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":t", n(at))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(sdk(e)),
        }
    }

    async fn delete_user(&self, user_id: &str) -> Result<Option<User>> {
        let Some(rec) = self.get(user_pk(user_id), "USER").await? else {
            return Ok(None);
        };
        let user = user_of(&rec)?;
        let username_key = get_s(&rec, "username_key")?;
        // Its sessions' items expire by TTL; a refresh finds no user and is refused.
        let mut items = vec![
            delete(&self.table, key(user_pk(user_id), "USER"), None, vec![])?,
            delete(
                &self.table,
                key(name_pk(&username_key), "NAME"),
                None,
                vec![],
            )?,
        ];
        if let Some(e) = &user.email {
            items.push(delete(
                &self.table,
                key(email_pk(e), "EMAIL"),
                Some("user_id = :me"),
                vec![(":me", s(user_id))],
            )?);
        }
        match self.transact(items).await? {
            Txn::Done => Ok(Some(user)),
            Txn::Cancelled(codes) => Err(backend(format!(
                "DynamoDB refused the user's deletion ({})",
                codes.join(", ")
            ))),
        }
    }
}

fn role_key(name: &str) -> Item {
    key("ROLES", format!("ROLE#{name}"))
}

fn role_of(it: &Item) -> Result<crate::Role> {
    let scopes = match it.get("scope_list") {
        Some(AttributeValue::L(l)) => l
            .iter()
            .map(|v| match v {
                AttributeValue::S(r) => Ok(r.clone()),
                _ => Err(backend("DynamoDB scope_list holds a non-string")),
            })
            .collect::<Result<Vec<_>>>()?,
        _ => Vec::new(),
    };
    Ok(crate::Role {
        name: get_s(it, "role_name")?,
        scopes,
        updated_at: get_n(it, "updated_at")?,
    })
}

#[async_trait]
impl Roles for DynamoStore {
    async fn put_role(&self, role: crate::Role) -> Result<Option<crate::Role>> {
        let it = item(
            "ROLES",
            format!("ROLE#{}", role.name),
            vec![
                ("role_name", s(&role.name)),
                (
                    "scope_list",
                    AttributeValue::L(role.scopes.iter().map(s).collect()),
                ),
                ("updated_at", n(role.updated_at)),
            ],
        );
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(it))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(sdk)?;
        out.attributes()
            .filter(|a| !a.is_empty())
            .map(role_of)
            .transpose()
    }

    async fn roles(&self) -> Result<Vec<crate::Role>> {
        let mut roles = self
            .query_partition("ROLES", "ROLE#")
            .await?
            .iter()
            .map(role_of)
            .collect::<Result<Vec<_>>>()?;
        roles.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(roles)
    }

    async fn delete_role(&self, name: &str) -> Result<Option<crate::Role>> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(role_key(name)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(sdk)?;
        out.attributes()
            .filter(|a| !a.is_empty())
            .map(role_of)
            .transpose()
    }
}

#[async_trait]
impl Keys for DynamoStore {
    async fn replace_key_material(&self, kid: &str, from: &[u8], to: Vec<u8>) -> Result<()> {
        use aws_sdk_dynamodb::primitives::Blob;
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key("KEYS", format!("KEY#{kid}"))))
            .update_expression("SET private_der = :to")
            .condition_expression("private_der = :from")
            .expression_attribute_values(":to", AttributeValue::B(Blob::new(to)))
            .expression_attribute_values(":from", AttributeValue::B(Blob::new(from.to_vec())))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Err(StoreError::Conflict("key material")),
            Err(e) => Err(sdk(e)),
        }
    }

    async fn insert_key_once(&self, slot: &str, k: StoredKey) -> Result<bool> {
        let marker = item("META", format!("KEYSLOT#{slot}"), vec![("kid", s(&k.kid))]);
        let key = key_item(k);
        for attempt in 0..MAX_ATTEMPTS {
            let items = vec![
                put(
                    &self.table,
                    marker.clone(),
                    Some("attribute_not_exists(pk)"),
                )?,
                put(&self.table, key.clone(), Some("attribute_not_exists(pk)"))?,
            ];
            match self.transact(items).await? {
                Txn::Done => return Ok(true),
                Txn::Cancelled(codes) if Txn::failed(&codes, 0) => return Ok(false),
                Txn::Cancelled(codes) if Txn::failed(&codes, 1) => {
                    return Err(StoreError::Conflict("key id"));
                }
                // Another instance's transaction on the slot is in flight: ask again.
                Txn::Cancelled(codes) if Txn::lost_race(&codes) => backoff(attempt).await,
                Txn::Cancelled(codes) => {
                    return Err(backend(format!(
                        "DynamoDB refused the key ({})",
                        codes.join(", ")
                    )));
                }
            }
        }
        Err(backend(
            "the first signing key kept losing races; try again",
        ))
    }

    async fn insert_key(&self, k: StoredKey) -> Result<()> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(key_item(k)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Err(StoreError::Conflict("key id")),
            Err(e) => Err(sdk(e)),
        }
    }

    async fn keys(&self) -> Result<Vec<StoredKey>> {
        let mut keys = self
            .query_partition("KEYS", "KEY#")
            .await?
            .iter()
            .map(stored_key)
            .collect::<Result<Vec<_>>>()?;
        keys.sort_by_key(|(k, inserted)| (k.created_at, *inserted));
        Ok(keys.into_iter().map(|(k, _)| k).collect())
    }

    async fn delete_key(&self, kid: &str) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key("KEYS", format!("KEY#{kid}"))))
            .send()
            .await
            .map_err(sdk)?;
        Ok(())
    }

    async fn retire_key(&self, kid: &str, at: i64) -> Result<()> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key("KEYS", format!("KEY#{kid}"))))
            .update_expression("SET retired_at = :at")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(retired_at) OR retired_at > :at)",
            )
            .expression_attribute_values(":at", n(at))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            // Missing, or retired earlier already (the earliest retirement stands).
            Err(e) if is_condition_failed(&e) => {
                match self.get("KEYS".into(), &format!("KEY#{kid}")).await? {
                    Some(_) => Ok(()),
                    None => Err(StoreError::NotFound("key")),
                }
            }
            Err(e) => Err(sdk(e)),
        }
    }
}

#[async_trait]
impl Sessions for DynamoStore {
    async fn insert_refresh(&self, t: NewRefresh) -> Result<()> {
        let cond = Some("attribute_not_exists(pk)");
        let family = item(
            format!("FAM#{}", t.family_id),
            "FAM",
            vec![
                ("family_id", s(&t.family_id)),
                ("user_id", s(&t.user_id)),
                ("created_at", n(t.created_at)),
                (TTL_ATTR, n(t.expires_at)),
            ],
        );
        let index = item(
            user_pk(&t.user_id),
            format!("FAM#{}", t.family_id),
            vec![
                ("family_id", s(&t.family_id)),
                ("created_at", n(t.created_at)),
                (TTL_ATTR, n(t.expires_at)),
            ],
        );
        let token = item(
            format!("RT#{}", t.token_hash),
            "RT",
            vec![
                ("family_id", s(&t.family_id)),
                ("user_id", s(&t.user_id)),
                ("created_at", n(t.created_at)),
                ("expires_at", n(t.expires_at)),
                (TTL_ATTR, n(t.expires_at)),
            ],
        );
        match self
            .transact(vec![
                put(&self.table, family, cond)?,
                put(&self.table, index, None)?,
                put(&self.table, token, cond)?,
            ])
            .await?
        {
            Txn::Done => Ok(()),
            // Our own attempt committed though its answer was lost (an SDK retry).
            Txn::Cancelled(codes)
                if Txn::failed(&codes, 0)
                    && self.own_refresh(&t.token_hash, &t.family_id).await? =>
            {
                Ok(())
            }
            Txn::Cancelled(codes) if Txn::failed(&codes, 0) => Err(StoreError::Conflict("session")),
            Txn::Cancelled(codes) if Txn::failed(&codes, 2) => {
                Err(StoreError::Conflict("refresh token"))
            }
            Txn::Cancelled(codes) => Err(backend(format!(
                "DynamoDB refused the new session ({})",
                codes.join(", ")
            ))),
        }
    }

    async fn rotate_refresh(&self, req: Rotate) -> Result<RotateOutcome> {
        let token_pk = format!("RT#{}", req.presented_hash);
        for attempt in 0..MAX_ATTEMPTS {
            let Some(tok) = self.get(token_pk.clone(), "RT").await? else {
                return Ok(RotateOutcome::Invalid);
            };
            let family_id = get_s(&tok, "family_id")?;
            let user_id = get_s(&tok, "user_id")?;
            let Some(fam) = self.get(format!("FAM#{family_id}"), "FAM").await? else {
                return Ok(RotateOutcome::Invalid);
            };
            if get_opt_n(&fam, "revoked_at")?.is_some() || get_n(&tok, "expires_at")? <= req.now {
                return Ok(RotateOutcome::Invalid);
            }
            let used_at = get_opt_n(&tok, "used_at")?;
            let nonce = get_opt_s(&tok, "rotation_nonce");
            // Our own transaction committed though its answer was lost (the SDK retried it
            // after a timeout): the nonce is ours, so this presentation is the rotation.
            if used_at.is_some() && nonce.as_deref() == Some(req.nonce.as_str()) {
                return Ok(RotateOutcome::Rotated { user_id, family_id });
            }
            match crate::rotation_step(used_at, nonce, &req) {
                crate::Step::Repeat(nonce) => {
                    return Ok(RotateOutcome::Repeat {
                        user_id,
                        family_id,
                        nonce,
                    });
                }
                crate::Step::Reuse => {
                    self.revoke_family_item(&family_id, req.now).await?;
                    return Ok(RotateOutcome::Reused { family_id });
                }
                crate::Step::Rotate => {}
            }
            let ttl = n(req.successor_expires_at);
            let successor = item(
                format!("RT#{}", req.successor_hash),
                "RT",
                vec![
                    ("family_id", s(&family_id)),
                    ("user_id", s(&user_id)),
                    ("created_at", n(req.now)),
                    ("expires_at", n(req.successor_expires_at)),
                    (TTL_ATTR, ttl.clone()),
                ],
            );
            let items = vec![
                // The presented token is spent by exactly one transaction.
                update(
                    &self.table,
                    Upd {
                        key: key(token_pk.clone(), "RT"),
                        expr: "SET used_at = :now, rotation_nonce = :nonce",
                        condition: Some("attribute_exists(pk) AND attribute_not_exists(used_at)"),
                        names: vec![],
                        values: vec![(":now", n(req.now)), (":nonce", s(&req.nonce))],
                    },
                )?,
                put(&self.table, successor, Some("attribute_not_exists(pk)"))?,
                // The session is still live, and lives as long as its newest token.
                update(
                    &self.table,
                    Upd {
                        key: key(format!("FAM#{family_id}"), "FAM"),
                        expr: "SET #ttl = :ttl",
                        condition: Some(
                            "attribute_exists(pk) AND attribute_not_exists(revoked_at)",
                        ),
                        names: vec![("#ttl", TTL_ATTR)],
                        values: vec![(":ttl", ttl.clone())],
                    },
                )?,
                update(
                    &self.table,
                    Upd {
                        key: key(user_pk(&user_id), format!("FAM#{family_id}")),
                        expr: "SET #ttl = :ttl",
                        condition: None,
                        names: vec![("#ttl", TTL_ATTR)],
                        values: vec![(":ttl", ttl)],
                    },
                )?,
            ];
            match self.transact(items).await? {
                Txn::Done => return Ok(RotateOutcome::Rotated { user_id, family_id }),
                Txn::Cancelled(codes) if Txn::failed(&codes, 1) && !Txn::failed(&codes, 0) => {
                    return Err(backend("refresh successor collides with an existing token"));
                }
                // Another presentation won, or the session was revoked meanwhile: read again
                // and decide from what is stored now.
                Txn::Cancelled(codes) if Txn::lost_race(&codes) => backoff(attempt).await,
                Txn::Cancelled(codes) => {
                    return Err(backend(format!(
                        "DynamoDB refused the rotation ({})",
                        codes.join(", ")
                    )));
                }
            }
        }
        Err(backend("refresh rotation kept losing races; try again"))
    }

    async fn revoke_family(&self, family_id: &str, now: i64) -> Result<()> {
        self.revoke_family_item(family_id, now).await.map(|_| ())
    }

    async fn evict_sessions(&self, user_id: &str, keep: usize, now: i64) -> Result<Vec<String>> {
        // The user's session index: one query; nothing more while it holds `keep` or fewer.
        let mut sessions: Vec<(i64, String)> = Vec::new();
        for it in self.query_partition(&user_pk(user_id), "FAM#").await? {
            if get_n(&it, TTL_ATTR).is_ok_and(|ttl| ttl < now) {
                continue;
            }
            let created = get_n(&it, "created_at").unwrap_or(0);
            sessions.push((created, get_s(&it, "family_id")?));
        }
        if sessions.len() <= keep {
            return Ok(Vec::new());
        }
        // Newest first; which are still live is on the sessions themselves (32 reads at a
        // time). Index items of ended sessions go, so the next login reads fewer.
        sessions.sort_by(|a, b| b.cmp(a));
        let checked = self
            .each_32(sessions, |this, (created, id)| async move {
                let f = this.get(format!("FAM#{id}"), "FAM").await?;
                let ended = f.is_none_or(|f| f.contains_key("revoked_at"));
                Ok((created, id, ended))
            })
            .await?;
        let mut live = Vec::new();
        for (created, id, ended) in checked {
            if ended {
                self.forget_session(user_id, &id).await?;
            } else {
                live.push((created, id));
            }
        }
        live.sort_by(|a, b| b.cmp(a));
        let mut evicted = Vec::new();
        for (_, id) in live.into_iter().skip(keep) {
            if self.revoke_family_item(&id, now).await? {
                evicted.push(id.clone());
            }
            self.forget_session(user_id, &id).await?;
        }
        Ok(evicted)
    }

    async fn revoke_user_sessions(&self, user_id: &str, now: i64) -> Result<Vec<String>> {
        // One conditional update per session, 32 at a time: a thousand sessions end in a
        // few round trips' time, and a retry after a failure skips the ones already ended.
        let ids = self
            .query_partition(&user_pk(user_id), "FAM#")
            .await?
            .iter()
            .map(|it| get_s(it, "family_id"))
            .collect::<Result<Vec<_>>>()?;
        let done = self
            .each_32(ids, |this, id| async move {
                let done = this.revoke_family_item(&id, now).await?;
                Ok(done.then_some(id))
            })
            .await?;
        Ok(done.into_iter().flatten().collect())
    }

    async fn family_of(&self, token_hash: &str) -> Result<Option<FamilyRef>> {
        self.get(format!("RT#{token_hash}"), "RT")
            .await?
            .map(|it| {
                Ok(FamilyRef {
                    family_id: get_s(&it, "family_id")?,
                    user_id: get_s(&it, "user_id")?,
                })
            })
            .transpose()
    }
}

#[async_trait]
impl Revocations for DynamoStore {
    async fn revoke_token(&self, id: &str, expires_at: i64, _now: i64) -> Result<()> {
        // No counter item that every logout must win: the feed position is the time of the
        // write (µs) and a random suffix, so concurrent revocations on any number of
        // containers never contend. The `REVID#` item makes a revocation idempotent.
        // Expired entries need no sweep here: reads filter on expiry and TTL removes them.
        if !self
            .counter_retired
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            // Containers of an older version took positions from the `REVSEQ` counter —
            // small numbers no follower would read any more. Make the counter unreadable to
            // them, so their revocations fail loudly (a 500 and a retry, on the new
            // version) instead of vanishing. Upgrade every container.
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item(
                    "REVSEQ",
                    "REVSEQ",
                    vec![("next_seq", s("retired: feed positions are times now"))],
                )))
                .send()
                .await
                .map_err(|e| {
                    self.counter_retired
                        .store(false, std::sync::atomic::Ordering::Release);
                    sdk(e)
                })?;
        }
        for attempt in 0..MAX_ATTEMPTS {
            let started = micros_now();
            let seq = feed_position(started);
            let once = item(
                format!("REVID#{id}"),
                "REVID",
                vec![("seq_no", n(seq)), (TTL_ATTR, n(expires_at))],
            );
            let items = vec![
                put(&self.table, once, Some("attribute_not_exists(pk)"))?,
                put(
                    &self.table,
                    feed_entry(seq, id, expires_at),
                    Some("attribute_not_exists(pk)"),
                )?,
            ];
            match self.transact(items).await? {
                Txn::Done => {
                    self.settle(started, id, expires_at).await?;
                    return Ok(());
                }
                // Already revoked (a retry after a failure, say): the first attempt may
                // have landed late, behind a follower's cursor — post it again.
                Txn::Cancelled(codes) if Txn::failed(&codes, 0) => {
                    self.settle(
                        started - self.feed_settle.as_micros() as i64,
                        id,
                        expires_at,
                    )
                    .await?;
                    return Ok(());
                }
                // The same position taken in the same microsecond, or a conflict.
                Txn::Cancelled(codes) if Txn::lost_race(&codes) => backoff(attempt).await,
                Txn::Cancelled(codes) => {
                    return Err(backend(format!(
                        "DynamoDB refused the revocation ({})",
                        codes.join(", ")
                    )));
                }
            }
        }
        Err(backend("revocation kept losing races; try again"))
    }

    async fn revocations_since(
        &self,
        since: i64,
        now: i64,
        limit: usize,
    ) -> Result<Vec<Revocation>> {
        // Nothing has settled past the cursor yet (DynamoDB refuses a BETWEEN whose bounds
        // are the wrong way round).
        let horizon = settled_horizon(self.feed_settle);
        if since.max(0) >= horizon {
            return Ok(Vec::new());
        }
        // Pages of at most `limit` evaluated items; stop reading once `limit` live ones
        // are in hand, so a follower's catch-up reads the partition once, not once a page.
        let q = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            // Only settled positions: every entry at or below the horizon is committed, so
            // a follower's cursor never passes an entry that becomes visible later.
            .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
            .filter_expression("expires_at >= :now")
            .expression_attribute_values(":pk", s("REVOKED"))
            .expression_attribute_values(
                ":from",
                s(format!("SEQ#{:020}", since.max(0).saturating_add(1))),
            )
            .expression_attribute_values(":to", s(format!("SEQ#{horizon:020}")))
            .expression_attribute_values(":now", n(now))
            .limit(i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000));
        let mut stream = q.into_paginator().items().send();
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(it) = stream.next().await else { break };
            let it = it.map_err(sdk)?;
            out.push(Revocation {
                seq: get_n(&it, "seq_no")?,
                id: get_s(&it, "token_id")?,
                expires_at: get_n(&it, "expires_at")?,
            });
        }
        Ok(out)
    }
}

impl DynamoStore {
    /// One page of a throttle group's counters (`THROTTLE#group` / `M#…`), from `start`, and
    /// where the next page begins. `keys_only`: just `pk` and `sk` (to delete them).
    async fn throttle_group_page(
        &self,
        group: &str,
        start: Option<Item>,
        keys_only: bool,
    ) -> Result<(Vec<Item>, Option<Item>)> {
        crate::throttle_group_range(group)?;
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :m)")
            .expression_attribute_values(":pk", s(format!("THROTTLE#{group}")))
            .expression_attribute_values(":m", s("M#"))
            .set_exclusive_start_key(start);
        query = if keys_only {
            query.projection_expression("pk, sk")
        } else {
            query.consistent_read(true)
        };
        let res = query.send().await.map_err(sdk)?;
        let next = res.last_evaluated_key.filter(|k| !k.is_empty());
        Ok((res.items.unwrap_or_default(), next))
    }
}

#[async_trait]
impl Throttle for DynamoStore {
    async fn add_login_failure(
        &self,
        key: &str,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<LoginFailures> {
        // ADD is atomic across containers; its condition keeps a stale counter from
        // growing, and the second form restarts one. Each is one conditional update.
        const ADD: (&str, &str) = (
            "ADD failure_count :one SET last_failure_ms = :now, #ttl = :ttl",
            "attribute_not_exists(pk) OR last_failure_ms > :stale",
        );
        const RESTART: (&str, &str) = (
            "SET failure_count = :one, last_failure_ms = :now, #ttl = :ttl",
            "last_failure_ms <= :stale",
        );
        for _ in 0..4 {
            // ADD fails on a stale counter, RESTART on a live one: both fail only when
            // another container moved it across the window in between.
            for (expr, condition) in [ADD, RESTART] {
                let res = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(key_for_throttle(key)))
                    .update_expression(expr)
                    .condition_expression(condition)
                    .expression_attribute_names("#ttl", TTL_ATTR)
                    .expression_attribute_values(":one", n(1))
                    .expression_attribute_values(":now", n(now_ms))
                    .expression_attribute_values(":stale", n(now_ms - window_ms))
                    .expression_attribute_values(":ttl", n(now_ms / 1000 + window_ms / 1000 + 1))
                    .return_values(ReturnValue::AllNew)
                    .send()
                    .await;
                match res {
                    Ok(out) => return failures_of(key, &out.attributes.unwrap_or_default()),
                    Err(e) if is_condition_failed(&e) => {}
                    Err(e) => return Err(sdk(e)),
                }
            }
        }
        Err(backend("login failure counter kept changing; try again"))
    }

    async fn login_failures(
        &self,
        keys: &[String],
        now_ms: i64,
        window_ms: i64,
    ) -> Result<Vec<LoginFailures>> {
        // One round trip for all keys (a login checks the username and the address).
        let mut wanted: Vec<&String> = keys.iter().collect();
        wanted.sort();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let mut request = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(wanted.iter().map(|k| key_for_throttle(k)).collect()))
                .consistent_read(true)
                .build()
                .map_err(backend)?,
        );
        let mut out = Vec::new();
        for attempt in 0..MAX_ATTEMPTS {
            let Some(req) = request.take() else { break };
            let res = self
                .client
                .batch_get_item()
                .request_items(&self.table, req)
                .send()
                .await
                .map_err(sdk)?;
            for it in res
                .responses
                .and_then(|mut r| r.remove(&self.table))
                .unwrap_or_default()
            {
                let Some(k) = throttle_key_of(&it)? else {
                    continue;
                };
                let f = failures_of(&k, &it)?;
                // Expired items linger until DynamoDB deletes them: filter here.
                if f.last_ms > now_ms - window_ms {
                    out.push(f);
                }
            }
            // Keys DynamoDB did not get to (throughput) are asked again.
            request = res
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.table))
                .filter(|k| !k.keys().is_empty());
            if request.is_some() {
                backoff(attempt).await;
            }
        }
        if request.is_some() {
            return Err(backend(
                "DynamoDB kept leaving login counters unread; try again",
            ));
        }
        Ok(out)
    }

    async fn login_failures_in(
        &self,
        group: &str,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<Vec<LoginFailures>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let (items, next) = self.throttle_group_page(group, start.take(), false).await?;
            for it in items {
                let Some(k) = throttle_key_of(&it)? else {
                    continue;
                };
                let f = failures_of(&k, &it)?;
                // Expired items linger until DynamoDB deletes them.
                if f.last_ms > now_ms - window_ms {
                    out.push(f);
                }
            }
            start = next;
            if start.is_none() || out.len() >= crate::THROTTLE_GROUP_MAX {
                break;
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.truncate(crate::THROTTLE_GROUP_MAX);
        Ok(out)
    }

    async fn clear_login_failures_in(&self, group: &str) -> Result<usize> {
        // Page by page: each page's items deleted (8 at a time) before the next is read.
        let mut gone = 0;
        let mut start: Option<Item> = None;
        loop {
            let (items, next) = self.throttle_group_page(group, start.take(), true).await?;
            for chunk in items.chunks(8) {
                let deletes = chunk.iter().map(|it| {
                    let k: Item = it
                        .iter()
                        .filter(|(name, _)| *name == "pk" || *name == "sk")
                        .map(|(n, v)| (n.clone(), v.clone()))
                        .collect();
                    self.client
                        .delete_item()
                        .table_name(&self.table)
                        .set_key(Some(k))
                        .send()
                });
                for r in futures_util::future::join_all(deletes).await {
                    r.map_err(sdk)?;
                    gone += 1;
                }
            }
            start = next;
            if start.is_none() {
                return Ok(gone);
            }
        }
    }

    async fn clear_login_failures(&self, key: &str) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_for_throttle(key)))
            .send()
            .await
            .map_err(sdk)?;
        Ok(())
    }

    async fn release_login_failure(&self, key: &str) -> Result<()> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_for_throttle(key)))
            .update_expression("ADD failure_count :minus")
            .condition_expression("failure_count > :zero")
            .expression_attribute_values(":minus", n(-1))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(sdk(e)),
        }
    }
}

fn strings(it: &Item, name: &str) -> Result<Vec<String>> {
    match it.get(name) {
        Some(AttributeValue::L(l)) => l
            .iter()
            .map(|v| match v {
                AttributeValue::S(r) => Ok(r.clone()),
                _ => Err(backend(format!("DynamoDB {name} holds a non-string"))),
            })
            .collect(),
        _ => Ok(Vec::new()),
    }
}

fn client_key(id: &str) -> Item {
    key("CLIENTS", format!("CLIENT#{id}"))
}

fn client_of(it: &Item) -> Result<ClientRecord> {
    Ok(ClientRecord {
        id: get_s(it, "client_id")?,
        name: get_s(it, "client_name")?,
        secret_hash: get_s(it, "secret_hash")?,
        scopes: strings(it, "scope_list")?,
        audiences: strings(it, "audience_list")?,
        created_at: get_n(it, "created_at")?,
        secret_set_at: get_n(it, "secret_set_at")?,
    })
}

#[async_trait]
impl Clients for DynamoStore {
    async fn create_client(&self, c: ClientRecord) -> Result<()> {
        let list = |v: &[String]| AttributeValue::L(v.iter().map(s).collect());
        let it = item(
            "CLIENTS",
            format!("CLIENT#{}", c.id),
            vec![
                ("client_id", s(&c.id)),
                ("client_name", s(&c.name)),
                ("secret_hash", s(&c.secret_hash)),
                ("scope_list", list(&c.scopes)),
                ("audience_list", list(&c.audiences)),
                ("created_at", n(c.created_at)),
                ("secret_set_at", n(c.secret_set_at)),
            ],
        );
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(it))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Err(StoreError::Conflict("client")),
            Err(e) => Err(sdk(e)),
        }
    }

    async fn client(&self, id: &str) -> Result<Option<ClientRecord>> {
        self.get("CLIENTS".into(), &format!("CLIENT#{id}"))
            .await?
            .as_ref()
            .map(client_of)
            .transpose()
    }

    async fn clients(&self) -> Result<Vec<ClientRecord>> {
        let mut all = self
            .query_partition("CLIENTS", "CLIENT#")
            .await?
            .iter()
            .map(client_of)
            .collect::<Result<Vec<_>>>()?;
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    async fn set_client_secret(&self, id: &str, secret_hash: &str, at: i64) -> Result<()> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(client_key(id)))
            .update_expression("SET secret_hash = :h, secret_set_at = :t")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":h", s(secret_hash))
            .expression_attribute_values(":t", n(at))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Err(StoreError::NotFound("client")),
            Err(e) => Err(sdk(e)),
        }
    }

    async fn delete_client(&self, id: &str) -> Result<Option<ClientRecord>> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(client_key(id)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(sdk)?;
        out.attributes()
            .filter(|a| !a.is_empty())
            .map(client_of)
            .transpose()
    }
}

/// Audit events live in one partition per UTC day (`AUDIT#<days since the epoch>`): a
/// day's writes spread over time, and a read walks back from the newest day.
const DAY_MS: i64 = 86_400_000;
/// The furthest back a read walks (DynamoDB's TTL removes older events anyway).
const AUDIT_MAX_DAYS: i64 = 400;
/// Day partitions read at once by `audit_events`.
const AUDIT_DAYS_AT_ONCE: usize = 8;

impl DynamoStore {
    /// One day's audit events in [since, before), newest first, at most `q.limit`.
    async fn audit_day(
        &self,
        day: i64,
        since: i64,
        before: i64,
        now_ms: i64,
        q: &crate::AuditQuery,
    ) -> Result<Vec<crate::AuditEvent>> {
        let mut filters = vec!["#ttl >= :now"];
        let mut b = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .scan_index_forward(false)
            .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
            .expression_attribute_names("#ttl", TTL_ATTR)
            .expression_attribute_values(":pk", s(format!("AUDIT#{day}")))
            .expression_attribute_values(":lo", s(format!("{:016}", since.max(0))))
            .expression_attribute_values(
                ":hi",
                s(format!("{:016}~", before.saturating_sub(1).max(0))),
            )
            .expression_attribute_values(":now", n(now_ms / 1000));
        if let Some(k) = &q.kind {
            filters.push("event_type = :k");
            b = b.expression_attribute_values(":k", s(k));
        }
        if let Some(u) = &q.user {
            filters.push("user_id = :u");
            b = b.expression_attribute_values(":u", s(u));
        }
        b = b.filter_expression(filters.join(" AND "));
        let mut out = Vec::new();
        let mut pages = b.into_paginator().items().send();
        while let Some(it) = pages.next().await {
            let it = it.map_err(sdk)?;
            let detail = match it.get("detail") {
                Some(AttributeValue::S(d)) => serde_json::from_str(d).map_err(backend)?,
                _ => Default::default(),
            };
            out.push(crate::AuditEvent {
                at_ms: get_n(&it, "at_ms")?,
                kind: get_s(&it, "event_type")?,
                user: get_opt_s(&it, "user_id"),
                actor: get_opt_s(&it, "actor"),
                ip: get_opt_s(&it, "ip"),
                detail,
            });
            if out.len() >= q.limit {
                break;
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Audit for DynamoStore {
    async fn append_audit(&self, e: crate::AuditEvent, keep_until: i64) -> Result<()> {
        let detail = serde_json::to_string(&e.detail).map_err(backend)?;
        let mut attrs = vec![
            ("at_ms", n(e.at_ms)),
            ("event_type", s(&e.kind)),
            ("detail", s(detail)),
            (TTL_ATTR, n(keep_until)),
        ];
        for (k, v) in [("user_id", &e.user), ("actor", &e.actor), ("ip", &e.ip)] {
            if let Some(v) = v {
                attrs.push((k, s(v)));
            }
        }
        let it = item(
            format!("AUDIT#{}", e.at_ms.div_euclid(DAY_MS)),
            format!("{:016}#{}", e.at_ms, audit_suffix()),
            attrs,
        );
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(it))
            .send()
            .await
            .map_err(sdk)?;
        Ok(())
    }

    async fn audit_events(&self, q: crate::AuditQuery) -> Result<Vec<crate::AuditEvent>> {
        let now_ms = micros_now() / 1000;
        let before = q.before_ms.unwrap_or(i64::MAX).min(now_ms + DAY_MS);
        let since = q.since_ms.max(now_ms - AUDIT_MAX_DAYS * DAY_MS);
        let days: Vec<i64> = (since.div_euclid(DAY_MS)..=(before - 1).div_euclid(DAY_MS))
            .rev()
            .collect();
        // A partition per day, newest first, a few read ahead at once: a long range of
        // empty days costs round trips side by side, not one after another; reading stops
        // (and the reads ahead are dropped) once the page is full.
        use futures_util::StreamExt;
        let mut days = futures_util::stream::iter(days)
            .map(|day| self.audit_day(day, since, before, now_ms, &q))
            .buffered(AUDIT_DAYS_AT_ONCE);
        let mut out = Vec::new();
        while let Some(page) = days.next().await {
            out.extend(page?);
            if out.len() >= q.limit {
                out.truncate(q.limit);
                break;
            }
        }
        Ok(out)
    }

    async fn prune_audit(&self, _now: i64) -> Result<u64> {
        // The table's TTL deletes expired events (and reads leave them out until then).
        Ok(0)
    }
}

/// 8 random hex digits: events of one millisecond stay apart.
fn audit_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(micros_now());
    format!("{:08x}", h.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::DynamoConfig;

    #[test]
    fn urls() {
        let c = DynamoConfig::parse(
            "dynamodb://jotgate?region=eu-west-1&endpoint=http://127.0.0.1:5000&create_table=true",
        )
        .unwrap();
        assert_eq!(c.table, "jotgate");
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        assert!(c.create_table);
        let plain = DynamoConfig::parse("dynamodb://my-table.v2").unwrap();
        assert_eq!(plain.region, None);
        assert!(!plain.create_table);
        for bad in [
            "dynamodb://",
            "dynamodb://ab",
            "dynamodb://a b c",
            "dynamodb://t123?color=red",
            "dynamodb://t123?endpoint=ftp://x",
            "dynamodb://t123?region=",
            "dynamodb://t123?create_table=yes",
            "postgres://x",
        ] {
            let e = DynamoConfig::parse(bad).unwrap_err().to_string();
            assert!(!e.is_empty(), "{bad}");
        }
    }
}
