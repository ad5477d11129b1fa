//! The model summary behind `ternlm inspect`: architecture, hyperparameters, tokenizer summary,
//! metadata, tensor table and totals by type, as JSON or as text.
//!
//! Arrays are summarised by element type, length, the first values and the sha256 of their payload
//! bytes as GGUF stores them, the same fingerprint `scripts/gguf_dump.py` computes with gguf-py.

use crate::gguf::{Array, Metadata, SplitSet, Value};
use crate::quant::GgmlType;
use serde_json::{json, Map, Value as Json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write;

/// How many leading array elements a summary shows.
const ARRAY_HEAD: usize = 8;

fn scalar_json(v: &Value) -> Json {
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) => json!(x),
        Value::F64(x) => json!(x),
        Value::Bool(x) => json!(x),
        Value::String(s) => json!(s),
        Value::Array(a) => array_json(a),
    }
}

/// `{type, elem_type, len, sha256, head}` for an array.
fn array_json(a: &Array) -> Json {
    let mut payload = Vec::new();
    a.encode_elements(&mut payload);
    let head: Vec<Json> = (0..a.len().min(ARRAY_HEAD))
        .filter_map(|i| a.get(i))
        .map(|v| scalar_json(&v))
        .collect();
    json!({
        "type": "ARRAY",
        "elem_type": a.elem_type().name(),
        "len": a.len(),
        "sha256": hex(&Sha256::digest(&payload)),
        "head": head,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn entry_json(key: &str, v: &Value) -> Json {
    let mut m = Map::new();
    m.insert("key".into(), json!(key));
    match v {
        Value::Array(a) => {
            if let Json::Object(o) = array_json(a) {
                m.extend(o);
            }
        }
        v => {
            m.insert("type".into(), json!(v.value_type().name()));
            m.insert("value".into(), scalar_json(v));
        }
    }
    Json::Object(m)
}

/// Tokenizer facts from `tokenizer.*` keys.
fn tokenizer_json(md: &Metadata) -> Json {
    let mut m = Map::new();
    let s = |k: &str| md.str(k).ok().flatten().map(str::to_string);
    m.insert("model".into(), json!(s("tokenizer.ggml.model")));
    m.insert("pre".into(), json!(s("tokenizer.ggml.pre")));
    let len = |k: &str| md.array(k).ok().flatten().map(Array::len);
    m.insert("vocab_size".into(), json!(len("tokenizer.ggml.tokens")));
    m.insert("merges".into(), json!(len("tokenizer.ggml.merges")));
    for id in [
        "bos", "eos", "eot", "eom", "unknown", "padding", "sep", "cls", "mask",
    ] {
        let key = format!("tokenizer.ggml.{id}_token_id");
        if let Ok(Some(v)) = md.int::<i64>(&key) {
            m.insert(format!("{id}_token_id"), json!(v));
        }
    }
    for flag in ["add_bos_token", "add_eos_token", "add_space_prefix"] {
        if let Ok(Some(b)) = md.bool(&format!("tokenizer.ggml.{flag}")) {
            m.insert(flag.into(), json!(b));
        }
    }
    m.insert(
        "chat_template".into(),
        json!(md.get("tokenizer.chat_template").is_some()),
    );
    Json::Object(m)
}

/// The whole summary as JSON.
pub fn summary(set: &SplitSet) -> Json {
    let md = set.metadata();
    let arch = md.architecture().ok().map(str::to_string);
    let mut hparams = Map::new();
    if let Some(a) = &arch {
        let prefix = format!("{a}.");
        for (k, v) in md.iter() {
            if let Some(name) = k.strip_prefix(&prefix) {
                hparams.insert(name.into(), scalar_json(v));
            }
        }
    }
    let files: Vec<Json> = set
        .parts
        .iter()
        .map(|p| {
            json!({
                "version": p.header.version,
                "alignment": p.header.alignment,
                "data_offset": p.header.data_offset,
                "file_len": p.file_len,
                "tensor_count": p.header.tensors.len(),
                "kv_count": p.header.metadata.len(),
            })
        })
        .collect();
    let mut totals: BTreeMap<GgmlType, (u64, u64, u64)> = BTreeMap::new();
    let tensors: Vec<Json> = set
        .tensor_infos()
        .map(|(part, t)| {
            let e = totals.entry(t.ty).or_default();
            *e = (e.0 + 1, e.1 + t.n_bytes, e.2 + t.n_elements());
            json!({
                "name": t.name, "shape": t.ne, "type": t.ty.to_string(), "type_id": t.ty as u32,
                "offset": t.offset, "n_bytes": t.n_bytes, "file": part,
            })
        })
        .collect();
    let totals_json: Vec<Json> = totals
        .iter()
        .map(|(ty, (n, bytes, params))| json!({"type": ty.to_string(), "tensors": n, "bytes": bytes, "params": params}))
        .collect();
    json!({
        "architecture": arch,
        "name": md.str("general.name").ok().flatten(),
        "files": files,
        "hyperparameters": hparams,
        "tokenizer": tokenizer_json(md),
        "metadata": md.iter().map(|(k, v)| entry_json(k, v)).collect::<Vec<_>>(),
        "tensors": tensors,
        "totals": totals_json,
        "total_bytes": totals.values().map(|t| t.1).sum::<u64>(),
        "total_params": totals.values().map(|t| t.2).sum::<u64>(),
    })
}

fn short(v: &Json) -> String {
    match v {
        Json::String(s) if s.len() > 60 => {
            format!("{:?}… ({} bytes)", &s[..s.floor_char_boundary(60)], s.len())
        }
        Json::Object(o) if o.get("type") == Some(&json!("ARRAY")) => {
            format!(
                "[{}; {}] {}",
                o["elem_type"].as_str().unwrap_or("?"),
                o["len"],
                o["head"]
            )
        }
        v => v.to_string(),
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = b as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < UNITS.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{x:.2} {}", UNITS[u])
    }
}

/// The summary as text for a terminal.
pub fn render_text(s: &Json) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "architecture: {}",
        s["architecture"].as_str().unwrap_or("(none)")
    );
    if let Some(n) = s["name"].as_str() {
        let _ = writeln!(w, "name: {n}");
    }
    for (i, f) in s["files"].as_array().into_iter().flatten().enumerate() {
        let _ = writeln!(
            w,
            "file {i}: GGUF v{}, {} tensors, {} metadata keys, alignment {}, data at {}, {}",
            f["version"],
            f["tensor_count"],
            f["kv_count"],
            f["alignment"],
            f["data_offset"],
            human_bytes(f["file_len"].as_u64().unwrap_or(0))
        );
    }
    let _ = writeln!(w, "\nhyperparameters:");
    for (k, v) in s["hyperparameters"].as_object().into_iter().flatten() {
        let _ = writeln!(w, "  {k:<40} {}", short(v));
    }
    let _ = writeln!(w, "\ntokenizer:");
    for (k, v) in s["tokenizer"].as_object().into_iter().flatten() {
        let _ = writeln!(w, "  {k:<40} {v}");
    }
    let _ = writeln!(w, "\ntensors:");
    let _ = writeln!(
        w,
        "  {:<40} {:>24} {:>8} {:>12}",
        "name", "shape", "type", "bytes"
    );
    for t in s["tensors"].as_array().into_iter().flatten() {
        let shape: Vec<String> = t["shape"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| d.to_string())
            .collect();
        let _ = writeln!(
            w,
            "  {:<40} {:>24} {:>8} {:>12}",
            t["name"].as_str().unwrap_or(""),
            shape.join(" x "),
            t["type"].as_str().unwrap_or(""),
            t["n_bytes"]
        );
    }
    let _ = writeln!(w, "\ntotals by type:");
    for t in s["totals"].as_array().into_iter().flatten() {
        let _ = writeln!(
            w,
            "  {:<8} {:>5} tensors {:>14} params {:>12}",
            t["type"].as_str().unwrap_or(""),
            t["tensors"],
            t["params"],
            human_bytes(t["bytes"].as_u64().unwrap_or(0))
        );
    }
    let _ = writeln!(
        w,
        "  {:<8} {:>5} tensors {:>14} params {:>12}",
        "all",
        s["tensors"].as_array().map_or(0, Vec::len),
        s["total_params"],
        human_bytes(s["total_bytes"].as_u64().unwrap_or(0))
    );
    out
}
