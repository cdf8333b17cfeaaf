//! POLICY.md must show the table the code runs.

#[test]
fn policy_md_contains_the_table_the_code_runs() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../POLICY.md"))
        .expect("POLICY.md");
    let table = signaalpoort_core::policy::policy_table_markdown();
    assert!(
        doc.contains(&table),
        "POLICY.md is out of date: run `cargo run -p signaalpoort -- policy` and paste the table:\n{table}"
    );
}
