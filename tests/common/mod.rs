//! Shared harness of the integration tests: a controllable test IdP and the authgate app on
//! bound `127.0.0.1:0` listeners.
#![allow(
    dead_code,
    reason = "each test crate uses a different part of the harness"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test harness: failing loudly is the point"
)]

pub(crate) mod app;
pub(crate) mod idp;
