//! Test-only support for mailgate: the identity-provider emulator (`idp`) and the mail rig.

pub mod browser;
pub mod idp;
pub mod postgres;
pub mod raw;
pub mod rig;
pub mod tmpfs;
