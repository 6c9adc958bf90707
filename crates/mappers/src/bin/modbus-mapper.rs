//! A KubeEdge mapper for Modbus TCP devices (protocol `modbus`).

fn main() -> std::process::ExitCode {
    mappers::cli::main(std::sync::Arc::new(mappers::modbus::ModbusDriver))
}
