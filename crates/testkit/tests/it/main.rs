#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser;
mod date_skew;
mod idp;
mod postgres;
mod rig;
