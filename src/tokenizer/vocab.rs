//! The vocabulary of a GGUF model (`tokenizer.ggml.*`, spec/runtime.md §7), loaded the way
//! llama.cpp's `llama_vocab::impl::load` does: token texts, attributes and scores, the special
//! token ids with llama.cpp's defaults and its detection of EOT/EOG/FIM tokens by their text, the
//! `add_bos`/`add_eos`/`add_space_prefix` flags with their per-model defaults, and the per-model
//! token attribute fix-ups (lstrip/rstrip) that special-token matching depends on.
//!
//! Out of scope: the vocabulary types ternlm does not tokenize (WPM, UGM, RWKV, PLaMo-2); they are
//! refused with [`TokenizerError::UnknownModel`].

use super::pretokenize::PreKind;
use crate::error::{GgufError, Result, TokenizerError};
use crate::gguf::{Array, Metadata};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The FxHash function (rustc's): much faster than SipHash on the short keys of a vocabulary,
/// and the inputs are not adversarial in a way that matters for a local tokenizer.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
            ]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // the multiply leaves the low bits weakly mixed; hash tables index with them
        self.0.rotate_left(26)
    }
}

pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

pub(crate) fn fx_hash(bytes: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(bytes);
    h.finish()
}

/// All token texts in one buffer, with an open-addressing index from text to id: one allocation
/// instead of two per token, which keeps loading a 262k vocabulary fast. A slot holds a hash tag
/// and the id, so a probe reads a text only when the tags agree.
#[derive(Debug, Clone, Default)]
struct TokenTexts {
    buf: String,
    /// `buf[offs[i]..offs[i + 1]]` is token i.
    offs: Vec<u32>,
    /// `tag << 32 | (id + 1)`; 0 = empty.
    slots: Vec<u64>,
}

impl TokenTexts {
    fn with_capacity(n: usize, bytes: usize) -> Self {
        let cap = (n * 2).next_power_of_two().max(16);
        let mut offs = Vec::with_capacity(n + 1);
        offs.push(0);
        TokenTexts {
            buf: String::with_capacity(bytes),
            offs,
            slots: vec![0; cap],
        }
    }
    fn len(&self) -> usize {
        self.offs.len() - 1
    }
    #[inline]
    fn get(&self, id: usize) -> &str {
        &self.buf[self.offs[id] as usize..self.offs[id + 1] as usize]
    }
    #[inline]
    fn hash(t: &str) -> (usize, u64) {
        let h = fx_hash(t.as_bytes());
        (h as usize, h & 0xffff_ffff_0000_0000)
    }
    /// From slot `i` on: the slot holding `t`, or the empty slot where it would go.
    #[inline]
    fn probe_from(&self, t: &str, mut i: usize, tag: u64) -> usize {
        let mask = self.slots.len() - 1;
        loop {
            let s = self.slots[i & mask];
            if s == 0
                || (s & 0xffff_ffff_0000_0000 == tag && self.get((s as u32 - 1) as usize) == t)
            {
                return i & mask;
            }
            i += 1;
        }
    }
    /// Appends a token; on a duplicate text returns the earlier id and adds nothing.
    fn push(&mut self, t: &str) -> std::result::Result<(), u32> {
        let (h, tag) = Self::hash(t);
        let i = self.probe_from(t, h, tag);
        if self.slots[i] != 0 {
            return Err(self.slots[i] as u32 - 1);
        }
        let id = self.len() as u32;
        self.buf.push_str(t);
        self.offs.push(self.buf.len() as u32);
        self.slots[i] = tag | (id as u64 + 1);
        Ok(())
    }
    #[inline]
    fn find(&self, t: &str) -> Option<u32> {
        let (h, tag) = Self::hash(t);
        let s = self.slots[self.probe_from(t, h, tag)];
        (s != 0).then(|| s as u32 - 1)
    }
    /// [`TokenTexts::find`] for many texts at once. The table is larger than the caches, so
    /// each lookup is a few dependent cache misses; done in stages over a batch, the misses of
    /// different texts overlap (loading a 280k-merge BPE does about a million lookups).
    fn find_many(&self, keys: &[&str], out: &mut Vec<Option<u32>>) {
        const B: usize = 32;
        let mask = self.slots.len() - 1;
        out.clear();
        for chunk in keys.chunks(B) {
            let mut hs = [(0usize, 0u64); B];
            let mut first = [0u64; B];
            for (k, t) in chunk.iter().enumerate() {
                hs[k] = Self::hash(t);
            }
            // stage 1: the home slots, loads independent of each other
            for k in 0..chunk.len() {
                first[k] = self.slots[hs[k].0 & mask];
            }
            // stage 2: the candidate texts' offsets
            let mut cand = [(0u32, 0u32); B];
            for k in 0..chunk.len() {
                let s = first[k];
                if s != 0 && s & 0xffff_ffff_0000_0000 == hs[k].1 {
                    let id = (s as u32 - 1) as usize;
                    cand[k] = (self.offs[id], self.offs[id + 1]);
                }
            }
            // stage 3: compare, or probe on
            for (k, t) in chunk.iter().enumerate() {
                let s = first[k];
                let (a, b) = cand[k];
                let hit = if s == 0 {
                    None
                } else if b > a && self.buf.as_bytes()[a as usize..b as usize] == *t.as_bytes() {
                    Some(s as u32 - 1)
                } else {
                    let s = self.slots[self.probe_from(t, hs[k].0 + 1, hs[k].1)];
                    (s != 0).then(|| s as u32 - 1)
                };
                out.push(hit);
            }
        }
    }
}

/// Token attributes, llama.cpp's `llama_token_attr` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TokenAttr(pub u16);

impl TokenAttr {
    pub const UNDEFINED: TokenAttr = TokenAttr(0);
    pub const UNKNOWN: TokenAttr = TokenAttr(1 << 0);
    pub const UNUSED: TokenAttr = TokenAttr(1 << 1);
    pub const NORMAL: TokenAttr = TokenAttr(1 << 2);
    pub const CONTROL: TokenAttr = TokenAttr(1 << 3);
    pub const USER_DEFINED: TokenAttr = TokenAttr(1 << 4);
    pub const BYTE: TokenAttr = TokenAttr(1 << 5);
    pub const NORMALIZED: TokenAttr = TokenAttr(1 << 6);
    pub const LSTRIP: TokenAttr = TokenAttr(1 << 7);
    pub const RSTRIP: TokenAttr = TokenAttr(1 << 8);
    pub const SINGLE_WORD: TokenAttr = TokenAttr(1 << 9);

    /// From a GGUF `token_type` (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
    /// 6 byte; anything else is undefined).
    pub fn from_token_type(t: i32) -> TokenAttr {
        match t {
            1 => Self::NORMAL,
            2 => Self::UNKNOWN,
            3 => Self::CONTROL,
            4 => Self::USER_DEFINED,
            5 => Self::UNUSED,
            6 => Self::BYTE,
            _ => Self::UNDEFINED,
        }
    }

    #[inline]
    pub fn has(self, other: TokenAttr) -> bool {
        self.0 & other.0 != 0
    }
    fn set(&mut self, other: TokenAttr, on: bool) {
        if on {
            self.0 |= other.0;
        } else {
            self.0 &= !other.0;
        }
    }
}

impl std::ops::BitOr for TokenAttr {
    type Output = TokenAttr;
    fn bitor(self, rhs: TokenAttr) -> TokenAttr {
        TokenAttr(self.0 | rhs.0)
    }
}

/// The tokenizer family (`tokenizer.ggml.model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabType {
    /// `llama`: SentencePiece BPE with scores and byte fallback.
    Spm,
    /// `gpt2` (byte-level) and `gemma4` (raw UTF-8 with `▁` for spaces): BPE with ranked merges.
    Bpe,
}

/// Special token ids; `None` where the model has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpecialTokens {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
    pub mask: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
}

/// A loaded vocabulary.
#[derive(Debug, Clone)]
pub struct Vocab {
    model: String,
    pre: String,
    ty: VocabType,
    pre_kind: PreKind,
    texts: TokenTexts,
    scores: Vec<f32>,
    attrs: Vec<TokenAttr>,
    special: SpecialTokens,
    /// Sorted ids that end generation.
    eog: Vec<u32>,
    /// Control, user-defined and unknown tokens, longest text first (`cache_special_tokens`).
    special_by_len: Vec<u32>,
    pub(crate) flags: VocabFlags,
}

/// The per-model switches of llama.cpp's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VocabFlags {
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_sep: bool,
    pub add_space_prefix: bool,
    /// `clean_up_tokenization_spaces` when decoding.
    pub clean_spaces: bool,
    /// BPE: a pre-tokenized word that is itself a token is emitted without merging.
    pub ignore_merges: bool,
    /// Spaces become `▁` before tokenizing (SentencePiece and SentencePiece-style BPE).
    pub escape_whitespaces: bool,
    pub remove_extra_whitespaces: bool,
}

const K_MODEL: &str = "tokenizer.ggml.model";
const K_PRE: &str = "tokenizer.ggml.pre";
const K_TOKENS: &str = "tokenizer.ggml.tokens";
const K_TYPES: &str = "tokenizer.ggml.token_type";
const K_SCORES: &str = "tokenizer.ggml.scores";
const K_MERGES: &str = "tokenizer.ggml.merges";

/// What a `tokenizer.ggml.pre` name selects (llama.cpp's `pre_type` and the flags it sets).
struct PreConfig {
    kind: PreKind,
    ignore_merges: bool,
    add_bos: bool,
    clean_spaces: bool,
    no_bos: bool,
    escape_whitespaces: bool,
    add_sep: bool,
}

fn pre_config(name: &str) -> Option<PreConfig> {
    use PreKind::*;
    let base = |kind| PreConfig {
        kind,
        ignore_merges: false,
        add_bos: false,
        clean_spaces: true,
        no_bos: false,
        escape_whitespaces: false,
        add_sep: false,
    };
    let keep = |kind| PreConfig {
        clean_spaces: false,
        ..base(kind)
    };
    Some(match name {
        "" | "default" => base(Default),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => PreConfig {
            ignore_merges: true,
            add_bos: true,
            ..base(Llama3)
        },
        "deepseek-llm" => keep(DeepseekLlm),
        "deepseek-coder" => keep(DeepseekCoder),
        "falcon" => base(Falcon),
        "mpt" | "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
        | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert" | "olmo" | "jais" | "exaone4" => {
            base(Gpt2)
        }
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
            base(Starcoder)
        }
        "gemma4" | "granite-embed-multi-311m" => PreConfig {
            escape_whitespaces: true,
            ..base(Newlines)
        },
        "sarvam-moe" => PreConfig {
            escape_whitespaces: true,
            ..keep(Newlines)
        },
        "jina-v1-en" | "jina-v2-code" | "roberta-bpe" => PreConfig {
            add_sep: true,
            ..base(Gpt2)
        },
        "whitespace" => base(Whitespace),
        "command-r" | "smollm" => keep(Starcoder),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "grok-2"
        | "solar-open" => keep(Qwen2),
        "stablelm2" | "megrez" => base(Qwen2),
        "qwen35" => keep(Qwen35),
        "dbrx" | "smaug-bpe" => base(Llama3),
        "poro-chat" => keep(Bloom),
        "bloom" | "gpt3-finnish" => base(Bloom),
        "chatglm-bpe" => PreConfig {
            no_bos: true,
            ..base(Llama3)
        },
        "glm4" | "glm5" => PreConfig {
            no_bos: true,
            ignore_merges: true,
            ..base(Llama3)
        },
        "viking" => keep(Viking),
        "trillion" | "granite-docling" => keep(Gpt2),
        "laguna" => keep(Laguna),
        _ => return None,
    })
}

/// Special-token keys in llama.cpp's order (the deprecated FIM keys last, so they win).
const SPECIAL_KEYS: [&str; 17] = [
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.seperator_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.mask_token_id",
    "tokenizer.ggml.fim_pre_token_id",
    "tokenizer.ggml.fim_suf_token_id",
    "tokenizer.ggml.fim_mid_token_id",
    "tokenizer.ggml.fim_pad_token_id",
    "tokenizer.ggml.fim_rep_token_id",
    "tokenizer.ggml.fim_sep_token_id",
    "tokenizer.ggml.prefix_token_id",
    "tokenizer.ggml.suffix_token_id",
    "tokenizer.ggml.middle_token_id",
];

fn special_slot(s: &mut SpecialTokens, key_index: usize) -> &mut Option<u32> {
    match key_index {
        0 => &mut s.bos,
        1 => &mut s.eos,
        2 => &mut s.eot,
        3 => &mut s.eom,
        4 => &mut s.unk,
        5 => &mut s.sep,
        6 => &mut s.pad,
        7 => &mut s.mask,
        8 | 14 => &mut s.fim_pre,
        9 | 15 => &mut s.fim_suf,
        10 | 16 => &mut s.fim_mid,
        11 => &mut s.fim_pad,
        12 => &mut s.fim_rep,
        _ => &mut s.fim_sep,
    }
}

// Token texts by which llama.cpp recognises special tokens when the GGUF does not name them. When
// several are present llama.cpp takes whichever its hash map yields first; ternlm takes the first
// in these lists, which agrees on the vocabularies tested.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// llama.cpp forces `add_bos` for its `GEMMA4` pre-tokenizer type.
fn flags_gemma4(pre: &str) -> bool {
    pre == "gemma4" || pre == "granite-embed-multi-311m"
}

fn bad(msg: impl Into<String>) -> crate::Error {
    TokenizerError::BadVocab(msg.into()).into()
}

impl Vocab {
    /// Loads the vocabulary from GGUF metadata.
    pub fn from_metadata(md: &Metadata) -> Result<Vocab> {
        let model = Metadata::required(K_MODEL, md.str(K_MODEL))?.to_string();
        let mut pre = md.str(K_PRE)?.unwrap_or("").to_string();

        let mut special = SpecialTokens::default();
        let ty = match model.as_str() {
            "llama" => {
                special.bos = Some(1);
                special.eos = Some(2);
                special.unk = Some(0);
                VocabType::Spm
            }
            "gpt2" => {
                special.bos = Some(11);
                special.eos = Some(11);
                VocabType::Bpe
            }
            "gemma4" => {
                pre = "gemma4".into();
                VocabType::Bpe
            }
            _ => return Err(TokenizerError::UnknownModel(model).into()),
        };

        let (pre_kind, mut flags) = match ty {
            VocabType::Bpe => {
                let c = pre_config(&pre).ok_or_else(|| TokenizerError::UnknownPre(pre.clone()))?;
                if c.no_bos {
                    special.bos = None;
                }
                (
                    c.kind,
                    VocabFlags {
                        add_bos: c.add_bos,
                        add_eos: false,
                        add_sep: c.add_sep,
                        add_space_prefix: false,
                        clean_spaces: c.clean_spaces,
                        ignore_merges: c.ignore_merges,
                        escape_whitespaces: c.escape_whitespaces,
                        remove_extra_whitespaces: false,
                    },
                )
            }
            // SentencePiece ignores `tokenizer.ggml.pre`.
            VocabType::Spm => (
                PreKind::Default,
                VocabFlags {
                    add_bos: true,
                    add_eos: false,
                    add_sep: false,
                    add_space_prefix: true,
                    clean_spaces: false,
                    ignore_merges: false,
                    escape_whitespaces: true,
                    remove_extra_whitespaces: false,
                },
            ),
        };
        if let Some(v) = md.bool("tokenizer.ggml.add_space_prefix")? {
            flags.add_space_prefix = v;
        }
        if let Some(v) = md.bool("tokenizer.ggml.remove_extra_whitespaces")? {
            flags.remove_extra_whitespaces = v;
        }

        // Tokens, scores, types.
        let tokens = Metadata::required(K_TOKENS, md.str_array(K_TOKENS))?;
        let n = tokens.len();
        if n == 0 {
            return Err(bad("tokenizer.ggml.tokens is empty"));
        }
        if n > i32::MAX as usize {
            return Err(bad(format!("{n} tokens exceed the id range")));
        }
        let scores: Vec<f32> = match md.array(K_SCORES)? {
            None => vec![0.0; n],
            Some(Array::F32(v)) => v.clone(),
            Some(Array::I32(v)) => v.iter().map(|&x| x as f32).collect(),
            Some(a) => {
                return Err(GgufError::WrongType {
                    key: K_SCORES.into(),
                    expected: "ARRAY<FLOAT32> or ARRAY<INT32>",
                    found: format!("ARRAY<{}>", a.elem_type().name()),
                }
                .into())
            }
        };
        let mut attrs: Vec<TokenAttr> = match md.array(K_TYPES)? {
            None => vec![TokenAttr::NORMAL; n],
            Some(Array::I32(v)) => v.iter().map(|&t| TokenAttr::from_token_type(t)).collect(),
            Some(a) => {
                return Err(GgufError::WrongType {
                    key: K_TYPES.into(),
                    expected: "ARRAY<INT32>",
                    found: format!("ARRAY<{}>", a.elem_type().name()),
                }
                .into())
            }
        };
        if scores.len() != n {
            return Err(bad(format!(
                "{K_SCORES} has {} entries for {n} tokens",
                scores.len()
            )));
        }
        if attrs.len() != n {
            return Err(bad(format!(
                "{K_TYPES} has {} entries for {n} tokens",
                attrs.len()
            )));
        }

        let bytes = tokens.iter().map(|t| t.len().max(12)).sum::<usize>();
        if bytes > u32::MAX as usize {
            return Err(bad("token texts exceed 4 GiB"));
        }
        let mut texts = TokenTexts::with_capacity(n, bytes);
        for (i, t) in tokens.iter().enumerate() {
            // llama.cpp names empty tokens so that they stay addressable
            let named;
            let t = if t.is_empty() {
                named = format!("[EMPTY_{i}]");
                named.as_str()
            } else {
                t.as_str()
            };
            if let Err(first) = texts.push(t) {
                return Err(bad(format!(
                    "duplicate token text {t:?} (ids {first} and {i})"
                )));
            }
        }
        if ty == VocabType::Bpe {
            Metadata::required(K_MERGES, md.str_array(K_MERGES))?;
        }

        // Special token ids: defaults out of range are dropped, then the keys override.
        for i in 0..SPECIAL_KEYS.len() {
            let slot = special_slot(&mut special, i);
            if slot.is_some_and(|id| id as usize >= n) {
                *slot = None;
            }
        }
        for (i, key) in SPECIAL_KEYS.iter().enumerate() {
            let Some(v) = md.get(key) else { continue };
            let id = v.as_i128().ok_or_else(|| GgufError::WrongType {
                key: key.to_string(),
                expected: "an integer",
                found: v.describe(),
            })?;
            // An id outside the vocabulary keeps the default, as in llama.cpp.
            if (0..n as i128).contains(&id) {
                *special_slot(&mut special, i) = Some(id as u32);
            }
        }

        if let Some(v) = md.bool("tokenizer.ggml.add_bos_token")? {
            flags.add_bos = v;
        }
        if let Some(v) = md.bool("tokenizer.ggml.add_eos_token")? {
            flags.add_eos = v;
        }
        if let Some(v) = md.bool("tokenizer.ggml.add_sep_token")? {
            flags.add_sep = v;
        }
        if ty == VocabType::Bpe && pre_kind == PreKind::Newlines && flags_gemma4(&pre) {
            flags.add_bos = true;
        }

        let mut v = Vocab {
            model,
            pre,
            ty,
            pre_kind,
            texts,
            scores,
            attrs: Vec::new(),
            special,
            eog: Vec::new(),
            special_by_len: Vec::new(),
            flags,
        };
        v.detect_specials(&mut attrs);
        v.attrs = attrs;
        v.build_special_cache();
        v.apply_model_attrs(md)?;
        Ok(v)
    }

    /// llama.cpp's detection of EOT/EOM/FIM/EOG tokens by text, with its fix-ups of their types.
    fn detect_specials(&mut self, attrs: &mut [TokenAttr]) {
        let find = |list: &[&str]| list.iter().find_map(|t| self.id(t));
        let mut s = self.special;
        let mut mark = Vec::new();
        for (slot, list) in [
            (&mut s.eot, EOT_TEXTS),
            (&mut s.eom, EOM_TEXTS),
            (&mut s.fim_pre, FIM_PRE_TEXTS),
            (&mut s.fim_suf, FIM_SUF_TEXTS),
            (&mut s.fim_mid, FIM_MID_TEXTS),
            (&mut s.fim_pad, FIM_PAD_TEXTS),
            (&mut s.fim_rep, FIM_REP_TEXTS),
            (&mut s.fim_sep, FIM_SEP_TEXTS),
        ] {
            if slot.is_none() {
                *slot = find(list);
                mark.extend(*slot);
            }
        }
        self.special = s;
        for id in mark {
            attrs[id as usize].set(TokenAttr::CONTROL, true);
        }

        // control tokens named "unused…" are unused
        for (i, a) in attrs.iter_mut().enumerate() {
            if a.has(TokenAttr::CONTROL) && self.texts.get(i).contains("unused") {
                a.set(TokenAttr::UNUSED, true);
            }
        }

        let mut eog: Vec<u32> = [s.fim_pad, s.fim_rep, s.fim_sep]
            .into_iter()
            .flatten()
            .collect();
        for t in EOG_TEXTS {
            if let Some(id) = self.id(t) {
                eog.push(id);
                attrs[id as usize].set(TokenAttr::CONTROL, true);
            }
        }
        // gpt-oss: always rendered
        for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(id) = self.id(t) {
                attrs[id as usize] = TokenAttr::USER_DEFINED;
            }
        }
        eog.extend([s.eos, s.eot, s.eom].into_iter().flatten());
        eog.sort_unstable();
        eog.dedup();

        let texts = &self.texts;
        let pos = |eog: &[u32], t: &str| eog.iter().position(|&id| texts.get(id as usize) == t);
        // o200k_harmony and solar-open: "<|end|>" ends a message, not the generation
        let has_call = pos(&eog, "<|call|>").is_some() || pos(&eog, "<|calls|>").is_some();
        let harmony =
            has_call && (pos(&eog, "<|return|>").is_some() || pos(&eog, "<|flush|>").is_some());
        if let Some(end) = pos(&eog, "<|end|>").filter(|_| harmony) {
            attrs[eog[end] as usize] = TokenAttr::USER_DEFINED;
            eog.remove(end);
        }
        // gemma4 and plamo have a normal "</s>"
        let normal_s =
            pos(&eog, "<|tool_response>").is_some() || pos(&eog, "<|plamo:eos|>").is_some();
        if let Some(i) = pos(&eog, "</s>").filter(|_| normal_s) {
            attrs[eog[i] as usize] = TokenAttr::NORMAL;
            eog.remove(i);
        }
        self.eog = eog;
    }

    fn build_special_cache(&mut self) {
        let mask = TokenAttr::CONTROL | TokenAttr::USER_DEFINED | TokenAttr::UNKNOWN;
        let mut ids: Vec<u32> = (0..self.texts.len() as u32)
            .filter(|&i| self.attrs[i as usize].has(mask))
            .collect();
        // llama.cpp's std::sort leaves ties in an unspecified order; ternlm keeps id order
        ids.sort_by_key(|&i| std::cmp::Reverse(self.texts.get(i as usize).len()));
        self.special_by_len = ids;
    }

    /// llama.cpp's per-model attributes (lstrip/rstrip), keyed on the model and pre names.
    fn apply_model_attrs(&mut self, md: &Metadata) -> Result<()> {
        let name = md.str("general.name")?.unwrap_or("").to_lowercase();
        let arch = md.str("general.architecture")?.unwrap_or("");
        let pre = md.str(K_PRE)?.unwrap_or("");
        let any = |s: &str, subs: &[&str]| subs.iter().any(|x| s.contains(x));
        let set = |v: &mut Vocab, text: &str, attr: TokenAttr, on: bool| {
            if let Some(id) = v.id(text) {
                v.attrs[id as usize].set(attr, on);
            }
        };
        if any(pre, &["jina-v2-de", "jina-v2-es", "jina-v2-code"])
            || any(arch, &["nomic-bert-moe", "jina-bert-v3"])
        {
            set(self, "<mask>", TokenAttr::LSTRIP, true);
        } else if any(&name, &["phi-3", "phi3"]) {
            for i in 0..self.special_by_len.len() {
                let id = self.special_by_len[i] as usize;
                self.attrs[id].set(TokenAttr::RSTRIP, true);
            }
            set(self, "</s>", TokenAttr::RSTRIP, true);
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                set(self, t, TokenAttr::RSTRIP, false);
            }
        } else if name.contains("modern-bert") {
            set(self, "[MASK]", TokenAttr::LSTRIP, true);
        }
        Ok(())
    }

    /// `tokenizer.ggml.model`.
    pub fn model_name(&self) -> &str {
        &self.model
    }
    /// `tokenizer.ggml.pre` (empty when absent; `gemma4` for the gemma4 model).
    pub fn pre_name(&self) -> &str {
        &self.pre
    }
    pub fn vocab_type(&self) -> VocabType {
        self.ty
    }
    pub fn pre_kind(&self) -> PreKind {
        self.pre_kind
    }
    pub fn flags(&self) -> VocabFlags {
        self.flags
    }
    /// Whether encoding with `add_special` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.flags.add_bos
    }
    /// Whether encoding with `add_special` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.flags.add_eos
    }
    pub fn add_space_prefix(&self) -> bool {
        self.flags.add_space_prefix
    }
    pub fn len(&self) -> usize {
        self.texts.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The text of a token as stored in the GGUF (GPT-2 byte characters, `▁`, `<0x0A>` …).
    pub fn text(&self, id: u32) -> Option<&str> {
        ((id as usize) < self.len()).then(|| self.texts.get(id as usize))
    }
    /// The text of a token known to be in range.
    #[inline]
    pub(crate) fn text_unchecked(&self, id: u32) -> &str {
        self.texts.get(id as usize)
    }
    #[inline]
    pub(crate) fn attr_unchecked(&self, id: u32) -> TokenAttr {
        self.attrs[id as usize]
    }
    pub fn score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }
    pub fn attr(&self, id: u32) -> Option<TokenAttr> {
        self.attrs.get(id as usize).copied()
    }
    /// The id of a token text.
    #[inline]
    pub fn id(&self, text: &str) -> Option<u32> {
        self.texts.find(text)
    }
    /// [`Vocab::id`] of many texts (faster than one by one on large vocabularies).
    pub fn ids(&self, texts: &[&str], out: &mut Vec<Option<u32>>) {
        self.texts.find_many(texts, out)
    }
    pub fn special(&self) -> &SpecialTokens {
        &self.special
    }
    /// Ids that end generation, ascending.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }
    /// Control, user-defined and unknown tokens, longest first: the order in which encoding
    /// matches them as whole strings.
    pub fn special_tokens(&self) -> &[u32] {
        &self.special_by_len
    }
}

#[cfg(test)]
impl Vocab {
    pub(crate) fn set_attr_for_tests(&mut self, id: u32, attr: TokenAttr) {
        self.attrs[id as usize] = attr;
    }
}
