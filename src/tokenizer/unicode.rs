//! Code point classes exactly as llama.cpp's pre-tokenizers see them (`src/unicode.cpp`), and the
//! GPT-2 byte↔unicode table of byte-level BPE.
//!
//! The category table comes from llama.cpp itself (`unicode_data.rs`, generated), not from Rust's
//! Unicode tables, so that a code point added or re-categorised between Unicode versions splits
//! the same way as in the oracle. Out of scope: case mapping beyond ASCII (the pre-tokenizers only
//! lower-case the letters of English contractions) and NFD.

use super::unicode_data::{ASCII, RANGES, WHITESPACE};

/// llama.cpp's `unicode_cpt_flags` as a bit set (same bit values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Flags(pub u16);

impl Flags {
    #[allow(dead_code)] // the full bit layout, for reference
    pub const UNDEFINED: u16 = 0x0001;
    pub const NUMBER: u16 = 0x0002;
    pub const LETTER: u16 = 0x0004;
    #[allow(dead_code)]
    pub const SEPARATOR: u16 = 0x0008;
    pub const MARK: u16 = 0x0010;
    pub const PUNCTUATION: u16 = 0x0020;
    pub const SYMBOL: u16 = 0x0040;
    #[allow(dead_code)]
    pub const CONTROL: u16 = 0x0080;
    pub const CATEGORIES: u16 = 0x00ff;
    pub const WHITESPACE: u16 = 0x0100;

    /// The flags of a code point.
    #[inline]
    pub fn of(c: u32) -> Flags {
        if c < 0x80 {
            return Flags(ASCII[c as usize]);
        }
        // The last range starting at or before `c` (RANGES[0] starts at 0, so i >= 1).
        let i = RANGES.partition_point(|&e| (e >> 8) <= c);
        let mut f = (RANGES[i - 1] & 0xff) as u16;
        if c <= 0x3000 && WHITESPACE.binary_search(&c).is_ok() {
            f |= Self::WHITESPACE;
        }
        Flags(f)
    }

    #[inline]
    pub fn is_number(self) -> bool {
        self.0 & Self::NUMBER != 0
    }
    #[inline]
    pub fn is_letter(self) -> bool {
        self.0 & Self::LETTER != 0
    }
    #[inline]
    pub fn is_mark(self) -> bool {
        self.0 & Self::MARK != 0
    }
    #[inline]
    pub fn is_whitespace(self) -> bool {
        self.0 & Self::WHITESPACE != 0
    }
    /// Non-zero for every code point inside a fragment; zero only for llama.cpp's "out of range".
    #[inline]
    pub fn any(self) -> bool {
        self.0 != 0
    }
}

/// GPT-2's `bytes_to_unicode`: printable Latin-1 bytes map to themselves, the other 68 bytes to
/// U+0100.. in byte order.
pub(crate) static BYTE_TO_CHAR: [char; 256] = byte_to_char_table();

/// The inverse of [`BYTE_TO_CHAR`], indexed by code point (all of them are below U+0144).
static CHAR_TO_BYTE: [i16; 0x144] = char_to_byte_table();

const fn printable(b: u32) -> bool {
    matches!(b, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff)
}

const fn byte_to_char_table() -> [char; 256] {
    let mut t = ['\0'; 256];
    let mut n = 0u32;
    let mut b = 0u32;
    while b < 256 {
        let c = if printable(b) {
            b
        } else {
            n += 1;
            255 + n
        };
        t[b as usize] = match char::from_u32(c) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    t
}

const fn char_to_byte_table() -> [i16; 0x144] {
    let mut t = [-1i16; 0x144];
    let fwd = byte_to_char_table();
    let mut b = 0;
    while b < 256 {
        t[fwd[b] as usize] = b as i16;
        b += 1;
    }
    t
}

/// The byte a GPT-2 table character stands for.
#[inline]
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    CHAR_TO_BYTE
        .get(c as usize)
        .and_then(|&b| u8::try_from(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_byte_table_is_a_bijection() {
        assert_eq!(BYTE_TO_CHAR[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_TO_CHAR[b'\n' as usize], 'Ċ');
        assert_eq!(BYTE_TO_CHAR[b'a' as usize], 'a');
        assert_eq!(BYTE_TO_CHAR[0xad], 'Ń');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(BYTE_TO_CHAR[b as usize]), Some(b));
        }
        assert_eq!(char_to_byte(' '), None);
        assert_eq!(char_to_byte('€'), None);
    }

    #[test]
    fn flags_match_llama_cpp_categories() {
        assert!(Flags::of('a' as u32).is_letter());
        assert!(Flags::of('7' as u32).is_number());
        assert!(Flags::of(' ' as u32).is_whitespace());
        assert!(Flags::of(0x3000).is_whitespace());
        assert!(Flags::of(0x85).is_whitespace());
        assert!(!Flags::of(0x1c).is_whitespace());
        assert!(Flags::of('é' as u32).is_letter());
        assert!(Flags::of('٣' as u32).is_number());
        assert!(Flags::of(0x0301).is_mark());
        assert_eq!(Flags::of('$' as u32).0, Flags::SYMBOL);
        assert_eq!(Flags::of('_' as u32).0, Flags::PUNCTUATION);
        assert_eq!(Flags::of('🦙' as u32).0, Flags::SYMBOL);
        assert!(Flags::of(0x10ffff).any());
    }
}
