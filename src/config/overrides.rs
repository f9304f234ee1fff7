//! What overrides the file: `AUTHGATE_*` environment variables, then command-line flags
//! (file < environment < flags), applied to the raw config before validation.

use std::collections::HashMap;

use super::raw::{RawConfig, RawIssuer};

/// Values from the command line or environment that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--issuer` (repeatable): replaces the file's issuers, each with discovery.
    pub issuers: Vec<String>,
    /// `--audience` (repeatable): replaces the file's audiences.
    pub audiences: Vec<String>,
    /// `--http-listen`.
    pub http_listen: Option<String>,
    /// `--grpc-listen`.
    pub grpc_listen: Option<String>,
    /// `--admin-listen`.
    pub admin_listen: Option<String>,
    /// `--log-format`.
    pub log_format: Option<String>,
}

impl Overrides {
    /// Reads the `AUTHGATE_*` variables from an environment map. List values are
    /// comma-separated (`AUTHGATE_ISSUER=https://a,https://b`).
    pub fn from_env(env: &HashMap<String, String>) -> Self {
        let list = |name: &str| {
            env.get(name)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let one = |name: &str| env.get(name).filter(|v| !v.is_empty()).cloned();
        Self {
            issuers: list("AUTHGATE_ISSUER"),
            audiences: list("AUTHGATE_AUDIENCE"),
            http_listen: one("AUTHGATE_HTTP_LISTEN"),
            grpc_listen: one("AUTHGATE_GRPC_LISTEN"),
            admin_listen: one("AUTHGATE_ADMIN_LISTEN"),
            log_format: one("AUTHGATE_LOG_FORMAT"),
        }
    }

    /// Applies these overrides to a raw config.
    pub fn apply(&self, raw: &mut RawConfig) {
        if !self.issuers.is_empty() {
            raw.issuers = self
                .issuers
                .iter()
                .map(|issuer| RawIssuer {
                    issuer: Some(issuer.clone()),
                    ..RawIssuer::default()
                })
                .collect();
        }
        if !self.audiences.is_empty() {
            raw.audiences = self.audiences.clone();
        }
        if let Some(v) = &self.http_listen {
            raw.listen.http = Some(v.clone());
        }
        if let Some(v) = &self.grpc_listen {
            raw.listen.grpc = Some(v.clone());
        }
        if let Some(v) = &self.admin_listen {
            raw.listen.admin = Some(v.clone());
        }
        if let Some(v) = &self.log_format {
            raw.log.format = Some(v.clone());
        }
    }
}
