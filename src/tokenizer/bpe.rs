//! BPE with ranked merges (`tokenizer.ggml.model` = `gpt2` or `gemma4`), as llama.cpp's
//! `llm_tokenizer_bpe_session` applies it.
//!
//! Each pre-tokenized word is mapped to GPT-2 byte characters (byte-level BPE) or kept as raw
//! UTF-8 (`gemma4`), cut into characters, and the adjacent pair with the lowest merge rank
//! (leftmost on ties) is merged until none is left, with a priority queue. Merges are looked up
//! by the ids of their two parts in a hash map built once: `(left, right) → (rank, merged id)`.
//! Texts that are merge parts but not tokens get ids past the vocabulary, so that every symbol is
//! one integer. A final symbol that is not a token falls back to per-byte tokens, with llama.cpp's
//! quirk kept: in byte-level mode only the ASCII bytes of the *encoded* text can be found.

use super::pretokenize::{PreTokenizer, SplitScratch};
use super::unicode::BYTE_TO_CHAR;
use super::vocab::{FxMap, Vocab};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Range;

/// No token and no merge part.
const NONE: u32 = u32::MAX;

#[derive(Debug, Clone)]
pub(crate) struct Bpe {
    merges: MergeTable,
    /// Merge parts that are not tokens, with ids from `n_vocab` on.
    extra: FxMap<Box<str>, u32>,
    n_vocab: u32,
    /// Byte-level: the symbol id of each byte's GPT-2 character.
    byte_sym: [u32; 256],
    /// The token a byte falls back to ([`NONE`]: dropped, as in llama.cpp).
    byte_fallback: [u32; 256],
    byte_encode: bool,
    ignore_merges: bool,
    /// gemma4: a word of newlines that is a token is emitted whole.
    newline_words: bool,
    pre: PreTokenizer,
}

/// The merges by left part: the right parts of left id `l` are
/// `entries[first[l]..first[l + 1]]`, sorted, each with its rank and merged id. Smaller than a
/// hash map and quick to build (a counting sort).
#[derive(Debug, Clone, Default)]
struct MergeTable {
    first: Vec<u32>,
    /// `(right, rank, merged)`.
    entries: Vec<(u32, u32, u32)>,
}

impl MergeTable {
    /// From `(left, right, merged)` in rank order; of duplicate pairs the first (lowest rank) wins.
    fn build(n_ids: usize, merges: &[(u32, u32, u32)]) -> MergeTable {
        let mut first = vec![0u32; n_ids + 1];
        for &(l, _, _) in merges {
            first[l as usize + 1] += 1;
        }
        for i in 0..n_ids {
            first[i + 1] += first[i];
        }
        let mut fill = first.clone();
        let mut entries = vec![(0, 0, 0); merges.len()];
        for (rank, &(l, r, m)) in merges.iter().enumerate() {
            let at = &mut fill[l as usize];
            entries[*at as usize] = (r, rank as u32, m);
            *at += 1;
        }
        // sort each left's run by right part (rank order kept among equals), drop duplicates
        let mut out = Vec::with_capacity(entries.len());
        let mut new_first = Vec::with_capacity(n_ids + 1);
        for l in 0..n_ids {
            new_first.push(out.len() as u32);
            let run = &mut entries[first[l] as usize..first[l + 1] as usize];
            run.sort_unstable_by_key(|&(r, rank, _)| (r, rank));
            let mut prev = None;
            for &e in run.iter() {
                if prev != Some(e.0) {
                    out.push(e);
                    prev = Some(e.0);
                }
            }
        }
        new_first.push(out.len() as u32);
        MergeTable {
            first: new_first,
            entries: out,
        }
    }

    /// `(rank, merged)` of the pair, if it merges.
    #[inline]
    fn get(&self, l: u32, r: u32) -> Option<(u32, u32)> {
        let (a, b) = (
            *self.first.get(l as usize)? as usize,
            *self.first.get(l as usize + 1)? as usize,
        );
        let run = &self.entries[a..b];
        let i = if run.len() <= 8 {
            run.iter().position(|e| e.0 == r)?
        } else {
            run.binary_search_by_key(&r, |e| e.0).ok()?
        };
        let e = run[i];
        Some((e.1, e.2))
    }
}

/// A symbol of the word being merged: a byte range of the (encoded) word.
#[derive(Debug, Clone, Copy)]
struct Sym {
    start: u32,
    len: u32,
    prev: i32,
    next: i32,
    id: u32,
}

/// A queued pair: `(rank, left, right, size, merged)`, smallest rank then leftmost first.
type Bigram = Reverse<(u32, u32, u32, u32, u32)>;

/// Reusable buffers of [`Bpe::encode`].
#[derive(Debug, Default)]
pub(crate) struct BpeScratch {
    split: SplitScratch,
    words: Vec<Range<usize>>,
    enc: String,
    syms: Vec<Sym>,
    heap: BinaryHeap<Bigram>,
}

impl Bpe {
    /// Builds the merge table from `tokenizer.ggml.merges` (`"left right"` strings in rank order).
    pub fn new(
        vocab: &Vocab,
        merges: &[String],
        pre: PreTokenizer,
        byte_encode: bool,
        newline_words: bool,
    ) -> Bpe {
        let n_vocab = vocab.len() as u32;
        let mut extra: FxMap<Box<str>, u32> = FxMap::default();
        let split = |w: &str| -> (usize, usize) {
            // llama.cpp: find(' ', 1); no space leaves both parts empty
            match w.bytes().skip(1).position(|b| b == b' ') {
                Some(p) => (p + 1, p + 2),
                None => (0, w.len()),
            }
        };
        let id_of = |s: &str, extra: &mut FxMap<Box<str>, u32>| -> u32 {
            if let Some(id) = vocab.id(s) {
                return id;
            }
            if let Some(&id) = extra.get(s) {
                return id;
            }
            let id = n_vocab + extra.len() as u32;
            extra.insert(s.into(), id);
            id
        };
        // One pass over the merges, in chunks whose lookups are batched: part ids (texts that are
        // not tokens get extra ids) and the merged token. A merged text that is not a token may
        // still be an extra part named by a later merge; those are resolved after the pass.
        let mut triples: Vec<(u32, u32, u32)> = Vec::with_capacity(merges.len());
        let mut pending = Vec::new();
        let mut cuts = Vec::new();
        let mut cat = String::new();
        let mut ids = Vec::new();
        for chunk in merges.chunks(1024) {
            cuts.clear();
            cat.clear();
            for w in chunk {
                let (a, b) = split(w);
                cat.push_str(&w[..a]);
                cat.push_str(&w[b..]);
                cuts.push((a, b, cat.len()));
            }
            let mut keys: Vec<&str> = Vec::with_capacity(3 * chunk.len());
            let mut start = 0;
            for (w, &(a, b, end)) in chunk.iter().zip(&cuts) {
                keys.extend([&w[..a], &w[b..], &cat[start..end]]);
                start = end;
            }
            vocab.ids(&keys, &mut ids);
            for ((w, &(a, b, _)), id) in chunk.iter().zip(&cuts).zip(ids.chunks(3)) {
                let l = id[0].unwrap_or_else(|| id_of(&w[..a], &mut extra));
                let r = id[1].unwrap_or_else(|| id_of(&w[b..], &mut extra));
                let merged = id[2].unwrap_or_else(|| {
                    pending.push(triples.len());
                    NONE
                });
                triples.push((l, r, merged));
            }
        }
        if !extra.is_empty() {
            let mut buf = String::new();
            for rank in pending {
                let w = &merges[rank];
                let (a, b) = split(w);
                buf.clear();
                buf.push_str(&w[..a]);
                buf.push_str(&w[b..]);
                if let Some(&id) = extra.get(buf.as_str()) {
                    triples[rank].2 = id;
                }
            }
        }
        let table = MergeTable::build(n_vocab as usize + extra.len(), &triples);

        let lookup = |s: &str| {
            vocab
                .id(s)
                .or_else(|| extra.get(s).copied())
                .unwrap_or(NONE)
        };
        let mut byte_sym = [NONE; 256];
        let mut byte_fallback = [NONE; 256];
        let mut tmp = [0u8; 4];
        for b in 0..256usize {
            byte_sym[b] = lookup(BYTE_TO_CHAR[b].encode_utf8(&mut tmp));
            byte_fallback[b] = if byte_encode {
                // a single byte of the encoded text: only ASCII can name a token
                if b < 0x80 {
                    vocab
                        .id((b as u8 as char).encode_utf8(&mut tmp))
                        .unwrap_or(NONE)
                } else {
                    NONE
                }
            } else {
                vocab.id(&format!("<0x{b:02X}>")).unwrap_or(NONE)
            };
        }
        Bpe {
            merges: table,
            extra,
            n_vocab,
            byte_sym,
            byte_fallback,
            byte_encode,
            ignore_merges: vocab.flags().ignore_merges,
            newline_words,
            pre,
        }
    }

    /// Tokenizes one fragment of raw text (no special tokens in it).
    pub(crate) fn encode(
        &self,
        vocab: &Vocab,
        text: &str,
        st: &mut BpeScratch,
        out: &mut Vec<u32>,
    ) {
        st.words.clear();
        self.pre.split(text, &mut st.split, &mut st.words);
        let words = std::mem::take(&mut st.words);
        for w in &words {
            self.word(vocab, &text[w.clone()], st, out);
        }
        st.words = words;
    }

    fn word(&self, vocab: &Vocab, word: &str, st: &mut BpeScratch, out: &mut Vec<u32>) {
        st.syms.clear();
        let enc = std::mem::take(&mut st.enc);
        let mut enc = enc;
        enc.clear();
        let work: &str = if self.byte_encode {
            for (i, b) in word.bytes().enumerate() {
                let start = enc.len() as u32;
                enc.push(BYTE_TO_CHAR[b as usize]);
                st.syms.push(Sym {
                    start,
                    len: enc.len() as u32 - start,
                    prev: i as i32 - 1,
                    next: i as i32 + 1,
                    id: self.byte_sym[b as usize],
                });
            }
            &enc
        } else {
            for (i, (start, ch)) in word.char_indices().enumerate() {
                let s = &word[start..start + ch.len_utf8()];
                let id = vocab
                    .id(s)
                    .or_else(|| self.extra.get(s).copied())
                    .unwrap_or(NONE);
                st.syms.push(Sym {
                    start: start as u32,
                    len: ch.len_utf8() as u32,
                    prev: i as i32 - 1,
                    next: i as i32 + 1,
                    id,
                });
            }
            word
        };
        if let Some(last) = st.syms.last_mut() {
            last.next = -1;
        }

        // llama3-style vocabularies take a word that is a token whole; gemma4 a run of newlines
        let whole =
            if self.ignore_merges || (self.newline_words && word.bytes().all(|b| b == b'\n')) {
                vocab.id(work)
            } else {
                None
            };
        if let Some(id) = whole {
            out.push(id);
        } else {
            self.merge(&mut st.syms, &mut st.heap);
            for s in st.syms.iter().filter(|s| s.len > 0) {
                if s.id < self.n_vocab {
                    out.push(s.id);
                } else {
                    let bytes = &work.as_bytes()[s.start as usize..(s.start + s.len) as usize];
                    out.extend(
                        bytes
                            .iter()
                            .map(|&b| self.byte_fallback[b as usize])
                            .filter(|&id| id != NONE),
                    );
                }
            }
        }
        st.enc = enc;
    }

    #[inline]
    fn bigram(&self, syms: &[Sym], heap: &mut BinaryHeap<Bigram>, l: i32, r: i32) {
        if l < 0 || r < 0 {
            return;
        }
        let (a, b) = (syms[l as usize], syms[r as usize]);
        if a.id == NONE || b.id == NONE {
            return;
        }
        if let Some((rank, merged)) = self.merges.get(a.id, b.id) {
            heap.push(Reverse((rank, l as u32, r as u32, a.len + b.len, merged)));
        }
    }

    /// Merges the symbols of one word in place (merged-away symbols get length 0).
    fn merge(&self, syms: &mut [Sym], heap: &mut BinaryHeap<Bigram>) {
        heap.clear();
        for i in 1..syms.len() as i32 {
            self.bigram(syms, heap, i - 1, i);
        }
        while let Some(Reverse((_, l, r, size, merged))) = heap.pop() {
            let (left, right) = (syms[l as usize], syms[r as usize]);
            // stale: one side was merged since the pair was queued
            if left.len == 0 || right.len == 0 || left.len + right.len != size {
                continue;
            }
            let s = &mut syms[l as usize];
            s.len = size;
            s.id = merged;
            s.next = right.next;
            syms[r as usize].len = 0;
            if right.next >= 0 {
                syms[right.next as usize].prev = l as i32;
            }
            self.bigram(syms, heap, left.prev, l as i32);
            self.bigram(syms, heap, l as i32, right.next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::pretokenize::PreKind;

    fn toy_vocab(tokens: &[&str], merges: &[&str]) -> (Vocab, Vec<String>) {
        use crate::gguf::{Array, Value};
        let strs =
            |v: &[&str]| Value::Array(Array::String(v.iter().map(|s| s.to_string()).collect()));
        let md = crate::tokenizer::test_metadata(&[
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.pre", Value::String("gpt-2".into())),
            ("tokenizer.ggml.tokens", strs(tokens)),
            ("tokenizer.ggml.merges", strs(merges)),
        ]);
        let v = Vocab::from_metadata(&md).unwrap();
        (v, merges.iter().map(|s| s.to_string()).collect())
    }

    fn run(tokens: &[&str], merges: &[&str], text: &str) -> Vec<u32> {
        let (v, m) = toy_vocab(tokens, merges);
        let bpe = Bpe::new(
            &v,
            &m,
            PreTokenizer::new(PreKind::Gpt2).unwrap(),
            true,
            false,
        );
        let mut out = Vec::new();
        bpe.encode(&v, text, &mut BpeScratch::default(), &mut out);
        out
    }

    #[test]
    fn merges_apply_by_rank_not_by_position() {
        let toks = ["a", "b", "c", "ab", "bc", "abc"];
        // "b c" ranks before "a b": abc → a + bc, then no "a bc" merge
        assert_eq!(run(&toks, &["b c", "a b"], "abc"), [0, 4]);
        assert_eq!(run(&toks, &["a b", "b c"], "abc"), [3, 2]);
        assert_eq!(run(&toks, &["a b", "b c", "ab c"], "abc"), [5]);
        // ties go to the leftmost pair: "aaaa" with "a a" → aa aa
        let toks = ["a", "aa", "aaaa"];
        assert_eq!(run(&toks, &["a a"], "aaa"), [1, 0]);
        assert_eq!(run(&toks, &["a a", "aa aa"], "aaaa"), [2]);
    }

    #[test]
    fn merge_parts_that_are_not_tokens() {
        // "x y" makes a non-token "xy" that a later merge consumes
        let toks = ["x", "y", "z", "xyz"];
        assert_eq!(run(&toks, &["x y", "xy z"], "xyz"), [3]);
        // a final non-token symbol falls back to its ASCII bytes
        assert_eq!(run(&toks, &["x y"], "xy"), [0, 1]);
    }
}
