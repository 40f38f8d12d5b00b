//! PostgreSQL's Korean text search on the model's tokenizer: the parser `koe5` (its
//! start, next-token, end and token-type functions; headlines use PostgreSQL's own
//! `prsd_headline`) and the dictionary template `koe5` (a piece's lexeme, and
//! particles as stop words when asked), declared in sql/surface/textsearch.sql. The
//! segmentation itself is the core's (`koe5_core::lexical`).
//!
//! The configuration's output may not depend on which model a session loads, or
//! expression indexes on `to_tsvector('koe5', …)` would go stale: the parser uses the
//! XLM-R tokenizer built into this library (`data/tokenizer/xlm-roberta.json`, the
//! tokenizer of KoE5, multilingual-e5 and XLM-R alike), never the session's model.

use std::ffi::{c_char, c_int, CStr};
use std::path::Path;
use std::sync::OnceLock;

use koe5_core::lexical::{self, Options, TokenKind};
use koe5_core::TextTokenizer;
use pgrx::prelude::*;
use pgrx::{pg_sys, Internal};

use crate::encoding::to_utf8;
use crate::ereport::OrRaise;
use crate::session::check_interrupts;

/// The tokenizer the parser is pinned to (its SHA-256 is checked by a test below).
static TOKENIZER_JSON: &[u8] = include_bytes!("../data/tokenizer/xlm-roberta.json");

/// Token types, numbered so that PostgreSQL's headline function (`prsd_headline`)
/// treats them as it must: a piece is a word (2, the default parser's `asciiword`), a
/// blank a space (12); a whole word of several pieces (17, `hword`) and a Hangul bigram
/// (16, `asciihword`) are numbers that function skips when it rebuilds the text
/// (`HLIDSKIP`), because the pieces they overlap are given too.
const PIECE: c_int = 2;
const BLANK: c_int = 12;
const BIGRAM: c_int = 16;
const WORD: c_int = 17;

fn tokenizer() -> &'static TextTokenizer {
    static TOKENIZER: OnceLock<TextTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        TextTokenizer::from_bytes(TOKENIZER_JSON, Path::new("(koe5's built-in XLM-R tokenizer)"), 512, false).or_raise()
    })
}

/// One token as the parser hands it out: a span of the text in the server encoding.
#[derive(Clone, Copy)]
#[repr(C)]
struct Span {
    start: usize,
    len: usize,
    kind: c_int,
}

/// The parser's state between calls, palloc'd (freed with its memory context, also
/// when an ERROR ends the parse early).
#[repr(C)]
struct Parse {
    text: *mut c_char,
    spans: *mut Span,
    count: usize,
    next: usize,
}

/// The byte offset in the server-encoded `server` of every character boundary of its
/// UTF-8 form `utf8`, indexed by the UTF-8 offset (a conversion maps character to
/// character). None when the server encoding is UTF-8 (offsets are the same).
fn server_offsets(server: &[u8], utf8: &str) -> Option<Vec<u32>> {
    if server.len() == utf8.len() && server == utf8.as_bytes() {
        return None;
    }
    let mut map = vec![0u32; utf8.len() + 1];
    let mut s = 0usize;
    for (u, _) in utf8.char_indices() {
        map[u] = s as u32;
        // SAFETY: `s` is a character boundary inside `server`, a valid string of the
        // server encoding with one character for each of `utf8`'s.
        let n = unsafe { pg_sys::pg_mblen(server.as_ptr().add(s).cast()) } as usize;
        s += n.max(1);
    }
    map[utf8.len()] = server.len() as u32;
    Some(map)
}

/// `prsstart(text, length)`: segments the whole text at once.
#[pg_extern(sql = false)]
fn koe5_ts_start(text: Internal, len: i32) -> Internal {
    let ptr: *mut c_char = text.unwrap().map(|d| d.cast_mut_ptr()).unwrap_or(std::ptr::null_mut());
    let len = usize::try_from(len).unwrap_or(0);
    let server: &[u8] = if ptr.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: PostgreSQL passes the text's bytes and their length.
        unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) }
    };
    let utf8 = to_utf8(server);
    let tokens =
        lexical::tokens(tokenizer(), &utf8, &Options { words: true, bigrams: true }, &mut check_interrupts).or_raise();
    let map = server_offsets(server, &utf8);
    let at = |u: usize| map.as_ref().map_or(u, |m| m[u] as usize);
    // SAFETY: palloc returns memory for `tokens.len()` spans (or raises an ERROR).
    let spans = unsafe { pg_sys::palloc(std::mem::size_of::<Span>() * tokens.len().max(1)) }.cast::<Span>();
    for (i, t) in tokens.iter().enumerate() {
        let kind = match t.kind {
            TokenKind::Piece => PIECE,
            TokenKind::Blank => BLANK,
            TokenKind::Word => WORD,
            TokenKind::Bigram => BIGRAM,
        };
        let (start, end) = (at(t.start), at(t.end));
        // SAFETY: `i` is below the count `spans` was allocated for.
        unsafe { spans.add(i).write(Span { start, len: end - start, kind }) };
    }
    // SAFETY: as above, one Parse.
    let parse = unsafe { pg_sys::palloc(std::mem::size_of::<Parse>()) }.cast::<Parse>();
    unsafe { parse.write(Parse { text: ptr, spans, count: tokens.len(), next: 0 }) };
    Internal::from(Some(pg_sys::Datum::from(parse)))
}

/// `prsgettoken(state, &token, &length)`: the next token's type, 0 at the end.
#[pg_extern(sql = false)]
fn koe5_ts_gettoken(state: Internal, token: Internal, len: Internal) -> i32 {
    let parse = state.unwrap().expect("parser state").cast_mut_ptr::<Parse>();
    let token = token.unwrap().expect("token pointer").cast_mut_ptr::<*mut c_char>();
    let len = len.unwrap().expect("length pointer").cast_mut_ptr::<c_int>();
    // SAFETY: PostgreSQL passes the state koe5_ts_start returned and two out-pointers.
    unsafe {
        let p = &mut *parse;
        if p.next >= p.count {
            *len = 0;
            return 0;
        }
        let span = *p.spans.add(p.next);
        p.next += 1;
        *token = p.text.add(span.start);
        *len = span.len as c_int;
        span.kind
    }
}

/// `prsend(state)`.
#[pg_extern(sql = false)]
fn koe5_ts_end(state: Internal) {
    if let Some(d) = state.unwrap() {
        let parse = d.cast_mut_ptr::<Parse>();
        // SAFETY: the state and its spans were palloc'd by koe5_ts_start.
        unsafe {
            pg_sys::pfree((*parse).spans.cast());
            pg_sys::pfree(parse.cast());
        }
    }
}

/// `prslextype()`: the token types, for `ts_token_type('koe5')` and mappings.
#[pg_extern(sql = false)]
fn koe5_ts_lextype(_unused: Internal) -> Internal {
    let types: [(c_int, &CStr, &CStr); 4] = [
        (PIECE, c"piece", c"Piece of a word, as the model's tokenizer cuts it"),
        (BLANK, c"blank", c"Space and punctuation"),
        (BIGRAM, c"bigram", c"Two neighbouring Hangul syllables of a word"),
        (WORD, c"word", c"Whole word of two or more pieces"),
    ];
    // SAFETY: palloc0 gives room for the types and the zeroed terminator.
    let descr = unsafe { pg_sys::palloc0(std::mem::size_of::<pg_sys::LexDescr>() * (types.len() + 1)) }
        .cast::<pg_sys::LexDescr>();
    for (i, (id, alias, text)) in types.iter().enumerate() {
        // SAFETY: `i` is within the allocation; pstrdup copies the strings.
        unsafe {
            descr.add(i).write(pg_sys::LexDescr {
                lexid: *id,
                alias: pg_sys::pstrdup(alias.as_ptr()),
                descr: pg_sys::pstrdup(text.as_ptr()),
            })
        };
    }
    Internal::from(Some(pg_sys::Datum::from(descr)))
}

/// The dictionary's options: whether particles and endings are stop words.
#[repr(C)]
struct Dictionary {
    drop_particles: bool,
}

/// `init(options)`: `particles = keep` (the default) or `drop`.
#[pg_extern(sql = false)]
fn koe5_ts_dict_init(options: Internal) -> Internal {
    let mut drop_particles = false;
    let list = options.unwrap().map(|d| d.cast_mut_ptr::<pg_sys::List>()).unwrap_or(std::ptr::null_mut());
    // SAFETY: PostgreSQL passes a List of DefElem (or NIL).
    let count = if list.is_null() { 0 } else { unsafe { (*list).length } };
    for i in 0..count {
        // SAFETY: `i` is below the list's length; each cell holds a DefElem.
        let def = unsafe { (*(*list).elements.add(i as usize)).ptr_value }.cast::<pg_sys::DefElem>();
        // SAFETY: each cell holds a DefElem.
        let name = unsafe { CStr::from_ptr((*def).defname) }.to_string_lossy().into_owned();
        let value = unsafe { CStr::from_ptr(pg_sys::defGetString(def)) }.to_string_lossy().to_lowercase();
        match (name.to_lowercase().as_str(), value.as_str()) {
            ("particles", "keep") => drop_particles = false,
            ("particles", "drop") => drop_particles = true,
            ("particles", _) => crate::ereport::report(
                pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("invalid value for koe5 dictionary option \"particles\": \"{value}\""),
                None,
                Some("Use 'keep' or 'drop'.".into()),
            ),
            _ => crate::ereport::report(
                pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("unrecognized koe5 dictionary parameter: \"{name}\""),
                None,
                None,
            ),
        }
    }
    // SAFETY: palloc gives room for one Dictionary, in the dictionary's own context.
    let dict = unsafe { pg_sys::palloc(std::mem::size_of::<Dictionary>()) }.cast::<Dictionary>();
    unsafe { dict.write(Dictionary { drop_particles }) };
    Internal::from(Some(pg_sys::Datum::from(dict)))
}

/// `lexize(dictionary, token, length, state)`: the token's lexeme (NFKC, lower-case,
/// edge punctuation trimmed), none for a stop word.
#[pg_extern(sql = false)]
fn koe5_ts_lexize(dict: Internal, token: Internal, len: Internal, _state: Internal) -> Internal {
    let drop_particles = dict
        .unwrap()
        .map(|d| d.cast_mut_ptr::<Dictionary>())
        // SAFETY: the dictionary koe5_ts_dict_init made.
        .map(|d| unsafe { (*d).drop_particles })
        .unwrap_or(false);
    let ptr = token.unwrap().map(|d| d.cast_mut_ptr::<c_char>()).unwrap_or(std::ptr::null_mut());
    // The length arrives as an int4 datum in an `internal` argument.
    let len = len.unwrap().map(|d| d.value() as i32).unwrap_or(0);
    let bytes: &[u8] = if ptr.is_null() || len <= 0 {
        &[]
    } else {
        // SAFETY: PostgreSQL passes the token's bytes and their length.
        unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len as usize) }
    };
    let lexeme = lexical::lexeme(&to_utf8(bytes));
    let stop = lexeme.is_empty() || (drop_particles && lexical::KOREAN_PARTICLES.contains(&lexeme.as_str()));
    // SAFETY: palloc0 gives two zeroed TSLexemes: the answer and the terminator.
    let out = unsafe { pg_sys::palloc0(std::mem::size_of::<pg_sys::TSLexeme>() * 2) }.cast::<pg_sys::TSLexeme>();
    if !stop {
        let server = from_utf8(&lexeme);
        // SAFETY: `out` has room for two; the lexeme is a palloc'd, NUL-terminated copy.
        unsafe { (*out).lexeme = server };
    }
    Internal::from(Some(pg_sys::Datum::from(out)))
}

/// A palloc'd, NUL-terminated copy of `s` in the server encoding.
fn from_utf8(s: &str) -> *mut c_char {
    let len = i32::try_from(s.len()).expect("a lexeme is short");
    // SAFETY: pnstrdup copies `len` bytes and terminates them; pg_any_to_server returns
    // its input when no conversion is needed, else a palloc'd converted copy (or raises
    // PostgreSQL's error for a character the server encoding lacks).
    unsafe {
        let copy = pg_sys::pnstrdup(s.as_ptr().cast(), len as usize);
        pg_sys::pg_any_to_server(copy, len, pg_sys::pg_enc::PG_UTF8 as i32)
    }
}

#[cfg(test)]
mod tests {
    /// The tokenizer built in is the one the README names, byte for byte.
    #[test]
    fn the_built_in_tokenizer_is_the_pinned_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/tokenizer/xlm-roberta.json");
        let sha = koe5_core::sha256_file(&path, &mut || {}).unwrap();
        assert_eq!(sha, "d63ea22ce2c646e55084ebcef017e8f0e3cc7e02a9ace03ab1339912fe9d8439");
        assert_eq!(std::fs::read(&path).unwrap(), super::TOKENIZER_JSON);
    }
}
