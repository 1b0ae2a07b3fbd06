//! The OpenAPI document against the real daemon: schemathesis fuzzes every operation for a bounded number of examples, with a real staff device token.

use std::process::Command;

use kiosk_tests::kiosk::KioskDir;

use crate::devices::add_staff_device;
use crate::{BIN, ROSTER};

/// Examples per operation: enough to find a 5xx or a schema mismatch, bounded for CI.
const MAX_EXAMPLES: &str = "50";
/// A fixed seed: a failure in CI is the same failure on a laptop.
const SEED: &str = "20261123";

#[test]
fn schemathesis_finds_no_server_error_and_no_schema_mismatch() {
    let Some(schemathesis) = std::env::var_os("KIOSK_SCHEMATHESIS") else {
        panic!(
            "KIOSK_SCHEMATHESIS is not set: it names the schemathesis binary; run scripts/dev test, which installs it"
        );
    };
    let dir = KioskDir::new(BIN, "");
    let out = dir.import(ROSTER);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A staff device may do all a handheld may, and also read visits and issue cards.
    let token = add_staff_device(&dir, "fuzzer");
    let kiosk = dir.start();
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/e2e/schemathesis.toml"
    );
    let out = Command::new(&schemathesis)
        .args(["--config-file", config, "run"])
        .arg(kiosk.url("/api/v1/openapi.json"))
        .args([
            "--checks",
            "all",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            SEED,
        ])
        // The event streams never end; a fuzzer waiting for their body would hang.
        .args(["--exclude-path", "/api/v1/events"])
        .args(["--exclude-path", "/api/v1/consultants/{id}/events"])
        .args(["--generation-database", "none", "--no-color"])
        .arg("--header")
        .arg(format!("Authorization: Bearer {token}"))
        // Its files (if any) go to the kiosk's temp folder, not the source tree.
        .current_dir(dir.path())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {schemathesis:?} ({e}); run scripts/dev test, which installs it")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems (exit {:?}):\n{stdout}\n{}\nthe kiosk's log is {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr),
        dir.path().join("kiosk.log").display()
    );
    // The summary line, in the test's output for the CI log.
    if let Some(line) = stdout.lines().find(|l| l.contains("generated")) {
        println!("schemathesis: {}", line.trim());
    }
}
