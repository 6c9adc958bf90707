use std::path::Path;

use ke_testkit::cli_contract::{Typo, check};

#[test]
fn command_line_contract() {
    check(
        Path::new(env!("CARGO_BIN_EXE_edgecore")),
        "edgecore",
        &Typo {
            field: "heartbeat:",
            misspelling: "heartbeet:",
            expected_path: "modules.edgeHub.heartbeet",
        },
        str::to_owned,
    );
}
