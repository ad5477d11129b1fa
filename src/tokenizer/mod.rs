//! Tokenizers built from GGUF metadata (`tokenizer.ggml.*`), chat templates and the streaming
//! detokenizer (spec/runtime.md §7). Conformance oracle: llama.cpp's `llama-vocab.cpp`.
//!
//! [`Tokenizer::encode`] is `llama_tokenize`: special tokens are first cut out of the text as
//! whole strings ([`Tokenizer::partition`], llama.cpp's `tokenizer_st_partition`), then each
//! remaining fragment goes through SentencePiece (`spm.rs`) or BPE with its pre-tokenizer (`bpe.rs`,
//! [`pretokenize`]). [`Tokenizer::token_to_piece`] and [`Tokenizer::decode`] are
//! `llama_token_to_piece` and `llama_detokenize`, byte for byte.
//!
//! Supported: `tokenizer.ggml.model` `llama` (SPM), `gpt2` (byte-level BPE, the pre-tokenizers of
//! [`PreKind`]) and `gemma4` (BPE on raw UTF-8). Everything else is refused with a typed error,
//! never tokenized approximately.

mod bpe;
pub mod chat;
pub mod pretokenize;
mod spm;
pub mod stream;
mod unicode;
mod unicode_data;
pub mod vocab;

pub use pretokenize::PreKind;
pub use vocab::{SpecialTokens, TokenAttr, Vocab, VocabFlags, VocabType};

use crate::error::{Result, TokenizerError};
use crate::gguf::Metadata;
use aho_corasick::{AhoCorasick, MatchKind};
use bpe::{Bpe, BpeScratch};
use pretokenize::PreTokenizer;
use spm::SpmScratch;
use std::collections::BTreeMap;

/// A piece of the input after special-token partitioning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// Text to tokenize: a byte range of the input.
    Text(usize, usize),
    /// A special token matched as a whole string.
    Token(u32),
}

#[derive(Debug, Clone)]
enum Model {
    /// SentencePiece: the fallback token of each byte.
    Spm {
        byte_tokens: Box<[u32; 256]>,
    },
    Bpe(Box<Bpe>),
}

/// A tokenizer built from GGUF metadata.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    vocab: Vocab,
    model: Model,
    /// Matches the texts of [`Vocab::special_tokens`]; pattern i is `special_tokens()[i]`.
    specials: Option<AhoCorasick>,
}

/// C's `isspace` in the "C" locale, which llama.cpp uses to strip around special tokens.
fn c_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

impl Tokenizer {
    /// Builds the tokenizer; unknown `tokenizer.ggml.model` or `tokenizer.ggml.pre` values are a
    /// [`TokenizerError::UnknownModel`] / [`TokenizerError::UnknownPre`].
    pub fn from_metadata(md: &Metadata) -> Result<Tokenizer> {
        let vocab = Vocab::from_metadata(md)?;
        let model = match vocab.vocab_type() {
            VocabType::Spm => {
                let mut byte_tokens = Box::new([spm::NONE; 256]);
                let unk = vocab.special().unk.unwrap_or(spm::NONE);
                for (b, slot) in byte_tokens.iter_mut().enumerate() {
                    // llama.cpp's byte_to_token: "<0xXX>", else the byte as a string (it throws
                    // when neither exists; ternlm falls back to the unknown token)
                    let single = (b < 0x80).then(|| vocab.id(&(b as u8 as char).to_string()));
                    *slot = vocab
                        .id(&format!("<0x{b:02X}>"))
                        .or(single.flatten())
                        .unwrap_or(unk);
                }
                Model::Spm { byte_tokens }
            }
            VocabType::Bpe => {
                let kind = vocab.pre_kind();
                let pre = PreTokenizer::new(kind).map_err(|e| {
                    TokenizerError::UnknownPre(format!("{}: {e}", vocab.pre_name()))
                })?;
                let merges = Metadata::required(
                    "tokenizer.ggml.merges",
                    md.str_array("tokenizer.ggml.merges"),
                )?;
                let byte_encode = !matches!(kind, PreKind::Newlines | PreKind::Whitespace);
                let newline_words =
                    matches!(vocab.pre_name(), "gemma4" | "granite-embed-multi-311m");
                Model::Bpe(Box::new(Bpe::new(
                    &vocab,
                    merges,
                    pre,
                    byte_encode,
                    newline_words,
                )))
            }
        };
        let specials = if vocab.special_tokens().is_empty() {
            None
        } else {
            let texts = vocab
                .special_tokens()
                .iter()
                .map(|&id| vocab.text_unchecked(id));
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .build(texts)
                    .map_err(|e| TokenizerError::BadVocab(format!("special tokens: {e}")))?,
            )
        };
        Ok(Tokenizer {
            vocab,
            model,
            specials,
        })
    }

    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }
    pub fn n_vocab(&self) -> usize {
        self.vocab.len()
    }
    pub fn bos(&self) -> Option<u32> {
        self.vocab.special().bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.vocab.special().eos
    }
    /// Whether the token ends generation (EOS, EOT, EOM and the tokens llama.cpp detects by text).
    pub fn is_eog(&self, id: u32) -> bool {
        self.vocab.is_eog(id)
    }
    /// The token's text as stored in the GGUF.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.vocab.text(id)
    }
    /// `tokenizer.ggml.model`: `"gpt2"`, `"llama"` or `"gemma4"`.
    pub fn model_name(&self) -> &str {
        self.vocab.model_name()
    }
    /// `tokenizer.ggml.pre` (empty when absent).
    pub fn pre_name(&self) -> &str {
        self.vocab.pre_name()
    }
    /// Whether `encode(…, add_special = true, …)` prepends BOS / appends EOS.
    pub fn add_bos(&self) -> bool {
        self.vocab.flags().add_bos
    }
    pub fn add_eos(&self) -> bool {
        self.vocab.flags().add_eos
    }

    /// `llama_tokenize(text, add_special, parse_special)`: with `add_special` BOS/EOS are added
    /// as the model asks; with `parse_special` control tokens in the text are recognised
    /// (user-defined tokens always are).
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        let frags = self.partition(text, parse_special);
        let flags = self.vocab.flags();
        let sp = self.vocab.special();
        if add_special && flags.add_bos {
            // llama.cpp asserts a BOS exists; without one there is nothing to add
            out.extend(sp.bos);
        }
        match &self.model {
            Model::Spm { byte_tokens } => {
                let mut st = SpmScratch::default();
                let mut buf = String::new();
                // the space prefix goes before the first fragment and after each special token
                let mut prev_special = true;
                for f in frags {
                    match f {
                        Fragment::Text(a, b) => {
                            buf.clear();
                            if flags.add_space_prefix && prev_special {
                                buf.push('▁');
                            }
                            escape_whitespace(&text[a..b], &mut buf);
                            spm::encode(&self.vocab, byte_tokens, &buf, &mut st, &mut out);
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            Model::Bpe(bpe) => {
                let mut st = BpeScratch::default();
                let mut buf = String::new();
                for f in frags {
                    match f {
                        Fragment::Text(a, b) if flags.escape_whitespaces => {
                            buf.clear();
                            escape_whitespace(&text[a..b], &mut buf);
                            bpe.encode(&self.vocab, &buf, &mut st, &mut out);
                        }
                        Fragment::Text(a, b) => {
                            bpe.encode(&self.vocab, &text[a..b], &mut st, &mut out)
                        }
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_special && flags.add_eos {
            out.extend(sp.eos);
        }
        out
    }

    /// llama.cpp's `tokenizer_st_partition`: cuts special tokens out of `text` as whole strings,
    /// longest token first, each token splitting every text fragment left by the longer ones.
    /// User-defined tokens are always matched; control and unknown tokens only with
    /// `parse_special`. Tokens with the lstrip/rstrip attribute absorb the whitespace beside them.
    pub fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        if text.is_empty() {
            return Vec::new();
        }
        let whole = vec![Fragment::Text(0, text.len())];
        let Some(ac) = &self.specials else {
            return whole;
        };
        let order = self.vocab.special_tokens();
        let skip = TokenAttr::CONTROL | TokenAttr::UNKNOWN;
        // every occurrence of every special token, grouped by priority then position
        let mut hits: Vec<(u32, u32)> = ac
            .find_overlapping_iter(text)
            .filter(|m| {
                parse_special
                    || !self
                        .vocab
                        .attr_unchecked(order[m.pattern().as_usize()])
                        .has(skip)
            })
            .map(|m| (m.pattern().as_u32(), m.start() as u32))
            .collect();
        if hits.is_empty() {
            return whole;
        }
        hits.sort_unstable();
        // llama.cpp splits every text fragment by one token after the other. Equivalently, taking
        // each token's occurrences left to right: an occurrence is cut out when it lies wholly
        // inside a text fragment that is still there (not in a longer token, not overlapping an
        // earlier occurrence, not in whitespace a token stripped).
        let bytes = text.as_bytes();
        let mut texts: BTreeMap<usize, usize> = BTreeMap::from([(0, text.len())]);
        let mut tokens: Vec<(usize, u32)> = Vec::new();
        for group in hits.chunk_by(|a, b| a.0 == b.0) {
            let id = order[group[0].0 as usize];
            let tlen = self.vocab.text_unchecked(id).len();
            let attr = self.vocab.attr_unchecked(id);
            for &(_, m) in group {
                let m = m as usize;
                let Some((&s, &e)) = texts.range(..=m).next_back() else {
                    continue;
                };
                if m + tlen > e {
                    continue;
                }
                texts.remove(&s);
                let mut left_end = m;
                if attr.has(TokenAttr::LSTRIP) {
                    while left_end > s && c_isspace(bytes[left_end - 1]) {
                        left_end -= 1;
                    }
                }
                if left_end > s {
                    texts.insert(s, left_end);
                }
                tokens.push((m, id));
                let mut r = m + tlen;
                if attr.has(TokenAttr::RSTRIP) {
                    while r < e && c_isspace(bytes[r]) {
                        r += 1;
                    }
                }
                if r < e {
                    texts.insert(r, e);
                }
            }
        }
        tokens.sort_unstable();
        let mut out = Vec::with_capacity(texts.len() + tokens.len());
        let mut t = tokens.into_iter().peekable();
        for (s, e) in texts {
            while let Some((_, id)) = t.next_if(|&(m, _)| m < s) {
                out.push(Fragment::Token(id));
            }
            out.push(Fragment::Text(s, e));
        }
        out.extend(t.map(|(_, id)| Fragment::Token(id)));
        out
    }

    /// `llama_token_to_piece(id, lstrip = 0, special)`: the token's bytes. Control and unknown
    /// tokens give nothing unless `special`.
    pub fn token_to_piece(&self, id: u32, special: bool) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.piece_into(id, special, false, &mut out)?;
        Ok(out)
    }

    fn piece_into(&self, id: u32, special: bool, lstrip: bool, out: &mut Vec<u8>) -> Result<()> {
        let attr = self.vocab.attr(id).ok_or(TokenizerError::TokenOutOfRange {
            id,
            n_vocab: self.vocab.len(),
        })?;
        if !special && attr.has(TokenAttr::UNKNOWN | TokenAttr::CONTROL) {
            return Ok(());
        }
        let text = self.vocab.text_unchecked(id);
        let start = out.len();
        if attr.has(TokenAttr::UNKNOWN | TokenAttr::CONTROL | TokenAttr::USER_DEFINED) {
            out.extend_from_slice(text.as_bytes());
        } else if attr.has(TokenAttr::NORMAL) {
            let spm_like =
                matches!(self.model, Model::Spm { .. }) || self.vocab.flags().escape_whitespaces;
            if spm_like {
                unescape_whitespace(text, out);
            } else {
                decode_gpt2_text(text, out);
            }
        } else if attr.has(TokenAttr::BYTE) {
            out.push(token_to_byte(text));
        }
        // llama.cpp strips at most `lstrip` (here 1) leading spaces of the piece
        if lstrip && out.get(start) == Some(&b' ') {
            out.remove(start);
        }
        Ok(())
    }

    /// `llama_detokenize(ids, remove_special, unparse_special)`, invalid UTF-8 replaced at the
    /// end. `remove_special` drops a leading BOS / trailing EOS that the model adds itself;
    /// `unparse_special` renders control tokens.
    pub fn decode(
        &self,
        ids: &[u32],
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<String> {
        Ok(
            String::from_utf8_lossy(&self.decode_bytes(ids, remove_special, unparse_special)?)
                .into_owned(),
        )
    }

    /// [`Tokenizer::decode`] before the UTF-8 conversion.
    pub fn decode_bytes(
        &self,
        ids: &[u32],
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<Vec<u8>> {
        let flags = self.vocab.flags();
        let sp = self.vocab.special();
        let mut ids = ids;
        // SentencePiece removes the space its encoder put in front
        let mut remove_space = flags.add_space_prefix;
        if remove_special && flags.add_bos {
            if let (Some(&first), Some(bos)) = (ids.first(), sp.bos) {
                if first == bos {
                    remove_space = false;
                    ids = &ids[1..];
                }
            }
        }
        if remove_special && flags.add_eos {
            if let (Some(&last), Some(eos)) = (ids.last(), sp.eos) {
                if last == eos {
                    ids = &ids[..ids.len() - 1];
                }
            }
        }
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            self.piece_into(id, unparse_special, remove_space, &mut out)?;
            remove_space = false;
        }
        if flags.clean_spaces {
            clean_up_spaces(&mut out);
        }
        Ok(out)
    }
}

/// `llama_escape_whitespace`: spaces become `▁`.
fn escape_whitespace(text: &str, out: &mut String) {
    let mut rest = text;
    while let Some(p) = rest.find(' ') {
        out.push_str(&rest[..p]);
        out.push('▁');
        rest = &rest[p + 1..];
    }
    out.push_str(rest);
}

fn unescape_whitespace(text: &str, out: &mut Vec<u8>) {
    let mut rest = text;
    while let Some(p) = rest.find('▁') {
        out.extend_from_slice(&rest.as_bytes()[..p]);
        out.push(b' ');
        rest = &rest[p + '▁'.len_utf8()..];
    }
    out.extend_from_slice(rest.as_bytes());
}

/// `llama_decode_text`: GPT-2 byte characters back to bytes; a character outside the table
/// becomes llama.cpp's `[UNK_BYTE_0x…]` marker (which, as there, repeats the whole token text).
fn decode_gpt2_text(text: &str, out: &mut Vec<u8>) {
    for ch in text.chars() {
        match unicode::char_to_byte(ch) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut tmp = [0u8; 4];
                for b in ch.encode_utf8(&mut tmp).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
}

/// The byte of a `<0xXX>` token (`strtol` of the two characters after `<0x`; 0 if unparsable).
fn token_to_byte(text: &str) -> u8 {
    let digits = text.as_bytes().get(3..).unwrap_or(&[]);
    let mut v = 0u8;
    for &c in digits.iter().take(2) {
        match (c as char).to_digit(16) {
            Some(d) => v = v.wrapping_mul(16).wrapping_add(d as u8),
            None => break,
        }
    }
    v
}

/// llama.cpp's `clean_up_tokenization_spaces`, three in-place passes kept as written there
/// (including which spaces around apostrophes survive).
fn clean_up_spaces(t: &mut Vec<u8>) {
    // " ?", " !", " .", " ," lose the space
    let n = t.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = t[i];
        if t[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        t[total] = x;
        total += 1;
    }
    t.truncate(total);
    // " ' " becomes "'"
    let n = t.len();
    let mut total = usize::from(n > 0);
    let mut i = 1;
    while i < n {
        let x = t[i];
        if x == b'\'' && i + 1 < n && t[i - 1] == b' ' && t[i + 1] == b' ' {
            total -= 1;
            i += 1;
            t[i] = 0;
        }
        t[total] = x;
        total += 1;
        i += 1;
    }
    t.truncate(total);
    // " 's", " 'm", " 're", " 've" lose the space
    let n = t.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = t[i];
        if t[i - 1] == b' ' && x == b'\'' && i + 1 < n {
            let x1 = t[i + 1];
            if x1 == b's' || x1 == b'm' {
                total -= 1;
            } else if i + 2 < n && x1 != b't' && x1 != b'd' {
                let x2 = t[i + 2];
                if (x1 == b'r' || x1 == b'v') && x2 == b'e' {
                    total -= 1;
                }
            }
        }
        t[total] = x;
        total += 1;
    }
    t.truncate(total);
}

/// Metadata for unit tests, through a real GGUF byte image (the reader is the only way in).
#[cfg(test)]
pub(crate) fn test_metadata(kv: &[(&str, crate::gguf::Value)]) -> Metadata {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend((kv.len() as u64).to_le_bytes());
    for (k, v) in kv {
        b.extend((k.len() as u64).to_le_bytes());
        b.extend(k.as_bytes());
        b.extend((v.value_type() as u32).to_le_bytes());
        v.encode_payload(&mut b);
    }
    while !b.len().is_multiple_of(32) {
        b.push(0);
    }
    crate::gguf::GgufFile::from_bytes(&b)
        .expect("test GGUF")
        .metadata()
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{Array, Value};

    fn strs(v: &[&str]) -> Value {
        Value::Array(Array::String(v.iter().map(|s| s.to_string()).collect()))
    }

    /// A small SentencePiece vocabulary: `<unk> <s> </s>`, 256 byte tokens, then `pieces`
    /// (score = -index), with `extra` (text, type) tokens at the end.
    fn spm(pieces: &[&str], extra: &[(&str, i32)]) -> Tokenizer {
        let mut toks: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut types = vec![2, 3, 3];
        for b in 0..256 {
            toks.push(format!("<0x{b:02X}>"));
            types.push(6);
        }
        for p in pieces {
            toks.push(p.to_string());
            types.push(1);
        }
        for (t, ty) in extra {
            toks.push(t.to_string());
            types.push(*ty);
        }
        let scores: Vec<f32> = (0..toks.len()).map(|i| -(i as f32)).collect();
        let md = test_metadata(&[
            ("tokenizer.ggml.model", Value::String("llama".into())),
            ("tokenizer.ggml.tokens", Value::Array(Array::String(toks))),
            ("tokenizer.ggml.scores", Value::Array(Array::F32(scores))),
            ("tokenizer.ggml.token_type", Value::Array(Array::I32(types))),
        ]);
        Tokenizer::from_metadata(&md).unwrap()
    }

    fn ids(t: &Tokenizer, texts: &[&str]) -> Vec<u32> {
        texts.iter().map(|s| t.vocab().id(s).unwrap()).collect()
    }

    #[test]
    fn spm_byte_fallback_and_space_prefix() {
        let t = spm(&["▁", "h", "i", "▁h", "▁hi"], &[]);
        assert_eq!(t.encode("hi", false, false), ids(&t, &["▁hi"]));
        assert_eq!(
            t.encode("hi", true, false),
            [1, t.vocab().id("▁hi").unwrap()]
        );
        // "é" is no piece: its two UTF-8 bytes
        let e = t.encode("é", false, false);
        assert_eq!(e, [ids(&t, &["▁"])[0], 3 + 0xc3, 3 + 0xa9]);
        assert_eq!(t.decode(&e, false, false).unwrap(), "é");
        assert_eq!(t.token_to_piece(3 + 0x41, false).unwrap(), b"A");
        assert_eq!(t.token_to_piece(1, false).unwrap(), b"");
        assert_eq!(t.token_to_piece(1, true).unwrap(), b"<s>");
        assert!(t.token_to_piece(100_000, true).is_err());
    }

    #[test]
    fn special_partition_rules() {
        let t = spm(&["▁", "a", "b"], &[("<ctl>", 3), ("<usr>", 4), ("<u>", 4)]);
        let ctl = t.vocab().id("<ctl>").unwrap();
        let usr = t.vocab().id("<usr>").unwrap();
        // user-defined tokens always match, control tokens only with parse_special
        let p = t.partition("a<usr>b<ctl>", false);
        assert_eq!(
            p,
            [
                Fragment::Text(0, 1),
                Fragment::Token(usr),
                Fragment::Text(6, 12)
            ]
        );
        let p = t.partition("a<usr>b<ctl>", true);
        assert_eq!(p[3], Fragment::Token(ctl));
        // the longer token wins over the shorter one it contains
        assert_eq!(t.partition("<usr>", true), [Fragment::Token(usr)]);
        // no space prefix after a special token's fragment boundary… but SPM adds one again
        let e = t.encode("<usr>a", false, false);
        assert_eq!(
            e,
            [usr, t.vocab().id("▁").unwrap(), t.vocab().id("a").unwrap()]
        );
    }

    #[test]
    fn lstrip_rstrip_absorb_spaces() {
        let mut t = spm(&["▁", "a"], &[("<m>", 4)]);
        let m = t.vocab().id("<m>").unwrap();
        t.vocab.set_attr_for_tests(
            m,
            TokenAttr::USER_DEFINED | TokenAttr::LSTRIP | TokenAttr::RSTRIP,
        );
        assert_eq!(
            t.partition("a  <m>  a", false),
            [
                Fragment::Text(0, 1),
                Fragment::Token(m),
                Fragment::Text(8, 9)
            ]
        );
    }

    /// llama.cpp's `tokenizer_st_partition`, transcribed naively: every special token in turn
    /// splits every text fragment.
    fn naive_partition(t: &Tokenizer, text: &str, parse_special: bool) -> Vec<Fragment> {
        let mut frags = vec![Fragment::Text(0, text.len())];
        for &id in t.vocab().special_tokens() {
            let attr = t.vocab().attr(id).unwrap();
            if !parse_special && attr.has(TokenAttr::CONTROL | TokenAttr::UNKNOWN) {
                continue;
            }
            let tt = t.vocab().text(id).unwrap();
            let mut next = Vec::new();
            for f in frags {
                let Fragment::Text(s, e) = f else {
                    next.push(f);
                    continue;
                };
                let mut base = s;
                while let Some(p) = text[base..e].find(tt) {
                    let m = base + p;
                    let mut l = m;
                    while attr.has(TokenAttr::LSTRIP)
                        && l > base
                        && c_isspace(text.as_bytes()[l - 1])
                    {
                        l -= 1;
                    }
                    if l > base {
                        next.push(Fragment::Text(base, l));
                    }
                    next.push(Fragment::Token(id));
                    base = m + tt.len();
                    while attr.has(TokenAttr::RSTRIP)
                        && base < e
                        && c_isspace(text.as_bytes()[base])
                    {
                        base += 1;
                    }
                }
                if base < e {
                    next.push(Fragment::Text(base, e));
                }
            }
            frags = next;
        }
        frags
    }

    #[test]
    fn partition_equals_llama_cpp_algorithm_on_random_text() {
        let specials = [
            ("<a>", 4),
            ("a>", 3),
            ("<a", 4),
            ("ab", 3),
            ("b b", 4),
            ("<ab>", 3),
            ("aa", 4),
        ];
        let mut t = spm(&["▁", "a", "b"], &specials);
        // some tokens absorb whitespace
        for (i, text) in ["a>", "b b", "aa"].into_iter().enumerate() {
            let id = t.vocab().id(text).unwrap();
            let extra = [
                TokenAttr::LSTRIP,
                TokenAttr::RSTRIP,
                TokenAttr::LSTRIP | TokenAttr::RSTRIP,
            ][i];
            let a = t.vocab().attr(id).unwrap();
            t.vocab.set_attr_for_tests(id, a | extra);
        }
        let mut seed = 0x2545f4914f6cdd1du64;
        let alphabet = ['a', 'b', '<', '>', ' ', '\n'];
        for _ in 0..3000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = (seed % 24) as usize;
            let text: String = (0..n)
                .map(|i| alphabet[((seed >> (i * 2 % 60)) as usize ^ i) % alphabet.len()])
                .collect();
            for ps in [false, true] {
                assert_eq!(
                    t.partition(&text, ps),
                    naive_partition(&t, &text, ps),
                    "{text:?} {ps}"
                );
            }
        }
    }

    #[test]
    fn clean_up_spaces_matches_llama_cpp() {
        let run = |s: &str| {
            let mut v = s.as_bytes().to_vec();
            clean_up_spaces(&mut v);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(run("Hello , world !"), "Hello, world!");
        assert_eq!(run("a ' b"), "a'b");
        assert_eq!(
            run("it 's I 'm we 're they 've I 'll don 't"),
            "it's I'm we're they've I 'll don 't"
        );
        assert_eq!(run(""), "");
    }

    #[test]
    fn unknown_models_are_refused() {
        for (model, pre) in [
            ("bert", "default"),
            ("t5", "default"),
            ("gpt2", "tekken"),
            ("gpt2", "nonsense"),
        ] {
            let md = test_metadata(&[
                ("tokenizer.ggml.model", Value::String(model.into())),
                ("tokenizer.ggml.pre", Value::String(pre.into())),
                ("tokenizer.ggml.tokens", strs(&["a"])),
                ("tokenizer.ggml.merges", strs(&[])),
            ]);
            let e = Tokenizer::from_metadata(&md).unwrap_err();
            let want = if model == "gpt2" {
                "tokenizer_unknown_pre"
            } else {
                "tokenizer_unknown_model"
            };
            assert_eq!(e.code(), want, "{model}/{pre}: {e}");
        }
    }

    #[test]
    fn mismatched_lengths_are_bad_vocabularies() {
        let md = test_metadata(&[
            ("tokenizer.ggml.model", Value::String("llama".into())),
            ("tokenizer.ggml.tokens", strs(&["a", "b"])),
            ("tokenizer.ggml.scores", Value::Array(Array::F32(vec![0.0]))),
        ]);
        let e = Tokenizer::from_metadata(&md).unwrap_err();
        assert_eq!(e.code(), "tokenizer_bad_vocab");
        let md = test_metadata(&[
            ("tokenizer.ggml.model", Value::String("llama".into())),
            ("tokenizer.ggml.tokens", strs(&["a", "a"])),
        ]);
        assert_eq!(
            Tokenizer::from_metadata(&md).unwrap_err().code(),
            "tokenizer_bad_vocab"
        );
    }
}
