//! Where a loaded model came from: its directory, its files (weights and tokenizer) as
//! they were when it was loaded, and whether the postmaster loaded it. The embedder and
//! the cross-encoder keep one each.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub struct Provenance {
    pub dir: PathBuf,
    pub loaded_at: SystemTime,
    /// Loaded by the postmaster (`koe5.preload`) and inherited at fork: shared with
    /// every other session until this backend checks that its files are unchanged.
    pub preloaded: bool,
    paths: [PathBuf; 2],
    files: [Option<koe5_core::FileStamp>; 2],
    unverified: Cell<bool>,
}

fn stamps(paths: &[PathBuf; 2]) -> [Option<koe5_core::FileStamp>; 2] {
    [koe5_core::file_stamp(&paths[0]).ok(), koe5_core::file_stamp(&paths[1]).ok()]
}

impl Provenance {
    pub fn new(dir: PathBuf, weights: &Path, tokenizer: &Path, preloaded: bool) -> Provenance {
        let paths = [weights.to_path_buf(), tokenizer.to_path_buf()];
        Provenance {
            dir,
            loaded_at: SystemTime::now(),
            preloaded,
            files: stamps(&paths),
            paths,
            unverified: Cell::new(preloaded),
        }
    }

    /// A model a backend loaded itself is kept as it is, whatever happens to its files
    /// (it is complete in memory). One inherited from the postmaster may be older than
    /// the files: the backend's first use compares them once. `what` names it in the
    /// log ("model", "reranker").
    pub fn files_unchanged(&self, what: &str) -> bool {
        if !self.unverified.get() {
            return true;
        }
        let same = stamps(&self.paths) == self.files;
        self.unverified.set(!same);
        if !same {
            pgrx::log!(
                "koe5: the {what} files in \"{}\" changed after the server preloaded them; this session loads its own copy (restart the server to share one again)",
                self.dir.display()
            );
        }
        same
    }
}
