//! Text arguments arrive in the server encoding. The tokenizer needs UTF-8, so they
//! are converted with PostgreSQL's own routines; pgrx's `&str` conversion would panic
//! on non-ASCII text in, say, an EUC_KR database.

use std::borrow::Cow;
use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::ereport::report;

/// The UTF-8 form of `bytes`, which hold text in the server encoding. In an SQL_ASCII
/// database the bytes are checked to be valid UTF-8 (an ERROR otherwise).
pub fn to_utf8(bytes: &[u8]) -> Cow<'_, str> {
    let server_is_utf8 = unsafe { pg_sys::GetDatabaseEncoding() } == pg_sys::pg_enc::PG_UTF8 as i32;
    // pg_server_to_any returns its input when no conversion is needed (after validating
    // it, for SQL_ASCII) and a palloc'd, NUL-terminated copy otherwise. A byte sequence
    // with no UTF-8 equivalent raises PostgreSQL's own error. Text in a UTF-8 database,
    // and ASCII anywhere, has been validated by PostgreSQL already.
    let converted = if server_is_utf8 || bytes.is_ascii() {
        bytes.as_ptr().cast_mut().cast()
    } else {
        let len = i32::try_from(bytes.len()).expect("text values are below 1 GB");
        unsafe { pg_sys::pg_server_to_any(bytes.as_ptr().cast(), len, pg_sys::pg_enc::PG_UTF8 as i32) }
    };
    if converted.cast_const() == bytes.as_ptr().cast() {
        return std::str::from_utf8(bytes).map(Cow::Borrowed).unwrap_or_else(|e| invalid(e));
    }
    let owned = std::str::from_utf8(unsafe { CStr::from_ptr(converted) }.to_bytes()).map(str::to_owned);
    unsafe { pg_sys::pfree(converted.cast()) };
    owned.map(Cow::Owned).unwrap_or_else(|e| invalid(e))
}

fn invalid(e: std::str::Utf8Error) -> ! {
    report(
        PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
        "invalid byte sequence for encoding \"UTF8\"".into(),
        Some(format!("The text is not valid UTF-8 at byte {}.", e.valid_up_to())),
        None,
    )
}
