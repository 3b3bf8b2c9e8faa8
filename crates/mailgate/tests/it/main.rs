//! Integration tests: the real `mailgate` binary, a fresh data directory each, real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod api;
mod api_crud;
mod browser;
mod cli;
mod cli_authorize;
mod flows;
mod generic_oidc;
mod http_edge;
mod idp_egress;
mod key_file;
mod mailtest;
mod oauth;
mod outbox;
mod outbox_hardening;
mod proxy;
mod refresh_outage;
mod refused_token;
mod secret_destinations;
mod serve;
mod support;
mod tokens_ui;
mod users_ui;
mod webhooks;
mod webhooks_ui;
