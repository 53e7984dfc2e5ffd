//! Compiles the test gRPC service (`proto/echo.proto`) with protoc, which `scripts/setup.sh` installs.

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=proto/echo.proto");
    tonic_prost_build::compile_protos("proto/echo.proto")
}
