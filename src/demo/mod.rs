//! The `authgate demo` pieces: an embedded OIDC issuer and the key/signing helpers it and the tests use.

pub mod issuer;
pub mod signing;

pub use issuer::{DemoError, DemoIssuer, IssuerOptions};
pub use signing::{SigningError, SigningKey};
