//! `openapi/openapi.json` in the repository is generated from the code
//! (DESIGN §6): this test fails when it is out of date. Regenerate it with
//! `cargo run -- openapi --output openapi/openapi.json`.

use std::process::Command;

#[test]
fn the_committed_openapi_document_is_what_cepheus_openapi_prints() {
    let printed = Command::new(env!("CARGO_BIN_EXE_cepheus"))
        .arg("openapi")
        .output()
        .expect("`cepheus openapi` runs");
    assert!(
        printed.status.success(),
        "`cepheus openapi` failed: {}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let printed = String::from_utf8(printed.stdout).expect("the document is UTF-8");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    if printed != committed {
        let line = printed
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| "the length".to_owned(), |n| format!("line {}", n + 1));
        panic!(
            "openapi/openapi.json is out of date (first difference at {line}); regenerate it with\n  \
             cargo run -- openapi --output openapi/openapi.json"
        );
    }
    // The document is JSON and describes the API.
    let doc: serde_json::Value = serde_json::from_str(&committed).expect("the document is JSON");
    assert_eq!(doc["info"]["title"], "cepheus");
}
