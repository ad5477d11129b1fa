//! Temporary development check (removed before hand-off).
use ternlm::model::{LogitsFor, Model};

#[test]
fn dev_compare() {
    let Ok(m) = std::env::var("DEV_MODEL") else {
        return;
    };
    let toks: Vec<u32> = std::env::var("DEV_TOKENS")
        .unwrap()
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let gold: Vec<f32> = std::fs::read(std::env::var("DEV_GOLDEN").unwrap())
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let mut model = Model::from_file(std::path::Path::new(&m)).unwrap();
    if std::env::var("DEV_REF").is_ok() {
        model.set_kernel(ternlm::backend::cpu::Kernel::Reference);
    }
    let mut cache = model.new_cache(4096);
    let t = std::time::Instant::now();
    let got = model.forward(&mut cache, &toks, LogitsFor::All).unwrap();
    eprintln!("forward {:?}", t.elapsed());
    let v = model.spec().n_vocab;
    assert_eq!(got.len(), gold.len());
    let (mut num, mut den) = (0f64, 0f64);
    let mut agree = 0;
    for p in 0..toks.len() {
        let (a, b) = (&got[p * v..(p + 1) * v], &gold[p * v..(p + 1) * v]);
        let (mut n1, mut d1) = (0f64, 0f64);
        for i in 0..v {
            let e = (a[i] - b[i]) as f64;
            n1 += e * e;
            d1 += (b[i] as f64).powi(2);
        }
        num += n1;
        den += d1;
        let am = |x: &[f32]| {
            x.iter()
                .enumerate()
                .fold((0, f32::MIN), |m, (i, &v)| if v > m.1 { (i, v) } else { m })
                .0
        };
        if am(a) == am(b) {
            agree += 1;
        }
        if p < 3 || p + 1 == toks.len() || n1 / d1 > 1e-9 {
            eprintln!("pos {p}: nmse {:.3e} argmax {} {}", n1 / d1, am(a), am(b));
        }
    }
    eprintln!("NMSE {:.3e}, top1 {}/{}", num / den, agree, toks.len());
}

#[test]
fn dev_tap() {
    let Ok(m) = std::env::var("TAP_MODEL") else {
        return;
    };
    let toks: Vec<u32> = std::env::var("DEV_TOKENS")
        .unwrap()
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let model = Model::from_file(std::path::Path::new(&m)).unwrap();
    let mut cache = model.new_cache(4096);
    model.forward(&mut cache, &toks, LogitsFor::All).unwrap();
}

#[test]
fn dev_rowtap() {
    let Ok(m) = std::env::var("ROW_MODEL") else {
        return;
    };
    let toks: Vec<u32> = std::env::var("DEV_TOKENS")
        .unwrap()
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let row: usize = std::env::var("ROW").unwrap().parse().unwrap();
    let mut model = Model::from_file(std::path::Path::new(&m)).unwrap();
    if std::env::var("DEV_REF").is_ok() {
        model.set_kernel(ternlm::backend::cpu::Kernel::Reference);
    }
    let mut cache = model.new_cache(4096);
    model
        .forward_with_tap(&mut cache, &toks, LogitsFor::All, &mut |e| {
            if e.rows == toks.len() {
                let r = &e.data[row * e.cols..(row + 1) * e.cols];
                let s: f64 = r.iter().map(|&v| v as f64).sum();
                println!("{} {:.6} {:.6} {:.6}", e.name, s, r[0], r[1]);
            }
        })
        .unwrap();
}

#[test]
fn dev_gemma_facts() {
    let p = std::path::Path::new(".cache/models/gemma-3-270m-q4_k_m.gguf");
    if !p.exists() || std::env::var("DEV_GEMMA").is_err() {
        return;
    }
    let m = Model::from_file(p).unwrap();
    let s = m.spec();
    eprintln!(
        "layers {} swa {:?}",
        s.n_layer,
        s.layers
            .iter()
            .map(|l| (l.sliding_window, l.rope_base))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "attn_scale {} embed {:?} softcap {:?} tied {} eps {} act {:?}",
        s.attn_scale, s.embed_scale, s.final_softcap, s.tied_output, s.eps, s.activation
    );
    let w = m.weights();
    for (n, v) in [
        ("attn_norm0", &w.layers[0].attn_norm),
        ("post_attn0", w.layers[0].attn_post_norm.as_ref().unwrap()),
        ("q_norm0", w.layers[0].q_norm.as_ref().unwrap()),
        ("ffn_post0", w.layers[0].ffn_post_norm.as_ref().unwrap()),
        ("out_norm", &w.output_norm),
    ] {
        let mean: f32 = v.data.iter().sum::<f32>() / v.data.len() as f32;
        let min = v.data.iter().cloned().fold(f32::MAX, f32::min);
        eprintln!("{n}: mean {mean} min {min}");
    }
}
