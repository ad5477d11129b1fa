//! The GGUF reader on valid, malformed and hostile input: one regression test per bad-input class
//! (issue "Foundation", STYLE.md practice 12). A counting allocator checks that no hostile header
//! makes the reader allocate more than its input justifies.

mod common;

use common::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use ternlm::error::GgufError;
use ternlm::gguf::{
    Array, GgufFile, GgufHeader, HeaderStream, Limits, SplitSet, TensorRouter, Value,
};
use ternlm::quant::GgmlType;

struct Counting;
thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LARGEST.with(|c| c.set(c.get().max(l.size())));
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LARGEST.with(|c| c.set(c.get().max(n)));
        unsafe { System.realloc(p, l, n) }
    }
}
#[global_allocator]
static ALLOC: Counting = Counting;

/// Parses `bytes` and returns the error, asserting the largest single allocation stayed small.
fn parse_err(bytes: &[u8]) -> GgufError {
    LARGEST.with(|c| c.set(0));
    let r = GgufFile::from_bytes(bytes);
    let largest = LARGEST.with(|c| c.get());
    assert!(
        largest <= 4096 + 64 * bytes.len(),
        "allocated {largest} B for a {} B input",
        bytes.len()
    );
    r.expect_err("malformed input must be rejected")
}

#[test]
fn valid_file_parses() {
    let bytes = valid_file();
    let f = GgufFile::from_bytes(&bytes).unwrap();
    assert_eq!(f.header.version, 3);
    assert_eq!(f.header.alignment, 32);
    assert_eq!(f.metadata().architecture().unwrap(), "llama");
    assert_eq!(
        f.metadata().arch_int::<u32>("block_count").unwrap(),
        Some(2)
    );
    assert_eq!(f.tensors().len(), 2);
    let (t, data) = f.tensor("b").unwrap();
    assert_eq!(
        (t.ne.as_slice(), t.ty, t.n_bytes),
        (&[3u64][..], GgmlType::F32, 12)
    );
    assert_eq!(f32::from_le_bytes(data[4..8].try_into().unwrap()), 11.0);
    assert_eq!(
        f.metadata()
            .str_array("tokenizer.ggml.tokens")
            .unwrap()
            .unwrap(),
        ["a", "b", "c"]
    );
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = valid_file();
    for n in 0..bytes.len() {
        let e = parse_err(&bytes[..n]);
        assert!(
            matches!(e, GgufError::Truncated { .. } | GgufError::BadTensor { .. }),
            "prefix {n}: {e}"
        );
    }
}

#[test]
fn wrong_magic_version_and_endianness() {
    let mut b = valid_file();
    b[0] = b'X';
    assert!(matches!(parse_err(&b), GgufError::BadMagic { .. }));
    for v in [0u32, 1, 4, 1000] {
        let mut b = valid_file();
        b[4..8].copy_from_slice(&v.to_le_bytes());
        assert_eq!(parse_err(&b), GgufError::UnsupportedVersion(v));
    }
    let mut b = valid_file();
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert_eq!(parse_err(&b), GgufError::BigEndian);
    // Version 2 has the same layout and is accepted.
    let mut b = valid_file();
    b[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(GgufFile::from_bytes(&b).unwrap().header.version, 2);
}

#[test]
fn absurd_counts_are_rejected_without_allocating() {
    // 2^60 tensors in a tiny file.
    let b = Gguf::new(3, 1 << 60, 0).finish();
    assert!(matches!(parse_err(&b), GgufError::TooLarge { .. }));
    // A count under the cap that the file cannot hold.
    let b = Gguf::new(3, 1000, 0).finish();
    assert!(matches!(parse_err(&b), GgufError::Truncated { .. }));
    let b = Gguf::new(3, 0, u64::MAX).finish();
    assert!(matches!(parse_err(&b), GgufError::TooLarge { .. }));
    // A 4 GB string in a 1 KB file.
    let mut g = Gguf::new(3, 0, 1);
    g.u64(4 << 30).bytes(&[b'k'; 1000]);
    assert!(matches!(parse_err(&g.finish()), GgufError::TooLarge { .. }));
    // Under the cap but longer than the file.
    let mut g = Gguf::new(3, 0, 1);
    g.u64(1 << 20).bytes(&[b'k'; 1000]);
    assert!(matches!(
        parse_err(&g.finish()),
        GgufError::Truncated { .. }
    ));
    let mut g = Gguf::new(3, 0, 1);
    g.str("k").u32(T_STR).u64(4 << 30).bytes(&[0; 1000]);
    assert!(matches!(
        parse_err(&g.finish()),
        GgufError::TooLarge { .. } | GgufError::Truncated { .. }
    ));
    // Arrays claiming 2^40 elements, of strings and of u64.
    for elem in [T_STR, T_U64, T_ARR] {
        let mut g = Gguf::new(3, 0, 1);
        g.str("k")
            .u32(T_ARR)
            .u32(elem)
            .u64(1 << 40)
            .bytes(&[0; 512]);
        assert!(matches!(parse_err(&g.finish()), GgufError::TooLarge { .. }));
        let mut g = Gguf::new(3, 0, 1);
        g.str("k")
            .u32(T_ARR)
            .u32(elem)
            .u64(1 << 20)
            .bytes(&[0; 512]);
        assert!(matches!(
            parse_err(&g.finish()),
            GgufError::Truncated { .. }
        ));
    }
}

#[test]
fn nested_arrays_and_depth_limit() {
    let mut g = Gguf::new(3, 0, 1);
    // [[1u8, 2u8], []]
    g.str("nested").u32(T_ARR).u32(T_ARR).u64(2);
    g.u32(T_U8).u64(2).u8(1).u8(2);
    g.u32(T_U8).u64(0);
    let b = g.finish();
    let f = GgufFile::from_bytes(&b).unwrap();
    let Some(Value::Array(Array::Array(inner))) = f.metadata().get("nested") else {
        panic!()
    };
    assert_eq!(inner, &vec![Array::U8(vec![1, 2]), Array::U8(vec![])]);

    let mut g = Gguf::new(3, 0, 1);
    g.str("deep").u32(T_ARR);
    for _ in 0..100 {
        g.u32(T_ARR).u64(1);
    }
    g.u32(T_U8).u64(0);
    assert!(matches!(parse_err(&g.finish()), GgufError::TooLarge { .. }));
}

#[test]
fn bad_metadata_values() {
    let mut g = Gguf::new(3, 0, 1);
    g.str("k").u32(13).u32(0);
    assert_eq!(
        parse_err(&g.finish()),
        GgufError::UnknownValueType {
            key: "k".into(),
            type_id: 13
        }
    );
    let mut g = Gguf::new(3, 0, 1);
    g.str("k").u32(T_BOOL).u8(2);
    assert!(matches!(
        parse_err(&g.finish()),
        GgufError::OutOfRange { .. }
    ));
    let mut g = Gguf::new(3, 0, 1);
    g.str("k").u32(T_STR).u64(2).bytes(&[0xff, 0xfe]);
    assert!(matches!(
        parse_err(&g.finish()),
        GgufError::InvalidUtf8 { .. }
    ));
    let mut g = Gguf::new(3, 0, 2);
    g.kv_u32("k", 1).kv_u32("k", 2);
    assert_eq!(parse_err(&g.finish()), GgufError::DuplicateKey("k".into()));
    let mut g = Gguf::new(3, 0, 1);
    g.kv_str("general.alignment", "32");
    assert!(matches!(
        parse_err(&g.finish()),
        GgufError::WrongType { .. }
    ));
    for a in [0, 3, 48] {
        let mut g = Gguf::new(3, 0, 1);
        g.kv_u32("general.alignment", a);
        assert_eq!(parse_err(&g.finish()), GgufError::BadAlignment(a.into()));
    }
}

#[test]
fn typed_accessors_check_types_and_ranges() {
    let mut g = Gguf::new(3, 0, 7);
    g.kv_str("general.architecture", "qwen3")
        .kv_u32("qwen3.block_count", 3)
        .str("qwen3.neg")
        .u32(T_I32)
        .u32(-5i32 as u32)
        .kv_f32("qwen3.eps", 1e-6)
        .str("qwen3.heads_kv")
        .u32(T_ARR)
        .u32(T_I32)
        .u64(3)
        .u32(2)
        .u32(4)
        .u32(8)
        .str("qwen3.big")
        .u32(T_U64)
        .u64(1 << 40)
        .kv_str("qwen3.name", "x");
    let b = g.finish();
    let f = GgufFile::from_bytes(&b).unwrap();
    let md = f.metadata();
    assert_eq!(md.arch_key("x").unwrap(), "qwen3.x");
    assert_eq!(md.arch_int::<u64>("block_count").unwrap(), Some(3));
    assert_eq!(md.arch_int::<i8>("neg").unwrap(), Some(-5));
    assert!(matches!(
        md.arch_int::<u32>("neg"),
        Err(GgufError::OutOfRange { .. })
    ));
    assert!(matches!(
        md.arch_int::<u32>("big"),
        Err(GgufError::OutOfRange { .. })
    ));
    assert!(matches!(
        md.arch_int::<u32>("eps"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        md.arch_int::<u32>("name"),
        Err(GgufError::WrongType { .. })
    ));
    assert!((md.arch_float("eps").unwrap().unwrap() - 1e-6).abs() < 1e-12);
    assert_eq!(md.arch_int::<u32>("missing").unwrap(), None);
    assert_eq!(
        md.arch_int_per_layer("heads_kv", 3).unwrap(),
        Some(vec![2, 4, 8])
    );
    assert_eq!(
        md.arch_int_per_layer("block_count", 2).unwrap(),
        Some(vec![3, 3])
    );
    assert!(md.arch_int_per_layer("heads_kv", 4).is_err());
    let missing = ternlm::gguf::Metadata::required("qwen3.x", md.arch_int::<u32>("x"));
    assert_eq!(missing, Err(GgufError::MissingKey("qwen3.x".into())));
}

/// A one-tensor file with the given tensor info fields and `data_len` bytes of data.
fn one_tensor(name: &str, ne: &[u64], ty: u32, offset: u64, data_len: usize) -> Vec<u8> {
    let mut g = Gguf::new(3, 1, 0);
    g.tensor(name, ne, ty, offset)
        .pad(32)
        .bytes(&vec![0; data_len]);
    g.finish()
}

#[test]
fn bad_tensor_infos() {
    // Unknown type id names the tensor and the id.
    assert_eq!(
        parse_err(&one_tensor("blk.0.w", &[32], 77, 0, 64)),
        GgufError::UnknownTensorType {
            name: "blk.0.w".into(),
            type_id: 77
        }
    );
    // n_dims out of range.
    assert!(matches!(
        parse_err(&one_tensor("t", &[], 0, 0, 64)),
        GgufError::BadTensor { .. }
    ));
    assert!(matches!(
        parse_err(&one_tensor("t", &[1, 1, 1, 1, 1], 0, 0, 64)),
        GgufError::BadTensor { .. }
    ));
    // A 2^40-element tensor in a tiny file: data out of range.
    let e = parse_err(&one_tensor("huge", &[1 << 20, 1 << 20], 0, 0, 64));
    assert!(
        matches!(&e, GgufError::BadTensor { name, reason } if name == "huge" && reason.contains("outside")),
        "{e}"
    );
    // Overflowing products of dimensions.
    assert!(matches!(
        parse_err(&one_tensor("t", &[1 << 32, 1 << 32], 0, 0, 64)),
        GgufError::BadTensor { .. }
    ));
    assert!(matches!(
        parse_err(&one_tensor("t", &[1 << 62, 2], 8, 0, 64)),
        GgufError::BadTensor { .. }
    ));
    assert!(matches!(
        parse_err(&one_tensor("t", &[u64::MAX], 0, 0, 64)),
        GgufError::BadTensor { .. }
    ));
    // ne0 not a whole number of blocks.
    assert!(matches!(
        parse_err(&one_tensor("t", &[33], 2, 0, 64)),
        GgufError::BadTensor { .. }
    ));
    // Misaligned offset.
    let e = parse_err(&one_tensor("t", &[4], 0, 4, 64));
    assert!(
        matches!(&e, GgufError::BadTensor { reason, .. } if reason.contains("alignment")),
        "{e}"
    );
    // Data past the end.
    assert!(matches!(
        parse_err(&one_tensor("t", &[16], 0, 32, 64)),
        GgufError::BadTensor { .. }
    ));
    // Name too long.
    assert!(matches!(
        parse_err(&one_tensor(&"n".repeat(5000), &[4], 0, 0, 64)),
        GgufError::TooLarge { .. }
    ));
}

#[test]
fn overlapping_and_duplicate_tensors() {
    let mut g = Gguf::new(3, 2, 0);
    g.tensor("a", &[16], 0, 0)
        .tensor("b", &[16], 0, 32)
        .pad(32)
        .bytes(&[0; 128]);
    assert_eq!(
        parse_err(&g.finish()),
        GgufError::Overlap {
            first: "a".into(),
            second: "b".into(),
            first_end: 64,
            second_offset: 32
        }
    );
    let mut g = Gguf::new(3, 2, 0);
    g.tensor("a", &[8], 0, 0)
        .tensor("a", &[8], 0, 32)
        .pad(32)
        .bytes(&[0; 64]);
    assert_eq!(
        parse_err(&g.finish()),
        GgufError::DuplicateTensor("a".into())
    );
}

#[test]
fn ruvllm_blocks_behind_type_30_are_named() {
    // 512 elements as ruvllm blocks: 2·66 = 132 bytes, where BF16 needs 1024.
    let mut g = Gguf::new(3, 2, 0);
    g.tensor("w", &[512], 30, 0)
        .tensor("next", &[4], 0, 160)
        .pad(32)
        .bytes(&[0; 176]);
    let e = parse_err(&g.finish());
    assert!(
        matches!(e, GgufError::LooksLikeRuvllm { expected: 132, .. }),
        "{e}"
    );
}

#[test]
fn i2s_size_includes_the_trailer() {
    let b = one_tensor("w", &[128, 2], 36, 0, 64 + 32);
    let f = GgufFile::from_bytes(&b).unwrap();
    assert_eq!(f.tensors()[0].n_bytes, 96);
    assert!(GgufFile::from_bytes(&one_tensor("w", &[128, 2], 36, 0, 64)).is_err());
}

#[test]
fn streaming_matches_whole_file_parse_for_every_chunk_size() {
    let bytes = valid_file();
    let whole = GgufFile::from_bytes(&bytes).unwrap();
    for chunk in [1, 2, 3, 7, 16, 64, 1000] {
        for known_len in [true, false] {
            let mut s =
                HeaderStream::new(known_len.then_some(bytes.len() as u64), Limits::default());
            let mut header = None;
            let mut fed = 0;
            for c in bytes.chunks(chunk) {
                fed += c.len();
                if let Some(h) = s.push(c).unwrap() {
                    header = Some(h);
                    break;
                }
            }
            let header = match header {
                Some(h) => h,
                None => s.finish().unwrap(),
            };
            assert_eq!(header, whole.header, "chunk {chunk}");
            // Route the rest of the file and rebuild every tensor.
            let router = TensorRouter::new(&header);
            let mut rebuilt: Vec<Vec<u8>> = header.tensors.iter().map(|_| Vec::new()).collect();
            let mut lasts = 0;
            let (pos, buffered) = s.leftover();
            let mut sink = |ch: ternlm::gguf::TensorChunk| {
                assert_eq!(ch.offset as usize, rebuilt[ch.tensor].len());
                rebuilt[ch.tensor].extend_from_slice(ch.bytes);
                lasts += ch.last as usize;
            };
            router.route(pos, buffered, &mut sink);
            let mut at = fed as u64;
            for c in bytes[fed..].chunks(chunk) {
                router.route(at, c, &mut sink);
                at += c.len() as u64;
            }
            assert_eq!(lasts, 2);
            for (t, got) in header.tensors.iter().zip(&rebuilt) {
                assert_eq!(got.as_slice(), whole.tensor_data(t), "tensor {}", t.name);
            }
        }
    }
}

#[test]
fn stream_rejects_bad_input_early_and_caps_header_size() {
    let mut s = HeaderStream::new(None, Limits::default());
    assert!(matches!(
        s.push(b"GGUX\x03\0\0\0"),
        Err(GgufError::BadMagic { .. })
    ));
    // A header that claims more than the cap.
    let limits = Limits {
        max_header_bytes: 1024,
        ..Limits::default()
    };
    let mut s = HeaderStream::new(None, limits);
    let mut g = Gguf::new(3, 0, 1);
    g.str("k").u32(T_STR).u64(10_000);
    assert!(matches!(
        s.push(&g.finish()),
        Err(GgufError::TooLarge { .. })
    ));
    // A stream that ends inside the header.
    let mut s = HeaderStream::new(None, Limits::default());
    assert_eq!(s.push(&valid_file()[..40]).unwrap(), None);
    assert!(matches!(s.finish(), Err(GgufError::Truncated { .. })));
}

#[test]
fn header_parse_needs_only_the_header() {
    let bytes = valid_file();
    let whole = GgufFile::from_bytes(&bytes).unwrap();
    let n = whole.header.data_offset as usize;
    let h = GgufHeader::parse(&bytes[..n], bytes.len() as u64, Limits::default()).unwrap();
    assert_eq!(h, whole.header);
}

fn split_part(no: u32, count: u32, total: u64, tensors: &[&str]) -> Vec<u8> {
    let mut g = Gguf::new(3, tensors.len() as u64, 3);
    g.str("split.no")
        .u32(T_U16)
        .bytes(&(no as u16).to_le_bytes());
    g.str("split.count")
        .u32(T_U16)
        .bytes(&(count as u16).to_le_bytes());
    g.str("split.tensors.count").u32(T_I32).u32(total as u32);
    for (i, t) in tensors.iter().enumerate() {
        g.tensor(t, &[8], 0, 32 * i as u64);
    }
    g.pad(32).bytes(&vec![0; 32 * tensors.len()]);
    g.finish()
}

#[test]
fn split_sets_merge_and_validate() {
    let dir = std::env::temp_dir().join(format!("ternlm-split-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, b: Vec<u8>| std::fs::write(dir.join(name), b).unwrap();
    write("m-00001-of-00002.gguf", split_part(0, 2, 3, &["a", "b"]));
    write("m-00002-of-00002.gguf", split_part(1, 2, 3, &["c"]));
    let set = SplitSet::open(&dir.join("m-00002-of-00002.gguf")).unwrap();
    let names: Vec<_> = set
        .tensor_infos()
        .map(|(p, t)| (p, t.name.clone()))
        .collect();
    assert_eq!(names, [(0, "a".into()), (0, "b".into()), (1, "c".into())]);

    write("d-00001-of-00002.gguf", split_part(0, 2, 2, &["a"]));
    write("d-00002-of-00002.gguf", split_part(1, 2, 2, &["a"]));
    let e = SplitSet::open(&dir.join("d-00001-of-00002.gguf")).unwrap_err();
    assert_eq!(e.code(), "gguf_duplicate_tensor");
    write("n-00001-of-00002.gguf", split_part(0, 2, 2, &["a"]));
    write("n-00002-of-00002.gguf", split_part(0, 2, 2, &["b"]));
    assert_eq!(
        SplitSet::open(&dir.join("n-00001-of-00002.gguf"))
            .unwrap_err()
            .code(),
        "gguf_split"
    );
    write("c-00001-of-00002.gguf", split_part(0, 2, 5, &["a"]));
    write("c-00002-of-00002.gguf", split_part(1, 2, 5, &["b"]));
    assert_eq!(
        SplitSet::open(&dir.join("c-00001-of-00002.gguf"))
            .unwrap_err()
            .code(),
        "gguf_split"
    );
    write("x-00001-of-00002.gguf", split_part(0, 2, 1, &["a"]));
    assert_eq!(
        SplitSet::open(&dir.join("x-00001-of-00002.gguf"))
            .unwrap_err()
            .code(),
        "io"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
