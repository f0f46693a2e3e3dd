//! concord's integration tests: one test binary (as ripgrep does), one module per area, so
//! the workspace links the test code once. Run one area with `cargo test --test tests AREA::`.

mod common;
mod compliance;
mod sf_common;

mod bundles;
mod bundles_cli;
mod cli;
mod config_options;
mod connector_compliance;
mod console_browser;
mod crash_patterns;
mod engine;
mod files_connector;
mod fuzz_replay;
mod model_based;
mod northwind;
mod patterns_e2e;
mod patterns_engine;
mod patterns_servers;
mod properties;
mod reconcile;
mod safety;
mod salesforce_bulk_auth;
mod salesforce_children;
mod salesforce_connector;
mod salesforce_fixtures;
mod sandbox_auth_tls_data;
mod sandbox_bulk;
mod sandbox_bulk_v1;
mod sandbox_http;
mod serve;
mod sled_crash;
mod standard_clients;
mod streaming;
