//! The model card's example through the core: embeds the query and the two passages of
//! a card file (data/koe5-card-example.json) and compares their three cosines with the
//! figures the card prints. Exits 1 when one is off by more than the tolerance.
//!
//!   cargo run --release -p koe5-core --example card_check -- MODEL_DIR CARD_JSON [Q_P1 Q_P2 P1_P2] [--tolerance T]
//!
//! Without figures, those of the card file's `expected_similarity_with_real_weights`
//! are used (KoE5's: 0.6721, 0.3897, 0.3740). tests/real_model/check.sh runs it.

use std::path::Path;

use koe5_core::{cosine, Embedder, Kind, Precision};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut tolerance = 1e-3f32;
    if let Some(i) = args.iter().position(|a| a == "--tolerance") {
        tolerance = args.get(i + 1).and_then(|t| t.parse().ok()).expect("--tolerance needs a number");
        args.drain(i..i + 2);
    }
    if args.len() != 2 && args.len() != 5 {
        eprintln!("usage: card_check MODEL_DIR CARD_JSON [Q_P1 Q_P2 P1_P2] [--tolerance T]");
        std::process::exit(2);
    }
    let card: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&args[1]).unwrap()).unwrap();
    let want: Vec<f32> = if args.len() == 5 {
        args[2..5].iter().map(|a| a.parse().expect("figures are numbers")).collect()
    } else {
        let e = &card["expected_similarity_with_real_weights"];
        ["q_p1", "q_p2", "p1_p2"].iter().map(|k| e[k].as_f64().unwrap() as f32).collect()
    };
    let e = Embedder::load_with(Path::new(&args[0]), Precision::F32, &mut || {}).unwrap_or_else(|err| {
        eprintln!("card_check: {err}");
        std::process::exit(2)
    });
    let q = e.embed_one(Kind::Query, card["query"].as_str().unwrap(), &mut || {}).unwrap();
    let p: Vec<Vec<f32>> = card["passages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| e.embed_one(Kind::Passage, t.as_str().unwrap(), &mut || {}).unwrap())
        .collect();
    let got = [cosine(&q, &p[0]).unwrap(), cosine(&q, &p[1]).unwrap(), cosine(&p[0], &p[1]).unwrap()];
    let mut ok = true;
    for ((name, g), w) in ["q_p1", "q_p2", "p1_p2"].iter().zip(got).zip(&want) {
        let fine = (g - w).abs() <= tolerance;
        ok &= fine;
        println!("{name}: {g:.4} (expected {w:.4}) {}", if fine { "ok" } else { "DIFFERS" });
    }
    println!(
        "model {} ({} dimensions, f32): {}",
        args[0],
        e.dimension(),
        if ok { "matches" } else { "does not match" }
    );
    std::process::exit(if ok { 0 } else { 1 });
}
