//! Writes the JSON Schema files under `schemas/json/` from the Rust types.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("json");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    for (path, schema) in ledger_schemas::json_schema::all() {
        let file = dir.join(&path);
        std::fs::create_dir_all(file.parent().expect("a parent folder"))?;
        std::fs::write(&file, ledger_schemas::json_schema::render(&schema))?;
        println!("wrote schemas/json/{path}");
    }
    Ok(())
}
