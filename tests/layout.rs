//! The web build contract (wasm-pack.toml) stays in step with what wasm-pack itself reads
//! ([package.metadata.wasm-pack] in Cargo.toml).

fn wasm_opt_line(path: &str) -> String {
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("wasm-opt"))
        .collect();
    assert_eq!(lines.len(), 1, "{path}: exactly one wasm-opt line");
    lines[0].split_once('=').unwrap().1.trim().to_string()
}

#[test]
fn wasm_opt_flags_agree() {
    assert_eq!(wasm_opt_line("wasm-pack.toml"), wasm_opt_line("Cargo.toml"));
}
