//! The lexical segmenter on XLM-R's real tokenizer (tests/fixtures/tiny-xlmr): pieces
//! and their lexemes, normalisation, byte offsets that rebuild the text (what
//! `ts_headline` needs), words beside pieces, long and unspaced texts, interrupts.

use std::sync::OnceLock;

use koe5_core::lexical::{lexeme, tokens, Options, Token, TokenKind, KOREAN_PARTICLES, WINDOW};
use koe5_core::TextTokenizer;
use koe5_testkit::fixtures;
use proptest::prelude::*;

fn tokenizer() -> &'static TextTokenizer {
    static T: OnceLock<TextTokenizer> = OnceLock::new();
    T.get_or_init(|| TextTokenizer::from_file(&fixtures().join("tiny-xlmr/tokenizer.json"), 512, false).unwrap())
}

const WORDS: Options = Options { words: true, bigrams: false };
const ALL: Options = Options { words: true, bigrams: true };
const BIGRAMS: Options = Options { words: false, bigrams: true };

/// Tokens of `text`, checked to cover it: pieces and blanks in order, back to back,
/// none empty, rebuilding the text; blanks never side by side and without lexemes;
/// pieces with a lexeme and no whitespace at their edges; words over their pieces.
fn segment(text: &str, options: &Options) -> Vec<Token> {
    let got = tokens(tokenizer(), text, options, &mut || {}).unwrap();
    check_cover(text, &got);
    got
}

fn check_cover(text: &str, got: &[Token]) {
    let mut pos = 0;
    let mut rebuilt = String::with_capacity(text.len());
    let mut prev = None;
    for (i, t) in got.iter().enumerate() {
        assert!(t.start < t.end, "empty token {t:?}");
        let s = &text[t.start..t.end];
        match t.kind {
            TokenKind::Word => {
                assert_eq!(t.start, pos, "word {t:?} not at its first piece");
                let pieces: Vec<&Token> = got[i + 1..]
                    .iter()
                    .filter(|p| p.kind != TokenKind::Bigram)
                    .take_while(|p| p.kind == TokenKind::Piece)
                    .collect();
                let last = pieces.iter().position(|p| p.end == t.end).expect("word ends with a piece");
                assert!(last >= 1, "a word of one piece: {t:?}");
                assert_eq!(t.lexeme, lexeme(s));
                continue;
            }
            TokenKind::Bigram => {
                // Inside the word whose pieces come next: two syllables.
                let word_end = got[i + 1..]
                    .iter()
                    .filter(|p| p.kind != TokenKind::Bigram)
                    .take_while(|p| p.kind == TokenKind::Piece)
                    .last()
                    .map(|p| p.end);
                assert!(t.start >= pos && word_end.is_some_and(|e| t.end <= e), "bigram {t:?} not before its word");
                assert_eq!(s.chars().count(), 2, "{t:?}");
                assert!(s.chars().all(|c| ('가'..='힣').contains(&c)), "{t:?}");
                assert_eq!(t.lexeme, s);
                continue;
            }
            TokenKind::Blank => {
                assert!(t.lexeme.is_empty());
                assert_ne!(prev, Some(TokenKind::Blank), "two blanks side by side at {}", t.start);
            }
            TokenKind::Piece => {
                assert!(!t.lexeme.is_empty(), "piece without lexeme {t:?}");
                assert_eq!(t.lexeme, lexeme(s));
                assert_eq!(s.trim(), s, "piece with whitespace {t:?}");
            }
        }
        assert_eq!(t.start, pos, "gap or overlap before {t:?}");
        rebuilt.push_str(s);
        pos = t.end;
        prev = Some(t.kind);
    }
    assert_eq!(pos, text.len());
    assert_eq!(rebuilt, text);
}

/// (kind, text, lexeme) of each token, for readable comparisons.
fn show<'a>(text: &'a str, got: &[Token]) -> Vec<(TokenKind, &'a str, String)> {
    got.iter().map(|t| (t.kind, &text[t.start..t.end], t.lexeme.clone())).collect()
}

fn lexemes(got: &[Token], kind: TokenKind) -> Vec<&str> {
    got.iter().filter(|t| t.kind == kind).map(|t| t.lexeme.as_str()).collect()
}

use TokenKind::{Bigram, Blank, Piece, Word};

#[test]
fn a_particle_is_a_piece_of_its_own() {
    let text = "번역을";
    let got = segment(text, &Options::default());
    assert_eq!(show(text, &got), [(Piece, "번역", "번역".into()), (Piece, "을", "을".into())]);
    assert_eq!((got[0].start, got[0].end, got[1].start, got[1].end), (0, 6, 6, 9));
}

#[test]
fn spaces_belong_to_blanks_and_pieces_to_visible_text() {
    let text = "  번역을  했다 ";
    let got = segment(text, &Options::default());
    let b = || String::new();
    assert_eq!(
        show(text, &got),
        [
            (Blank, "  ", b()),
            (Piece, "번역", "번역".into()),
            (Piece, "을", "을".into()),
            (Blank, "  ", b()),
            (Piece, "했다", "했다".into()),
            (Blank, " ", b()),
        ]
    );
    // Line breaks, tabs and the ideographic space are blanks too.
    let text = "번역을\n\n했다\t번역\u{3000}끝";
    assert_eq!(lexemes(&segment(text, &Options::default()), Piece), ["번역", "을", "했다", "번역", "끝"]);
}

#[test]
fn lexemes_are_nfkc_and_lower_case() {
    let text = "ＡＢＣ１２３ KoE5 ① ㄱ";
    let got = segment(text, &WORDS);
    assert_eq!(lexemes(&got, Piece), ["abc", "123", "ko", "e", "5", "1", "\u{1100}"]);
    assert_eq!(lexemes(&got, Word), ["abc123", "koe5"]);
    // The full-width piece keeps its original bytes as its span.
    assert_eq!(&text[got[1].start..got[1].end], "ＡＢＣ");
}

#[test]
fn english_and_mixed_text() {
    let text = "KoE5 runs Korean embeddings inside PostgreSQL: 확장에서 KoE5 모델을 실행한다.";
    let got = segment(text, &Options::default());
    let pieces = lexemes(&got, Piece);
    assert!(pieces.iter().all(|p| p.chars().all(|c| !c.is_uppercase())), "{pieces:?}");
    assert!(pieces.contains(&"을") && pieces.contains(&"runs"), "{pieces:?}");
    // The colon and the final stop are blanks.
    assert_eq!(got.last().map(|t| (t.kind, &text[t.start..t.end])), Some((Blank, ".")));
    assert!(!pieces.iter().any(|p| p.contains(':')));
}

#[test]
fn article_references_split_into_numbers_and_syllables() {
    let text = "제63조제2항제4호";
    let got = segment(text, &WORDS);
    assert_eq!(lexemes(&got, Piece), ["제", "63", "조", "제", "2", "항", "제", "4", "호"]);
    assert_eq!(lexemes(&got, Word), [text]);
    assert_eq!((got[0].kind, got[0].start, got[0].end), (Word, 0, text.len()));
}

#[test]
fn punctuation_is_blank() {
    let text = "(가) \"인용\". 끝… 1·2";
    let got = segment(text, &WORDS);
    assert_eq!(lexemes(&got, Piece), ["가", "인", "용", "끝", "1", "2"]);
    // 인용 is one word of two pieces; the quotes and the middle dot end words.
    assert_eq!(lexemes(&got, Word), ["인용"]);
}

#[test]
fn words_only_when_asked_and_only_of_several_pieces() {
    let text = "국민의 권리를 보장한다 및 등";
    let plain = segment(text, &Options::default());
    assert!(plain.iter().all(|t| t.kind != Word));
    let with = segment(text, &WORDS);
    assert_eq!(lexemes(&with, Word), ["국민의", "권리를", "보장한다"]);
    // The pieces are the same with and without words.
    let pieces: Vec<&Token> = with.iter().filter(|t| t.kind != Word).collect();
    assert_eq!(pieces, plain.iter().collect::<Vec<_>>());
}

#[test]
fn invisible_and_control_characters_keep_offsets_right() {
    // The tokenizer drops a leading control character and shifts every later offset;
    // the segmenter hides it as a space, so the pieces stay where they are.
    let text = "\u{1}번역을 했다 번역을 했다";
    assert_eq!(lexemes(&segment(text, &Options::default()), Piece), ["번역", "을", "했다", "번역", "을", "했다"]);
    let text = "\u{feff}번\u{200b}역을 x\u{ad}y a\u{301}b";
    let got = segment(text, &Options::default());
    let pieces = show(text, &got).into_iter().filter(|t| t.0 == Piece).map(|t| t.1).collect::<Vec<_>>();
    // No piece starts with the combining acute.
    assert!(pieces.iter().all(|p| !p.starts_with('\u{301}')), "{pieces:?}");
    assert!(pieces.contains(&"번") && pieces.contains(&"역"), "{pieces:?}");
    assert_eq!(lexeme("x\u{ad}y"), "xy");
}

#[test]
fn particles_occur_as_pieces_and_are_kept() {
    let dir = fixtures().join("../../data/ko");
    let mut seen = std::collections::HashSet::new();
    for f in ["constitution.txt", "bill-1809896.txt"] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        for t in segment(&text, &Options::default()) {
            seen.insert(t.lexeme);
        }
    }
    let missing: Vec<_> = KOREAN_PARTICLES.iter().filter(|p| !seen.contains(**p)).collect();
    assert!(missing.is_empty(), "not pieces in data/ko: {missing:?}");
    // Nothing is filtered by default.
    assert_eq!(lexemes(&segment("국민에게 및 등", &Options::default()), Piece), ["국민", "에게", "및", "등"]);
}

#[test]
fn empty_and_blank_texts() {
    assert!(segment("", &WORDS).is_empty());
    for text in [" ", "  \n\t ", "\u{3000}", ". , ;", "\u{1}\u{feff}"] {
        let got = segment(text, &WORDS);
        assert_eq!(got.len(), 1, "{text:?}");
        assert_eq!(got[0].kind, Blank);
    }
}

/// Korean sentences, from the data and made up, joined by spaces.
fn sentences() -> Vec<String> {
    let text = std::fs::read_to_string(fixtures().join("../../data/ko/constitution.txt")).unwrap();
    let mut v: Vec<String> = text.split_whitespace().collect::<Vec<_>>().chunks(9).map(|w| w.join(" ")).collect();
    v.push("대한민국의 주권은 국민에게 있고 모든 권력은 국민으로부터 나온다.".into());
    v
}

#[test]
fn a_long_text_is_covered_in_windows_with_the_pieces_of_its_sentences() {
    let sentences = sentences();
    let mut text = String::new();
    let mut want = vec![];
    while text.len() < 300_000 {
        for s in &sentences {
            if !text.is_empty() {
                text.push(' ');
            }
            let at = text.len();
            text.push_str(s);
            let one = tokens(tokenizer(), s, &Options::default(), &mut || {}).unwrap();
            want.extend(one.into_iter().filter(|t| t.kind == Piece).map(|t| (t.start + at, t.end + at, t.lexeme)));
        }
    }
    let mut windows = 0;
    let got = tokens(tokenizer(), &text, &Options::default(), &mut || windows += 1).unwrap();
    check_cover(&text, &got);
    let got: Vec<_> = got.into_iter().filter(|t| t.kind == Piece).map(|t| (t.start, t.end, t.lexeme)).collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "pieces differ from the sentences' own");
    assert!(windows >= text.len() / (4 * WINDOW), "{windows} interrupt calls for {} bytes", text.len());
}

#[test]
fn an_unspaced_text_is_covered_in_bounded_windows() {
    let unit = "대한민국의모든국민은인간으로서의존엄과가치를가진다";
    let text = unit.repeat(100_000 / unit.len() + 1);
    let mut windows = 0;
    let got = tokens(tokenizer(), &text, &WORDS, &mut || windows += 1).unwrap();
    check_cover(&text, &got);
    // Windows are cut at character boundaries every WINDOW bytes.
    assert!(windows >= text.len() / WINDOW - 1, "{windows} interrupt calls");
    let pieces: Vec<&Token> = got.iter().filter(|t| t.kind == Piece).collect();
    assert!(pieces.iter().all(|p| p.end - p.start <= 64), "a long piece");
    // One word of thousands of pieces, as the text has no blank.
    assert_eq!(got.iter().filter(|t| t.kind == Word).count(), 1);
}

#[test]
fn the_same_text_gives_the_same_tokens() {
    let text = sentences().join(" ");
    assert_eq!(segment(&text, &WORDS), segment(&text, &WORDS));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any text at all (controls, marks, jamo, emoji, mixed scripts) is covered.
    #[test]
    fn any_text_is_covered(text in "(\\PC|\\pC|[ \t\n가-힣ᄀ-ᇿ\u{300}-\u{36f}▁])*") {
        segment(&text, &WORDS);
        segment(&text, &ALL);
    }
}

#[test]
fn bigrams_match_a_word_however_it_is_cut() {
    // The tokenizer cuts 재판소 differently alone and inside 헌법재판소: their pieces
    // share nothing, their bigrams do.
    let alone = segment("재판소", &BIGRAMS);
    let inside = segment("헌법재판소를", &BIGRAMS);
    let pieces = |t: &[Token]| lexemes(t, Piece).into_iter().map(str::to_owned).collect::<Vec<_>>();
    assert!(pieces(&alone).contains(&"재판".to_owned()), "{:?}", pieces(&alone));
    assert!(!pieces(&inside).contains(&"재판".to_owned()), "the pieces differ, as measured: {:?}", pieces(&inside));
    assert_eq!(lexemes(&alone, Bigram), ["재판", "판소"]);
    // The final particle 를 gives no bigram (소를 would match nothing worth matching).
    assert_eq!(lexemes(&inside, Bigram), ["헌법", "법재", "재판", "판소"]);
    assert!(pieces(&inside).contains(&"를".to_owned()), "{:?}", pieces(&inside));
}

#[test]
fn bigrams_only_of_hangul_only_when_asked_and_before_their_pieces() {
    let text = "국민의 KoE5 제63조제2항 육아휴직을 가";
    let plain = segment(text, &Options::default());
    assert!(plain.iter().all(|t| t.kind != Bigram));
    let got = segment(text, &BIGRAMS);
    // 제63조제2항: only 조제 has two syllables side by side.
    assert_eq!(lexemes(&got, Bigram), ["국민", "조제", "육아", "아휴", "휴직"]);
    // Each word's bigrams come just before its pieces.
    let first = got.iter().position(|t| t.kind == Bigram).unwrap();
    assert_eq!(&text[got[first + 1].start..got[first + 1].end], "국민");
    // With bigrams and words, the pieces are still those of the plain segmentation.
    let all = segment(text, &ALL);
    let pieces: Vec<&Token> = all.iter().filter(|t| !matches!(t.kind, Word | Bigram)).collect();
    assert_eq!(pieces, plain.iter().collect::<Vec<_>>());
}

#[test]
fn bigrams_skip_every_trailing_particle_and_words_of_particles() {
    // 대통령+에게+도: both trailing pieces are particles.
    let got = segment("대통령에게도 헌법 또는 법률로도", &BIGRAMS);
    let bigrams = lexemes(&got, Bigram);
    assert!(bigrams.starts_with(&["대통", "통령"]), "{bigrams:?}");
    for particle in ["에게", "령에", "게도", "또는", "률로", "로도"] {
        assert!(!bigrams.contains(&particle), "{particle} in {bigrams:?}");
    }
    assert!(bigrams.contains(&"헌법") && bigrams.contains(&"법률"), "{bigrams:?}");
}
