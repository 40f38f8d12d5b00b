//! Raising errors in PostgreSQL: the one map from the core's error kinds to SQLSTATEs,
//! and the glue's own errors, each with its SQLSTATE, message, detail and hint.

use koe5_core::{Error, ErrorKind};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

fn sqlstate(kind: ErrorKind) -> PgSqlErrorCode {
    match kind {
        ErrorKind::MissingFile | ErrorKind::NoModel => PgSqlErrorCode::ERRCODE_UNDEFINED_FILE,
        ErrorKind::Io => PgSqlErrorCode::ERRCODE_IO_ERROR,
        ErrorKind::InvalidConfig => PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR,
        ErrorKind::Unsupported => PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        ErrorKind::CorruptWeights => PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
        ErrorKind::InvalidInput => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        ErrorKind::OutOfMemory => PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY,
        ErrorKind::Inference => PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
        ErrorKind::Download => PgSqlErrorCode::ERRCODE_CONNECTION_EXCEPTION,
    }
}

/// Raises `err` as an ERROR. Never returns.
pub fn raise(err: Error) -> ! {
    report(sqlstate(err.kind), err.message, err.detail, err.hint)
}

/// Raises an ERROR with the given SQLSTATE, message, detail and hint.
pub fn report(code: PgSqlErrorCode, message: String, detail: Option<String>, hint: Option<String>) -> ! {
    let mut r = ErrorReport::new(code, message, "koe5");
    if let Some(d) = detail {
        r = r.set_detail(d);
    }
    if let Some(h) = hint {
        r = r.set_hint(h);
    }
    r.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T, Error> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| raise(e))
    }
}
