//! The core's error type. Each variant knows which kind of failure it is, so the
//! PostgreSQL glue can give it a fitting SQLSTATE without parsing messages (the
//! mapping is the glue's alone: src/ereport.rs).

use std::fmt;
use std::path::Path;

/// What went wrong, in terms a SQL caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A file or directory that should be there is not.
    MissingFile,
    /// A file exists but could not be read.
    Io,
    /// A JSON configuration file is malformed or inconsistent.
    InvalidConfig,
    /// The model uses an architecture, activation or pooling mode koe5 does not run.
    Unsupported,
    /// The weights file is damaged: truncated, wrong shapes, missing tensors.
    CorruptWeights,
    /// No model is configured and none was found in the Hugging Face cache.
    NoModel,
    /// The caller passed something unusable.
    InvalidInput,
    /// Memory for the model or a computation could not be had.
    OutOfMemory,
    /// Inference itself failed (an allocation or tensor error).
    Inference,
    /// Downloading from the Hugging Face Hub failed.
    Download,
}

#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    /// One short factual line, PostgreSQL style: lower-case, no final period.
    pub message: String,
    /// Optional complete sentence with more detail.
    pub detail: Option<String>,
    /// Optional complete sentence telling the user what to do.
    pub hint: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), detail: None, hint: None }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub(crate) fn missing(what: &str, path: &Path) -> Self {
        Error::new(ErrorKind::MissingFile, format!("{what} \"{}\" does not exist", path.display()))
    }

    pub(crate) fn io(path: &Path, err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::NotFound {
            return Error::missing("file", path);
        }
        Error::new(ErrorKind::Io, format!("could not read file \"{}\": {err}", path.display()))
    }

    pub(crate) fn config(path: &Path, reason: impl fmt::Display) -> Self {
        Error::new(ErrorKind::InvalidConfig, format!("invalid model file \"{}\": {reason}", path.display()))
    }

    pub(crate) fn weights(path: &Path, reason: impl fmt::Display) -> Self {
        Error::new(ErrorKind::CorruptWeights, format!("could not load weights from \"{}\": {reason}", path.display()))
            .with_hint("The file may be truncated or belong to another model; download it again.")
    }

    pub(crate) fn inference(err: impl fmt::Display) -> Self {
        Error::new(ErrorKind::Inference, format!("embedding computation failed: {err}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}
