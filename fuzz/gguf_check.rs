//! The properties the GGUF reader fuzz target checks, shared with `tests/fuzz_regressions.rs` so
//! every committed seed and past finding is replayed by `cargo test`.
//!
//! Input: first byte = stream chunk size, the rest = file bytes. Properties: no panic; the streamed
//! parse agrees with the whole-file parse; accessors and the tensor router never panic; the router
//! covers every tensor byte exactly once; the inspect summary renders.

use ternlm::gguf::split::SplitPart;
use ternlm::gguf::{GgufFile, HeaderStream, Limits, SplitSet, TensorRouter};

pub fn check(data: &[u8]) {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let whole = GgufFile::from_bytes(bytes);

    let mut stream = HeaderStream::new(Some(bytes.len() as u64), Limits::default());
    let mut streamed = None;
    for c in bytes.chunks(usize::from(chunk).max(1)) {
        match stream.push(c) {
            Ok(None) => {}
            done => {
                streamed = Some(done.map(|h| h.expect("Some")));
                break;
            }
        }
    }
    let streamed = streamed.unwrap_or_else(|| stream.finish());
    match (&whole, &streamed) {
        // Debug renderings, not ==: a NaN metadata value is unequal to itself.
        (Ok(f), Ok(h)) => assert_eq!(format!("{:?}", f.header), format!("{h:?}")),
        (Err(a), Err(b)) => assert_eq!(a.code(), b.code()),
        (a, b) => panic!("whole {a:?} vs streamed {b:?}"),
    }

    let Ok(f) = whole else { return };
    let md = f.metadata();
    let _ = md.architecture();
    let _ = md.arch_int::<u32>("block_count");
    let _ = md.arch_int_per_layer("attention.head_count_kv", 4);
    let _ = md.str_array("tokenizer.ggml.tokens");
    let mut seen = vec![0u64; f.tensors().len()];
    TensorRouter::new(&f.header).route(0, bytes, |c| seen[c.tensor] += c.bytes.len() as u64);
    for (t, n) in f.tensors().iter().zip(seen) {
        assert_eq!(n, t.n_bytes, "router covers {}", t.name);
        assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes);
    }
    let part = SplitPart {
        header: f.header.clone(),
        file_len: bytes.len() as u64,
    };
    if let Ok(set) = SplitSet::from_parts(vec![part]) {
        let _ = ternlm::inspect::render_text(&ternlm::inspect::summary(&set));
    }
}
