//! Integration tests: the real `mailgate` binary, a fresh data directory each, real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod api;
mod api_crud;
mod browser;
mod cli;
mod disk_full;
mod flows;
mod mailtest;
mod oauth;
mod outbox;
mod serve;
mod support;
mod tokens_ui;
mod users_ui;
mod webhooks;
mod webhooks_ui;
