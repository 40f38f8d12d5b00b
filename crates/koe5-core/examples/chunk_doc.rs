//! Cuts a text file into chunks the model takes whole and prints one line per chunk.
//!
//!     cargo run --release -p koe5-core --example chunk_doc -- MODEL_DIR FILE [MAX_TOKENS [OVERLAP]]

use std::time::Instant;

use koe5_core::{Embedder, Kind};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, file, rest @ ..] = args.as_slice() else {
        return Err("usage: chunk_doc MODEL_DIR FILE [MAX_TOKENS [OVERLAP]]".into());
    };
    let max = rest.first().map_or(Ok(512), |s| s.parse())?;
    let overlap = rest.get(1).map_or(Ok(0), |s| s.parse())?;
    let embedder = Embedder::load(dir.as_ref())?;
    let doc = std::fs::read_to_string(file)?;
    let start = Instant::now();
    let chunks = embedder.chunks(Kind::Passage, &doc, max, overlap, &mut || {})?;
    let took = start.elapsed();
    for (i, c) in chunks.iter().enumerate() {
        let text = &doc[c.start..c.end];
        let head: String = text.chars().take(30).collect::<String>().replace('\n', " ");
        let tail: String = text.chars().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect::<String>();
        println!("{:>4} {:>4} tokens  {head} … {}", i + 1, c.n_tokens, tail.replace('\n', " "));
    }
    let tokens: Vec<usize> = chunks.iter().map(|c| c.n_tokens).collect();
    eprintln!(
        "{} bytes: {} chunks of at most {max} tokens (overlap {overlap}); smallest {}, mean {:.1}; {:.1} ms",
        doc.len(),
        chunks.len(),
        tokens.iter().min().unwrap_or(&0),
        tokens.iter().sum::<usize>() as f64 / tokens.len().max(1) as f64,
        took.as_secs_f64() * 1e3
    );
    Ok(())
}
