//! Prometheus metrics on their own address (`metrics_listen`), never on the API's.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{PASSWORD, client, settings, temp_dir};

#[tokio::test]
async fn metrics_count_requests_logins_verifications_and_store_time() {
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.listen.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let app = jotgate::Application::build(&s).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    let metrics = format!("http://{}/metrics", app.metrics_addr().unwrap());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run(async {
        let _ = rx.await;
    }));
    let c = client();
    let body = json!({"username": "mia", "password": PASSWORD});
    let res = c
        .post(format!("{base}/signup"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let login: serde_json::Value = c
        .post(format!("{base}/login"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap();
    for _ in 0..3 {
        c.get(format!("{base}/private"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
    }
    c.get(format!("{base}/private"))
        .bearer_auth("not.a.jwt")
        .send()
        .await
        .unwrap();
    c.post(format!("{base}/login"))
        .json(&json!({"username": "mia", "password": "wrong password"}))
        .send()
        .await
        .unwrap();
    c.get(format!("{base}/api/v1/users/some-id"))
        .send()
        .await
        .unwrap();

    let res = c.get(&metrics).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = res.text().await.unwrap();
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    };
    assert!(
        value(
            r#"jotgate_http_request_duration_seconds_count{route="/private",method="GET",status="200"}"#
        ) >= 3.0
    );
    assert!(
        value(
            r#"jotgate_http_request_duration_seconds_count{route="/signup",method="POST",status="201"}"#
        ) >= 1.0
    );
    // A path with an id is counted under its route template, not the id.
    assert!(
        value(
            r#"jotgate_http_request_duration_seconds_count{route="/api/v1/users/{id}",method="GET",status="401"}"#
        ) >= 1.0
    );
    assert!(!text.contains("some-id"));
    assert!(value(r#"jotgate_logins_total{outcome="succeeded"}"#) >= 1.0);
    assert!(value(r#"jotgate_logins_total{outcome="failed"}"#) >= 1.0);
    assert!(value(r#"jotgate_token_verifications_total{outcome="valid"}"#) >= 3.0);
    assert!(value(r#"jotgate_token_verifications_total{outcome="token_malformed"}"#) >= 1.0);
    assert!(value("jotgate_token_cache_hits_total") >= 2.0);
    assert!(value("jotgate_hash_queue_depth") >= 0.0);
    assert!(value("jotgate_revocation_sync_age_seconds") >= 0.0);
    assert!(
        value(r#"jotgate_store_operation_duration_seconds_count{operation="user_lookup"}"#) >= 2.0
    );
    assert!(
        value(r#"jotgate_store_operation_duration_seconds_count{operation="session_insert"}"#)
            >= 2.0
    );
    // Not on the API's address.
    let res = c.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
