use std::path::Path;

use ke_testkit::cli_contract::{Typo, check};

#[test]
fn command_line_contract() {
    check(
        Path::new(env!("CARGO_BIN_EXE_cloudcore")),
        "cloudcore",
        &Typo {
            field: "keepaliveInterval:",
            misspelling: "keepaliveIntervall:",
            expected_path: "modules.cloudHub.keepaliveIntervall",
        },
    );
}
