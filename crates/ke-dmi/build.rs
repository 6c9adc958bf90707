fn main() {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .compile_protos(&["proto/api.proto"], &["proto"])
        .expect("compile proto/api.proto (needs protoc: scripts/testenv installs it)");
}
