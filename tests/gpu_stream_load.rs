//! Models streamed straight to the GPU (`GpuLoader`, issue #5 item 2): the file's bytes pushed
//! in chunks that straddle tensors, never held whole; the model decodes llama.cpp's greedy ids
//! (tests/gpu_util `DECODE_CASES`), with weights split by rows too, holds no host weights (a CPU
//! forward is `model_gpu_only`), and bad streams are typed errors that leave the loader's device
//! usable. Natively (lavapipe in CI) and in headless Chromium (tests/gpu_browser.rs includes
//! this file).

mod gpu_util;

use gpu_util::*;
use ternlm::backend::gpu::GpuOptions;
use ternlm::model::{GpuLoader, LogitsFor, Model};

/// `bytes` pushed `chunk` bytes at a time (`file_len` told or not): the model and the most
/// bytes the loader held at once.
async fn stream(bytes: &[u8], chunk: usize, tell_len: bool, opts: &GpuOptions) -> (Model, u64) {
    let ctx = ctx_with_async(opts).await;
    let mut l = GpuLoader::new(ctx, tell_len.then_some(bytes.len() as u64));
    for c in bytes.chunks(chunk) {
        l.push(c).unwrap_or_else(|e| panic!("push: {e}"));
    }
    let peak = l.peak_bytes();
    (l.finish().unwrap_or_else(|e| panic!("finish: {e}")), peak)
}

#[gpu_test]
async fn streamed_models_decode_llama_cpp_ids() {
    let split = GpuOptions {
        max_binding_size: Some(16 << 10),
        ..Default::default()
    };
    for c in DECODE_CASES {
        let mut in_memory = Model::from_bytes(c.bytes.to_vec()).unwrap();
        in_memory
            .use_gpu_async(&GpuOptions::default())
            .await
            .unwrap_or_else(|e| panic!("no GPU adapter: {e}"));
        let gpu_bytes = in_memory.gpu().expect("attached").weight_bytes();
        // chunks of an odd size (every tensor boundary falls inside one), the whole file at
        // once, an unknown length, and weights split by rows
        for (chunk, tell_len, opts) in [
            (4093, true, &GpuOptions::default()),
            (c.bytes.len(), true, &GpuOptions::default()),
            (1000, false, &GpuOptions::default()),
            (4093, true, &split),
        ] {
            let what = format!("{}: {chunk}-byte chunks, length told {tell_len}", c.name);
            let (m, peak) = stream(c.bytes, chunk, tell_len, opts).await;
            assert!(!m.has_host_weights(), "{what}");
            let gw = m.gpu().expect("on the GPU");
            if opts.max_binding_size.is_none() {
                // the same uploads as from memory (gate+up and q+k+v joined alike)
                assert_eq!(gw.weight_bytes(), gpu_bytes, "{what}: weight bytes");
            }
            assert_eq!(
                greedy_ids(&m, c).await.unwrap(),
                c.want,
                "{what}: greedy ids"
            );
            if chunk < c.bytes.len() {
                // a tensor (or group) at a time, never the file
                assert!(
                    peak < c.bytes.len() as u64 / 2,
                    "{what}: held {peak} of {} bytes at once",
                    c.bytes.len()
                );
            }
            eprintln!("{what}: held at most {peak} of {} bytes", c.bytes.len());
        }
    }
}

/// A streamed model has no host weights: the CPU cannot run it, and it cannot move to another
/// device; its GPU forwards still work after those errors.
#[gpu_test]
async fn streamed_model_is_gpu_only() {
    let c = &DECODE_CASES[1];
    let (mut m, _) = stream(c.bytes, 1 << 16, true, &GpuOptions::default()).await;
    let ctx = ctx_async().await;
    assert_eq!(m.attach_gpu(ctx).unwrap_err().code(), "model_gpu_only");
    assert_eq!(greedy_ids(&m, c).await.unwrap(), c.want);
    m.detach_gpu();
    let mut cache = m.new_cache(8);
    let e = m
        .forward_async(&mut cache, c.prompt, LogitsFor::Last)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "model_gpu_only");
}

/// Truncated, corrupt and overlong streams are typed errors; after one, the loader refuses
/// more bytes (`model_load_failed`), and a new loader on the same adapter works.
#[gpu_test]
async fn bad_streams_are_typed_errors() {
    let c = &DECODE_CASES[0];
    let b = c.bytes;
    let opts = GpuOptions::default();

    // ends inside the tensor data
    let mut l = GpuLoader::new(ctx_async().await, None);
    l.push(&b[..b.len() * 2 / 3]).unwrap();
    assert_eq!(l.finish().unwrap_err().code(), "gguf_truncated");

    // ends inside the header
    let mut l = GpuLoader::new(ctx_async().await, None);
    l.push(&b[..40]).unwrap();
    assert_eq!(l.finish().unwrap_err().code(), "gguf_truncated");

    // not a GGUF file; then every call fails
    let mut l = GpuLoader::new(ctx_async().await, None);
    let e = l.push(b"NOPE and then some bytes").unwrap_err();
    assert_eq!(e.code(), "gguf_bad_magic");
    assert_eq!(l.push(b).unwrap_err().code(), "model_load_failed");
    assert_eq!(l.finish().unwrap_err().code(), "model_load_failed");

    // more bytes than the length told
    let mut l = GpuLoader::new(ctx_async().await, Some(b.len() as u64));
    l.push(b).unwrap();
    let e = l.push(&[0; 16]).unwrap_err();
    assert_eq!(e.code(), "gguf_too_large", "{e}");

    // a tensor table the told length cannot hold
    let mut l = GpuLoader::new(ctx_async().await, Some(b.len() as u64 / 2));
    let e = b
        .chunks(4096)
        .try_for_each(|ch| l.push(ch))
        .expect_err("the header promises more data than the file holds");
    assert!(e.code().starts_with("gguf_"), "{e}");

    let (m, _) = stream(b, 4093, true, &opts).await;
    assert_eq!(
        greedy_ids(&m, c).await.unwrap(),
        c.want,
        "after the failed loads"
    );
}

/// The two files of `tiny-split` (tiny-llama-f32's tensors cut after `blk.0.ffn_up`).
const SPLIT: [&[u8]; 2] = [
    include_bytes!("data/models/tiny-split-00001-of-00002.gguf"),
    include_bytes!("data/models/tiny-split-00002-of-00002.gguf"),
];

/// `files` streamed one after another (`GpuLoader::next_file` between), `chunk` bytes a push.
async fn stream_set(files: &[&[u8]], chunk: usize) -> ternlm::Result<(Model, u64)> {
    let mut l = GpuLoader::new(ctx_async().await, Some(files[0].len() as u64));
    for (i, f) in files.iter().enumerate() {
        if i > 0 {
            l.next_file(Some(f.len() as u64))?;
        }
        f.chunks(chunk).try_for_each(|c| l.push(c))?;
    }
    let peak = l.peak_bytes();
    Ok((l.finish()?, peak))
}

/// tiny-llama-f32, the split sets' tensors in one file, as a decode case (ids unchecked: the
/// split sets are held to its own from memory).
const WHOLE: DecodeCase = DecodeCase {
    name: "tiny-llama-f32",
    bytes: include_bytes!("data/models/tiny-llama-f32.gguf"),
    prompt: DECODE_CASES[0].prompt,
    want: DECODE_CASES[0].want,
};

/// [`WHOLE`] loaded from memory onto the GPU, and its greedy ids.
async fn whole_on_gpu() -> (Model, Vec<u32>) {
    let mut m = Model::from_bytes(WHOLE.bytes.to_vec()).unwrap();
    m.use_gpu_async(&GpuOptions::default())
        .await
        .unwrap_or_else(|e| panic!("no GPU adapter: {e}"));
    let want = greedy_ids(&m, &WHOLE).await.unwrap();
    (m, want)
}

/// A split set streams file after file: the model decodes as the same tensors in one file do
/// (tiny-llama-f32 from memory), with the same uploads, holding a tensor at a time; a set cut
/// short, in the wrong order or with a file ended early is a typed error.
#[gpu_test]
async fn split_sets_stream_file_after_file() {
    let (in_memory, want) = whole_on_gpu().await;
    let total: usize = SPLIT.iter().map(|f| f.len()).sum();
    for chunk in [4093, 1 << 20] {
        let (m, peak) = stream_set(&SPLIT, chunk).await.unwrap();
        let gw = m.gpu().expect("on the GPU");
        assert_eq!(gw.weight_bytes(), in_memory.gpu().unwrap().weight_bytes());
        assert_eq!(
            greedy_ids(&m, &WHOLE).await.unwrap(),
            want,
            "{chunk}-byte chunks"
        );
        if chunk < SPLIT[0].len() {
            assert!(
                peak < total as u64 / 4,
                "held {peak} of {total} bytes at once"
            );
        }
    }
    let code = |r: ternlm::Result<(Model, u64)>| r.err().map(|e| e.code().to_string());
    // the first file alone: split.count says two
    assert_eq!(
        code(stream_set(&SPLIT[..1], 4093).await).as_deref(),
        Some("gguf_split")
    );
    // the files swapped
    let swapped = [SPLIT[1], SPLIT[0]];
    assert_eq!(
        code(stream_set(&swapped, 4093).await).as_deref(),
        Some("gguf_split")
    );
    // the first file ended before its last tensor
    let short = [&SPLIT[0][..SPLIT[0].len() - 100], SPLIT[1]];
    let mut l = GpuLoader::new(ctx_async().await, None);
    l.push(short[0]).unwrap();
    assert_eq!(l.next_file(None).unwrap_err().code(), "gguf_truncated");
    assert_eq!(l.push(short[1]).unwrap_err().code(), "model_load_failed");
}

/// `bytes` (one GGUF file) re-split into a set whose files start at the tensors `cuts` (indices
/// into its tensor table), as llama.cpp's gguf-split writes one: the first file keeps the
/// metadata, every file gets `split.no` / `split.count`, the first `split.tensors.count`;
/// each file's tensors packed from its own data section at the file's alignment.
fn resplit(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let f = ternlm::gguf::GgufFile::from_bytes(bytes).unwrap();
    let h = &f.header;
    let info = |t: &ternlm::gguf::TensorInfo, offset: u64| {
        let mut b = (t.name.len() as u64).to_le_bytes().to_vec();
        b.extend(t.name.as_bytes());
        b.extend((t.ne.len() as u32).to_le_bytes());
        t.ne.iter().for_each(|d| b.extend(d.to_le_bytes()));
        b.extend((t.ty as u32).to_le_bytes());
        b.extend(offset.to_le_bytes());
        b
    };
    // The metadata is everything between the 24-byte preamble and the first tensor's info.
    let first = info(&h.tensors[0], h.tensors[0].offset);
    let kv_end = bytes
        .windows(first.len())
        .position(|w| w == first.as_slice())
        .expect("the first tensor info");
    let n_kv = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    let starts: Vec<usize> = [0].iter().chain(cuts).copied().collect();
    let n = starts.len();
    let kv = |key: &str, ty: u32, v: &[u8]| {
        let mut b = (key.len() as u64).to_le_bytes().to_vec();
        b.extend(key.as_bytes());
        b.extend(ty.to_le_bytes());
        b.extend(v);
        b
    };
    (0..n)
        .map(|i| {
            let ts = &h.tensors[starts[i]..*starts.get(i + 1).unwrap_or(&h.tensors.len())];
            let (meta, n_meta) = if i == 0 {
                (&bytes[24..kv_end], n_kv)
            } else {
                (&[][..], 0)
            };
            let mut out = b"GGUF".to_vec();
            out.extend(3u32.to_le_bytes());
            out.extend((ts.len() as u64).to_le_bytes());
            out.extend((n_meta + 2 + u64::from(i == 0)).to_le_bytes());
            out.extend(meta);
            out.extend(kv("split.no", 2, &(i as u16).to_le_bytes()));
            out.extend(kv("split.count", 2, &(n as u16).to_le_bytes()));
            if i == 0 {
                out.extend(kv(
                    "split.tensors.count",
                    5,
                    &(h.tensors.len() as i32).to_le_bytes(),
                ));
            }
            let align = h.alignment;
            let mut data = Vec::new();
            for t in ts {
                out.extend(info(t, data.len() as u64));
                data.extend(f.tensor_data(t));
                data.resize((data.len() as u64).next_multiple_of(align) as usize, 0);
            }
            out.resize((out.len() as u64).next_multiple_of(align) as usize, 0);
            out.extend(data);
            out
        })
        .collect()
}

/// A split set whose cuts fall inside a layer's q/k/v and gate/up groups (tiny-llama-f32 cut
/// after `blk.0.attn_q` and after `blk.1.ffn_gate`): each cut group uploads as two weights (q
/// alone and k+v, gate and up), the same bytes, and the model decodes as from memory.
#[gpu_test]
async fn split_sets_cut_inside_a_group() {
    let f = ternlm::gguf::GgufFile::from_bytes(WHOLE.bytes).unwrap();
    let at = |name: &str| {
        f.header
            .tensors
            .iter()
            .position(|t| t.name == name)
            .unwrap()
            + 1
    };
    let files = resplit(
        WHOLE.bytes,
        &[at("blk.0.attn_q.weight"), at("blk.1.ffn_gate.weight")],
    );
    assert_eq!(files.len(), 3);
    let (in_memory, want) = whole_on_gpu().await;
    let set: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    let (m, _) = stream_set(&set, 3001).await.unwrap();
    let (gw, mw) = (m.gpu().unwrap(), in_memory.gpu().unwrap());
    assert_eq!(gw.weight_count(), mw.weight_count() + 2, "two groups cut");
    assert_eq!(gw.weight_bytes(), mw.weight_bytes());
    assert_eq!(greedy_ids(&m, &WHOLE).await.unwrap(), want);
}
