use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // A protoc on PATH or in $PROTOC wins; otherwise the vendored one, so a fresh
    // machine builds without installing anything.
    if env::var_os("PROTOC").is_none() && which_protoc().is_none() {
        env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    let protos = [
        "shoal/v1/common.proto",
        "shoal/v1/tracker.proto",
        "shoal/v1/peer.proto",
        "shoal/v1/webserver.proto",
    ];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("shoal_descriptor.bin"))
        // Chunk payloads stay `Bytes` end to end: no copy between tonic and disk.
        .bytes(".")
        .compile_protos(&protos, &["."])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}

fn which_protoc() -> Option<PathBuf> {
    env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|p| p.join("protoc"))
            .find(|p| p.is_file())
    })
}
