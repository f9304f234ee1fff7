//! Build script: compiles `proto/authgate/v1` with a pure-Rust protobuf compiler (protox, so no
//! `protoc` needs to be installed), writes the descriptor sets that gRPC server reflection
//! serves (authgate's own API and Envoy's ext_authz service, from the `.proto` files kept in
//! `proto/third_party/envoy`), and stamps the git commit for `/version` and the build-info
//! metric. It runs no cargo subcommand and needs no network: everything it reads is in the
//! repository.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=proto");

    let fds = protox::compile(["authgate/v1/token_service.proto"], ["proto"])?;
    std::fs::write(
        out_dir.join("authgate_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // One set of well-known types: the ones envoy-types already compiled, so a claims Struct
        // is the same Rust type in TokenService answers and in ext_authz dynamic metadata.
        .extern_path(
            ".google.protobuf.Struct",
            "::envoy_types::pb::google::protobuf::Struct",
        )
        .compile_fds(fds)?;

    write_envoy_descriptors(&out_dir)?;
    stamp_git_commit();
    Ok(())
}

/// Envoy's ext_authz descriptors for reflection, from the `.proto` files kept in
/// `proto/third_party/envoy` (copied from the envoy-types crate whose Rust types authgate uses;
/// see the README there). A missing or broken file fails the build: reflection without ext_authz
/// would be a silently broken binary.
fn write_envoy_descriptors(out_dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new("proto/third_party/envoy");
    let fds = protox::compile([ENVOY_EXT_AUTHZ_PROTO], [root]).map_err(|error| {
        format!(
            "cannot compile Envoy's ext_authz protos from {} for gRPC reflection: {error} \
             (proto/third_party/envoy/README.md says where the files come from)",
            root.display()
        )
    })?;
    std::fs::write(
        out_dir.join("envoy_ext_authz_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    Ok(())
}

/// The service file; protox follows its imports.
const ENVOY_EXT_AUTHZ_PROTO: &str = "envoy/service/auth/v3/external_auth.proto";

fn stamp_git_commit() {
    // Builds without .git (a Docker context) pass the commit in: --build-arg AUTHGATE_GIT_COMMIT.
    println!("cargo:rerun-if-env-changed=AUTHGATE_GIT_COMMIT");
    if let Ok(commit) = std::env::var("AUTHGATE_GIT_COMMIT")
        && !commit.trim().is_empty()
    {
        println!("cargo:rustc-env=AUTHGATE_GIT_COMMIT={}", commit.trim());
        return;
    }
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=AUTHGATE_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}
