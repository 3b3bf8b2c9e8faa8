#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser;
mod idp;
mod postgres;
mod rig;
