//! The engine's integration tests: one binary (docs/testing.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod engine_clock;
