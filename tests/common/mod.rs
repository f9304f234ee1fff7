//! Shared harness of the integration tests: a controllable test IdP, the authgate app on
//! bound `127.0.0.1:0` listeners, and Envoy's Check requests.
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
pub(crate) mod dpop;
pub(crate) mod envoy;
pub(crate) mod idp;
pub(crate) mod metrics;
