//! A KubeEdge mapper for virtual devices (protocol `virtual`), for demos and tests.

fn main() -> std::process::ExitCode {
    mappers::cli::main(std::sync::Arc::new(mappers::virtual_device::VirtualDriver))
}
