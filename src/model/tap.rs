//! Named taps: the decoder's intermediates under llama.cpp's `llama-eval-callback` names
//! (`attn_norm-0`, `Qcur-0`, `kqv_out-0`, `ffn_out-0`, `l_out-0`, `result_norm`, …) so a debug
//! run can be compared with llama.cpp's dump (STYLE.md practice 10).
//!
//! Two ways in: [`super::Model::forward_with_tap`] with a callback, or the environment variable
//! `TERNLM_TAP` (native only) holding a comma-separated list of names or prefixes (`*` for all),
//! which prints a summary of each matching tensor to stderr in the callback's layout: shape in
//! ggml order `[cols, rows]`, the first and last 3 values of the first and last rows, and the
//! sum.

/// One intermediate tensor.
#[derive(Debug, Clone, Copy)]
pub struct TapEvent<'a> {
    /// `name-layer` or a bare name for the non-layer tensors (`inp_scaled`, `result_norm`).
    pub name: &'a str,
    pub rows: usize,
    pub cols: usize,
    /// Row-major `[rows][cols]`.
    pub data: &'a [f32],
}

/// A filter of tap names: empty = none, `*` = all, else exact names or prefixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TapFilter(Vec<String>);

impl TapFilter {
    pub fn parse(spec: &str) -> TapFilter {
        TapFilter(
            spec.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        )
    }

    /// The filter from `TERNLM_TAP` (native only; `None` when unset or empty).
    pub fn from_env() -> Option<TapFilter> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let f = TapFilter::parse(&std::env::var("TERNLM_TAP").ok()?);
            (!f.0.is_empty()).then_some(f)
        }
        #[cfg(target_arch = "wasm32")]
        None
    }

    pub fn matches(&self, name: &str) -> bool {
        self.0
            .iter()
            .any(|p| p == "*" || name == p || name.starts_with(p.as_str()))
    }
}

/// A summary in the spirit of `llama-eval-callback`.
pub fn format_event(e: &TapEvent) -> String {
    use std::fmt::Write;
    let mut s = format!("ggml_debug: {} = (f32) [{}, {}]\n", e.name, e.cols, e.rows);
    let show = |s: &mut String, row: &[f32]| {
        let n = row.len();
        let head: Vec<String> = row.iter().take(3).map(|v| format!("{v:12.4}")).collect();
        if n > 6 {
            let tail: Vec<String> = row[n - 3..].iter().map(|v| format!("{v:12.4}")).collect();
            let _ = writeln!(s, "  [{}, ..., {}]", head.join(", "), tail.join(", "));
        } else {
            let all: Vec<String> = row.iter().map(|v| format!("{v:12.4}")).collect();
            let _ = writeln!(s, "  [{}]", all.join(", "));
        }
    };
    if e.cols > 0 && e.rows > 0 {
        show(&mut s, &e.data[..e.cols]);
        if e.rows > 1 {
            if e.rows > 2 {
                s.push_str("  ...\n");
            }
            show(&mut s, &e.data[(e.rows - 1) * e.cols..]);
        }
    }
    let sum: f64 = e.data.iter().map(|&v| v as f64).sum();
    let _ = writeln!(s, "  sum = {sum:.6}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_and_format() {
        let f = TapFilter::parse("attn_norm-0, Qcur");
        assert!(f.matches("attn_norm-0") && f.matches("Qcur-12"));
        assert!(!f.matches("attn_norm-1") && !f.matches("Kcur-0"));
        assert!(TapFilter::parse("*").matches("anything"));
        assert!(!TapFilter::parse("").matches("x"));
        let e = TapEvent {
            name: "l_out-1",
            rows: 2,
            cols: 2,
            data: &[1.0, 2.0, 3.0, 4.0],
        };
        let s = format_event(&e);
        assert!(s.starts_with("ggml_debug: l_out-1 = (f32) [2, 2]"));
        assert!(s.contains("sum = 10.000000"));
    }
}
