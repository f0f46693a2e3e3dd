//! The sandbox's HTTP server: the REST API subset Salesforce clients use, one module per API
//! area, joined by [`router`]. docs/sandbox.md lists every endpoint.

mod admin;
mod auth;
mod collections;
mod composite;
mod identity;
mod limits;
mod query;
mod replication;
mod search;
mod sobjects;
pub(crate) mod state;
pub(crate) mod streaming;

pub(crate) use state::St;
pub use state::{
    trim_trailing_slash, ApiVersions, Faults, Sandbox, Settings, CURRENT_API_VERSION,
    OLDEST_API_VERSION,
};

use crate::bulk;
use crate::bulk::v1;
use admin::*;
use auth::*;
use axum::extract::{Request, State};
use axum::middleware::{self};
use axum::routing::{get, post};
use axum::{Json, Router};
use collections::*;
use composite::*;
use identity::*;
use limits::*;
use query::*;
use replication::*;
use search::*;
use serde_json::{json, Value as J};
use sobjects::*;

pub(crate) async fn versions(State(sb): State<St>) -> Json<J> {
    sb.count("versions");
    Json(J::Array(
        sb.settings
            .versions
            .list()
            .iter()
            .map(|v| json!({"label": release_label(v), "url": format!("/services/data/v{v}"), "version": v}))
            .collect(),
    ))
}

/// The release a version came with, as `/services/data` labels it ("Winter '25" for 62.0):
/// three releases a year, Spring '14 being 30.0.
fn release_label(v: &str) -> String {
    let n: i64 = v
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    // 30.0 is Spring '14; each version is the next of Spring, Summer, Winter (Winter is
    // named after the year it precedes).
    let k = n - 30;
    let year = 14 + (k + 1).div_euclid(3);
    match k.rem_euclid(3) {
        0 => format!("Spring '{year:02}"),
        1 => format!("Summer '{year:02}"),
        _ => format!("Winter '{year:02}"),
    }
}

/// The router.
pub fn router(sb: St) -> Router {
    let api = Router::new()
        .route("/services/data/{v}", get(version_root))
        .route("/services/data/{v}/sobjects", get(sobjects))
        .route(
            "/services/data/{v}/sobjects/{s}",
            get(basic_info).post(create),
        )
        .route("/services/data/{v}/sobjects/{s}/describe", get(describe))
        .route("/services/data/{v}/sobjects/{s}/updated", get(updated))
        .route("/services/data/{v}/sobjects/{s}/deleted", get(deleted))
        .route(
            "/services/data/{v}/sobjects/{s}/{id}",
            get(retrieve).patch(update).delete(destroy),
        )
        .route(
            "/services/data/{v}/sobjects/{s}/{field}/{value}",
            get(retrieve_by_external_id)
                .patch(upsert)
                .delete(destroy_by_external_id),
        )
        .route(
            "/services/data/{v}/composite/sobjects",
            post(collection_create)
                .patch(collection_update)
                .delete(collection_delete),
        )
        .route(
            "/services/data/{v}/composite/sobjects/{s}",
            get(collection_retrieve).post(collection_retrieve_post),
        )
        .route(
            "/services/data/{v}/composite/sobjects/{s}/{field}",
            axum::routing::patch(collection_upsert),
        )
        .route(
            "/services/data/{v}/jobs/query",
            post(bulk::query_create).get(bulk::query_list),
        )
        .route(
            "/services/data/{v}/jobs/query/{id}",
            get(bulk::query_info)
                .delete(bulk::query_delete)
                .patch(bulk::query_patch),
        )
        .route(
            "/services/data/{v}/jobs/query/{id}/results",
            get(bulk::query_results),
        )
        .route(
            "/services/data/{v}/jobs/ingest",
            post(bulk::ingest_create).get(bulk::ingest_list),
        )
        .route(
            "/services/data/{v}/jobs/ingest/{id}",
            get(bulk::ingest_info)
                .patch(bulk::ingest_patch)
                .delete(bulk::ingest_delete),
        )
        .route(
            "/services/data/{v}/jobs/ingest/{id}/batches",
            axum::routing::put(bulk::ingest_upload),
        )
        .route(
            "/services/data/{v}/jobs/ingest/{id}/{kind}",
            get(bulk::ingest_results),
        )
        .route("/services/data/{v}/composite", post(composite))
        .route("/services/data/{v}/query", get(query))
        .route("/services/data/{v}/query/{locator}", get(query_more))
        .route("/services/data/{v}/queryAll", get(query_all))
        .route("/services/data/{v}/limits", get(limits))
        .route("/services/data/{v}/recent", get(recent))
        .route("/services/data/{v}/search", get(search))
        .route("/cometd/{v}", post(streaming::cometd))
        .route("/cometd/{v}/{*rest}", post(streaming::cometd))
        .route("/services/async/{v}/job", post(v1::job_create))
        .route(
            "/services/async/{v}/job/{job}",
            get(v1::job_get).post(v1::job_state),
        )
        .route(
            "/services/async/{v}/job/{job}/batch",
            post(v1::batch_create).get(v1::batch_list),
        )
        .route(
            "/services/async/{v}/job/{job}/batch/{batch}",
            get(v1::batch_get),
        )
        .route(
            "/services/async/{v}/job/{job}/batch/{batch}/request",
            get(v1::batch_request),
        )
        .route(
            "/services/async/{v}/job/{job}/batch/{batch}/result",
            get(v1::batch_result),
        )
        .route(
            "/services/async/{v}/job/{job}/batch/{batch}/result/{result}",
            get(v1::query_result),
        )
        .route_layer(middleware::from_fn_with_state(sb.clone(), api_guard))
        .route_layer(middleware::from_fn(to_completion));
    let router = Router::new()
        .route("/services/data", get(versions))
        .route("/services/oauth2/token", post(token))
        .route("/services/oauth2/revoke", post(revoke_post).get(revoke_get))
        .route("/services/oauth2/userinfo", get(userinfo).post(userinfo))
        .route("/id/{org}/{user}", get(identity))
        .route("/admin/counters", get(admin_counters))
        .route("/admin/reset", post(admin_reset))
        .route("/admin/faults", post(admin_faults))
        .route("/admin/clock", post(admin_clock))
        .route("/admin/expire-sessions", post(admin_expire_sessions))
        .route("/admin/empty-recycle-bin", post(admin_empty_recycle_bin))
        .route("/admin/undelete", post(admin_undelete))
        .merge(api)
        .layer(middleware::from_fn(state::error_bodies))
        .with_state(sb.clone());
    *sb.router.lock().expect("lock") = Some(router.clone());
    router
}

/// The router behind [`trim_trailing_slash`].
pub type App = tower::util::MapRequest<Router, fn(Request) -> Request>;

/// The router behind [`trim_trailing_slash`], ready to serve.
pub fn app(sb: St) -> axum::routing::IntoMakeService<App> {
    let f: fn(Request) -> Request = trim_trailing_slash;
    axum::ServiceExt::<Request>::into_make_service(tower::util::MapRequest::new(router(sb), f))
}

/// Serves on `listener` until the future is dropped.
pub async fn serve(sb: St, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, app(sb)).await
}
