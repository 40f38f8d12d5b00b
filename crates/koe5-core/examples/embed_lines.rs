//! Embeds every non-empty line of a text file (or every string of a JSON array, for a
//! file ending in .json) with the core alone and reports where the time went
//! (tokenizing vs. the whole batch path); optionally writes the vectors as a JSON array.
//! A quick check, not a benchmark:
//!
//!   [KOE5_PRECISION=f32|bf16|int8|auto] cargo run -p koe5-core --example embed_lines -- MODEL_DIR FILE [passage|query] [OUT.json]

use std::time::Instant;

use koe5_core::{Embedder, Kind, Precision};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: embed_lines MODEL_DIR FILE [passage|query]");
        std::process::exit(2);
    }
    let kind = if args.get(3).map(String::as_str) == Some("query") { Kind::Query } else { Kind::Passage };
    let t = Instant::now();
    let precision = std::env::var("KOE5_PRECISION").unwrap_or_else(|_| "f32".into());
    let precision = Precision::parse(&precision).expect("KOE5_PRECISION is f32, bf16, int8 or auto");
    let e = Embedder::load_with(std::path::Path::new(&args[1]), precision, &mut || {})
        .unwrap_or_else(|err| panic!("{err}"));
    println!("load: {:.3} s", t.elapsed().as_secs_f64());
    let text = std::fs::read_to_string(&args[2]).unwrap();
    let owned: Vec<String> = if args[2].ends_with(".json") {
        serde_json::from_str(&text).unwrap()
    } else {
        text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
    };
    let lines: Vec<&str> = owned.iter().map(String::as_str).collect();

    let t = Instant::now();
    let tokens: usize = lines.iter().map(|l| e.tokenize(kind, l).unwrap().len()).sum();
    let tok_s = t.elapsed().as_secs_f64();
    println!(
        "tokenize: {} texts, {tokens} tokens in {tok_s:.3} s ({:.0} tokens/s)",
        lines.len(),
        tokens as f64 / tok_s
    );

    let t = Instant::now();
    let vectors = e.embed_many(kind, &lines, &mut || {}).unwrap();
    let all_s = t.elapsed().as_secs_f64();
    println!(
        "embed: {} vectors of {} in {all_s:.3} s ({:.0} tokens/s, {:.1} texts/s)",
        vectors.len(),
        e.dimension(),
        tokens as f64 / all_s,
        lines.len() as f64 / all_s
    );
    if let Some(out) = args.get(4) {
        std::fs::write(out, serde_json::to_string(&vectors).unwrap()).unwrap();
    }
}
