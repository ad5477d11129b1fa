//! The WGSL sources and their preprocessor (STYLE.md practice 7): `#include "file"`,
//! `#define NAME value`, `#ifdef`/`#ifndef`/`#if NAME`/`#else`/`#endif`, and whole-word
//! substitution of defined names. Nothing more.
//!
//! Every kernel is built with a per-target preamble: `enable f16;` and `HAS_F16` when the device
//! uses `shader-f16`, `HAS_SUBGROUPS` when it uses subgroup operations (naga rejects
//! `enable subgroups;`, so natively the builtins are used without it; the browser never gets
//! subgroups through wgpu — platform.md §2). Set `TERNLM_DUMP_WGSL=dir` (native) to write every
//! final source there.

use super::context::GpuContext;
use crate::error::{GpuError, Result};

/// The shader files, by name (`shaders/<name>.wgsl`).
const SOURCES: &[(&str, &str)] = &[
    ("common", include_str!("../../../shaders/common.wgsl")),
    (
        "elementwise",
        include_str!("../../../shaders/elementwise.wgsl"),
    ),
    ("rms_norm", include_str!("../../../shaders/rms_norm.wgsl")),
    ("dequant", include_str!("../../../shaders/dequant.wgsl")),
    ("matmul", include_str!("../../../shaders/matmul.wgsl")),
    ("gemm", include_str!("../../../shaders/gemm.wgsl")),
    (
        "gemm_reduce",
        include_str!("../../../shaders/gemm_reduce.wgsl"),
    ),
    ("kv", include_str!("../../../shaders/kv.wgsl")),
    ("gemv", include_str!("../../../shaders/gemv.wgsl")),
    ("rope_pair", include_str!("../../../shaders/rope_pair.wgsl")),
    ("rope", include_str!("../../../shaders/rope.wgsl")),
    ("attention", include_str!("../../../shaders/attention.wgsl")),
    (
        "attention_prefill",
        include_str!("../../../shaders/attention_prefill.wgsl"),
    ),
    ("argmax", include_str!("../../../shaders/argmax.wgsl")),
    ("topk", include_str!("../../../shaders/topk.wgsl")),
];

/// The source of shader `name`.
pub fn source(name: &str) -> Option<&'static str> {
    SOURCES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Preprocessor definitions, sorted by name so that equal sets compare and hash equal. Names
/// are static (shader sources and the ops' literals): building a kernel's set per dispatch
/// allocates only its values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Defines(Vec<(&'static str, String)>);

impl Defines {
    pub fn set(&mut self, name: &'static str, value: String) {
        match self.0.binary_search_by(|(n, _)| n.cmp(&name)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (name, value)),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| *n != name);
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// ` A=1 B=2` for pipeline labels (empty when none).
    pub fn label(&self) -> String {
        self.0.iter().map(|(k, v)| format!(" {k}={v}")).collect()
    }
}

/// The final WGSL of `shader` for this device.
pub fn build(shader: &str, defines: &Defines, ctx: &GpuContext) -> Result<String> {
    let mut d = defines.clone();
    let mut out = String::new();
    if ctx.f16 {
        out.push_str("enable f16;\n");
        d.set("HAS_F16", "1".into());
    }
    if ctx.subgroups {
        d.set("HAS_SUBGROUPS", "1".into());
    }
    out.push_str(&preprocess(shader, &mut d)?);
    #[cfg(not(target_arch = "wasm32"))]
    if let Ok(dir) = std::env::var("TERNLM_DUMP_WGSL") {
        let name = format!("{shader}{}.wgsl", d.label().replace([' ', '='], "_"));
        let _ = std::fs::write(std::path::Path::new(&dir).join(name), &out);
    }
    Ok(out)
}

/// Expands `shader` with `defines` (which `#define` lines extend).
pub fn preprocess(shader: &str, defines: &mut Defines) -> Result<String> {
    let mut out = String::new();
    expand(shader, defines, &mut out, 0)?;
    Ok(out)
}

fn bad(shader: &str, line: usize, msg: &str) -> crate::error::Error {
    GpuError::Validation(format!("shaders/{shader}.wgsl:{}: {msg}", line + 1)).into()
}

fn expand(shader: &str, d: &mut Defines, out: &mut String, depth: usize) -> Result<()> {
    if depth > 8 {
        return Err(bad(shader, 0, "#include nested too deeply"));
    }
    let src = source(shader).ok_or_else(|| bad(shader, 0, "no such shader"))?;
    // Each open #if: (this branch is active, some branch was taken, the parent is active).
    let mut stack: Vec<(bool, bool, bool)> = Vec::new();
    let active = |s: &[(bool, bool, bool)]| s.last().is_none_or(|t| t.0);
    for (ln, line) in src.lines().enumerate() {
        let t = line.trim_start();
        let mut words = t.split_whitespace();
        match words.next() {
            Some("#ifdef") | Some("#ifndef") | Some("#if") => {
                let kw = t.split_whitespace().next().unwrap_or_default();
                let name = words
                    .next()
                    .ok_or_else(|| bad(shader, ln, "missing name"))?;
                let v = d.get(name);
                let cond = match kw {
                    "#ifdef" => v.is_some(),
                    "#ifndef" => v.is_none(),
                    _ => v.is_some_and(|v| v != "0"),
                };
                let parent = active(&stack);
                stack.push((parent && cond, cond, parent));
            }
            Some("#else") => {
                let top = stack
                    .last_mut()
                    .ok_or_else(|| bad(shader, ln, "#else without #if"))?;
                top.0 = top.2 && !top.1;
                top.1 = true;
            }
            Some("#endif") => {
                stack
                    .pop()
                    .ok_or_else(|| bad(shader, ln, "#endif without #if"))?;
            }
            Some("#define") if active(&stack) => {
                let name = words
                    .next()
                    .ok_or_else(|| bad(shader, ln, "missing name"))?;
                let value: Vec<&str> = words.collect();
                d.set(name, value.join(" "));
            }
            Some("#include") if active(&stack) => {
                let name = t["#include".len()..].trim().trim_matches('"');
                expand(name.trim_end_matches(".wgsl"), d, out, depth + 1)?;
            }
            Some(w) if w.starts_with('#') && !active(&stack) => {}
            Some(w) if w.starts_with('#') && w != "#define" && w != "#include" => {
                return Err(bad(shader, ln, &format!("unknown directive {w}")));
            }
            _ if active(&stack) => {
                substitute(line, d, out);
                out.push('\n');
            }
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(bad(shader, 0, "#if without #endif"));
    }
    Ok(())
}

/// Copies `line` replacing whole-word occurrences of defined names by their values.
fn substitute(line: &str, d: &Defines, out: &mut String) {
    let b = line.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        if word(b[i]) {
            let s = i;
            while i < b.len() && word(b[i]) {
                i += 1;
            }
            let w = &line[s..i];
            out.push_str(d.get(w).unwrap_or(w));
        } else {
            let s = i;
            while i < b.len() && !word(b[i]) {
                i += 1;
            }
            out.push_str(&line[s..i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditionals_defines_and_substitution() {
        let mut d = Defines::default();
        d.set("MATMUL", "1".into());
        d.set("TYPE_Q4_1", "1".into());
        let s = preprocess("matmul", &mut d).unwrap();
        assert!(
            s.lines().all(|l| !l.trim_start().starts_with('#')),
            "directives are consumed"
        );
        let dq = s.lines().filter(|l| l.starts_with("fn dq(")).count();
        assert_eq!(dq, 1, "one type section");
        assert!(s.contains("fn matmul(") && !s.contains("fn embed("));
        assert!(s.contains("fn flat_group("), "#include");
    }

    #[test]
    fn nesting_and_errors() {
        let mut d = Defines::default();
        d.set("A", "1".into());
        let mut out = String::new();
        substitute("x = A + AB + A_1 + (A);", &d, &mut out);
        assert_eq!(out, "x = 1 + AB + A_1 + (1);");
        assert!(preprocess("no_such_shader", &mut d).is_err());
    }
}
