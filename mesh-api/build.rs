//! Compiles the gRPC protos the mesh defines itself (today: the CA service)
//! with the protoc shipped by `protoc-bin-vendored`, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    // Passed explicitly rather than through the PROTOC variable, whose
    // `set_var` is unsafe in edition 2024.
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(
            config,
            &["proto/istio/v1/auth/ca.proto"],
            &[
                "proto",
                include.to_str().ok_or("protoc include path is not UTF-8")?,
            ],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
