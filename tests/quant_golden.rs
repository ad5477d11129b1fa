//! Golden vectors for every weight codec, produced by `scripts/gen_quant_golden.py` from gguf-py
//! (llama.cpp's reference dequantizers ported to numpy) and, for I2_S, from the spec in numpy.
//! See `tests/data/quant/manifest.json` for the files, shapes and generator versions.
//!
//! Decoding must be bit-exact (NaN matches any NaN); dot products must match the f64 dot of the
//! expected values within a relative bound; the ternary reference quantizers must reproduce the
//! reference bytes; the T2R repack must decode to the same bits as the source format.

use std::path::PathBuf;

use serde_json::Value;
use ternlm::quant::ternary::{quantize_i2_s, quantize_tq1_0, quantize_tq2_0};
use ternlm::quant::{GgmlType, T2r, TensorView};

/// Relative dot-product bound: |dot − ref| ≤ DOT_REL · Σ|w·x|.
const DOT_REL: f64 = 2e-6;

struct Set {
    stem: String,
    ty: GgmlType,
    ne: Vec<u64>,
    role: String,
    q: Vec<u8>,
    f: Vec<f32>,
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/quant")
}

fn type_by_name(name: &str) -> GgmlType {
    *GgmlType::ALL
        .iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("unknown type {name}"))
}

fn load() -> Vec<Set> {
    let dir = data_dir();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
            .expect("json");
    let files = manifest["files"].as_array().expect("files");
    files
        .iter()
        .map(|f| {
            let stem = f["stem"].as_str().unwrap().to_string();
            let q = std::fs::read(dir.join(format!("{stem}.q"))).unwrap();
            let fb = std::fs::read(dir.join(format!("{stem}.f32"))).unwrap();
            assert_eq!(
                q.len() as u64,
                f["q_bytes"].as_u64().unwrap(),
                "{stem}.q size"
            );
            let f32s: Vec<f32> = fb
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            assert_eq!(
                f32s.len() as u64,
                f["values"].as_u64().unwrap(),
                "{stem}.f32 size"
            );
            Set {
                ty: type_by_name(f["type"].as_str().unwrap()),
                ne: f["ne"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect(),
                role: f["role"].as_str().unwrap().to_string(),
                stem,
                q,
                f: f32s,
            }
        })
        .collect()
}

fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn assert_bits(stem: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{stem}: length");
    let bad: Vec<usize> = (0..got.len()).filter(|&i| !same(got[i], want[i])).collect();
    assert!(
        bad.is_empty(),
        "{stem}: {} of {} values differ, first at {}: got {:e} ({:#010x}) want {:e} ({:#010x})",
        bad.len(),
        got.len(),
        bad[0],
        got[bad[0]],
        got[bad[0]].to_bits(),
        want[bad[0]],
        want[bad[0]].to_bits()
    );
}

fn decode_sets() -> impl Iterator<Item = Set> {
    load()
        .into_iter()
        .filter(|s| s.role == "decode" || s.role == "special")
}

#[test]
fn golden_covers_every_supported_type() {
    let sets = load();
    for &ty in GgmlType::ALL.iter().filter(|t| t.is_supported()) {
        for role in ["decode", "special"] {
            assert!(
                sets.iter().any(|s| s.ty == ty && s.role == role),
                "no {role} set for {ty}"
            );
        }
    }
    for ty in [GgmlType::TQ1_0, GgmlType::TQ2_0, GgmlType::I2_S] {
        assert!(
            sets.iter().any(|s| s.ty == ty && s.role == "quantize"),
            "no quantize set for {ty}"
        );
    }
}

#[test]
fn golden_decode_is_bit_exact() {
    for s in decode_sets() {
        let view = TensorView::new(&s.stem, s.ty, &s.ne, &s.q).unwrap();
        assert_bits(&s.stem, &view.dequantize().unwrap(), &s.f);
        // The free row codec agrees with the view, row by row.
        if s.ty != GgmlType::I2_S {
            let mut row = vec![0f32; view.ncols()];
            for r in 0..view.nrows() {
                ternlm::quant::dequantize_row(s.ty, view.row_bytes(r), &mut row).unwrap();
                assert_bits(
                    &s.stem,
                    &row,
                    &s.f[r * view.ncols()..(r + 1) * view.ncols()],
                );
            }
        }
    }
}

#[test]
fn golden_dot_matches_dequantized_dot() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let mut worst = 0f64;
    for s in decode_sets().filter(|s| s.role == "decode") {
        let view = TensorView::new(&s.stem, s.ty, &s.ne, &s.q).unwrap();
        let n = view.ncols();
        for r in 0..view.nrows() {
            let x: Vec<f32> = (0..n).map(|_| rand()).collect();
            let w = &s.f[r * n..(r + 1) * n];
            let reference: f64 = w.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
            let scale: f64 = w
                .iter()
                .zip(&x)
                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                .sum();
            let got = view.dot_row(r, &x).unwrap() as f64;
            let err = (got - reference).abs();
            assert!(
                err <= DOT_REL * scale + 1e-30,
                "{} row {r}: dot {got} vs {reference} (error {err:e}, Σ|w·x| {scale:e})",
                s.stem
            );
            if scale > 0.0 {
                worst = worst.max(err / scale);
            }
        }
    }
    eprintln!("worst relative dot error: {worst:e} (bound {DOT_REL:e})");
}

#[test]
fn golden_quantizers_match_reference() {
    for s in load().into_iter().filter(|s| s.role == "quantize") {
        let got = match s.ty {
            GgmlType::TQ1_0 => quantize_tq1_0(&s.f),
            GgmlType::TQ2_0 => quantize_tq2_0(&s.f),
            GgmlType::I2_S => quantize_i2_s(&s.f),
            other => panic!("no quantizer for {other}"),
        };
        assert_eq!(got.len(), s.q.len(), "{}", s.stem);
        let first = got.iter().zip(&s.q).position(|(a, b)| a != b);
        assert!(
            first.is_none(),
            "{}: bytes differ first at {first:?}",
            s.stem
        );
        TensorView::new(&s.stem, s.ty, &s.ne, &s.q).unwrap();
    }
}

#[test]
fn golden_t2r_decodes_like_the_source() {
    for s in decode_sets().filter(|s| s.ty.is_ternary()) {
        let view = TensorView::new(&s.stem, s.ty, &s.ne, &s.q).unwrap();
        let m = T2r::from_tensor(&view).unwrap();
        let mut row = vec![0f32; m.k];
        for r in 0..m.rows {
            m.dequantize_row(r, &mut row).unwrap();
            assert_bits(&s.stem, &row, &s.f[r * m.k..(r + 1) * m.k]);
        }
    }
}
