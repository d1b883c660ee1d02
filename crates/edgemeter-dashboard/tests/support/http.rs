//! Calls the router in process, the way a browser would, and reads the JSON.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;

/// The largest body a test reads; every dashboard answer is far smaller.
pub const RESPONSE_BYTES_MAX: usize = 8 * 1024 * 1024;

pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub content_security_policy: Option<String>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }
}

pub async fn call(router: &Router, method: Method, uri: &str) -> Answer {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .expect("a valid request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let header = |name: axum::http::HeaderName| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().expect("ASCII header").to_owned())
    };
    let content_type = header(axum::http::header::CONTENT_TYPE).unwrap_or_default();
    let content_security_policy = header(axum::http::header::CONTENT_SECURITY_POLICY);
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), RESPONSE_BYTES_MAX)
        .await
        .expect("a readable body")
        .to_vec();
    Answer {
        status,
        content_type,
        content_security_policy,
        body,
    }
}

pub async fn get(router: &Router, uri: &str) -> Answer {
    call(router, Method::GET, uri).await
}

/// GETs `uri`, requires 200 and JSON, and returns the JSON.
pub async fn get_ok(router: &Router, uri: &str) -> Value {
    let answer = get(router, uri).await;
    assert_eq!(answer.status, StatusCode::OK, "{uri}: {}", answer.text());
    assert!(
        answer.content_type.starts_with("application/json"),
        "{uri}: {}",
        answer.content_type
    );
    answer.json()
}
