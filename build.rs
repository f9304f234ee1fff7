//! Build script: compiles `proto/authgate/v1` with a pure-Rust protobuf compiler (protox, so no
//! `protoc` needs to be installed), writes the descriptor sets that gRPC server reflection
//! serves (authgate's own API and Envoy's ext_authz service, whose `.proto` files ship inside the
//! `envoy-types` crate), and stamps the git commit for `/version` and the build-info metric.

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

/// Envoy's ext_authz descriptors for reflection. envoy-types ships its `.proto` files; cargo
/// knows where that package lives. If it cannot be found, reflection still serves authgate's
/// own services and the build says why.
fn write_envoy_descriptors(out_dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let target = out_dir.join("envoy_ext_authz_descriptor.bin");
    match envoy_proto_root() {
        Some(root) => {
            let includes = [
                "data-plane-api",
                "googleapis",
                "xds",
                "protoc-gen-validate",
                "cel-spec/proto",
                "opentelemetry-proto",
                "client_model",
            ]
            .map(|dir| root.join(dir));
            let fds = protox::compile(["envoy/service/auth/v3/external_auth.proto"], includes)?;
            std::fs::write(&target, prost::Message::encode_to_vec(&fds))?;
        }
        None => {
            println!(
                "cargo:warning=envoy-types protos not found: gRPC reflection will not list ext_authz"
            );
            std::fs::write(&target, [])?;
        }
    }
    Ok(())
}

fn envoy_proto_root() -> Option<PathBuf> {
    let cargo = std::env::var("CARGO").ok()?;
    let manifest = Path::new(&std::env::var("CARGO_MANIFEST_DIR").ok()?).join("Cargo.toml");
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let manifest_path = metadata["packages"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == "envoy-types")?["manifest_path"]
        .as_str()?
        .to_owned();
    let root = Path::new(&manifest_path).parent()?.join("proto");
    root.join("data-plane-api/envoy/service/auth/v3/external_auth.proto")
        .is_file()
        .then_some(root)
}

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
