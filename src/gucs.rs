//! The extension's settings. Both can make the server read files (and name what
//! `koe5_download()` fetches), so only superusers may set them (PGC_SUSET).

use std::ffi::CStr;

use pgrx::{pg_sys, GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};

pub static MODEL_PATH: GucSetting<Option<std::ffi::CString>> = GucSetting::<Option<std::ffi::CString>>::new(None);
pub static MODEL_ID: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(Some(c"nlpai-lab/KoE5"));

/// The cross-encoder: a directory, or a Hugging Face id found in the cache.
pub static RERANKER_PATH: GucSetting<Option<std::ffi::CString>> = GucSetting::<Option<std::ffi::CString>>::new(None);
pub static RERANKER_ID: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(Some(c"BAAI/bge-reranker-v2-m3"));

/// Compute threads per backend (0: one per CPU core), at most THREADS_MAX.
pub static THREADS: GucSetting<i32> = GucSetting::<i32>::new(0);
const THREADS_MAX: i32 = 1024;
static PRECISION: GucSetting<PrecisionSetting> = GucSetting::<PrecisionSetting>::new(PrecisionSetting::Auto);
pub static PRELOAD: GucSetting<bool> = GucSetting::<bool>::new(true);

/// `koe5.precision`: `auto`, or the name of a [`koe5_core::Precision`]. Its own type
/// because PostgreSQL needs the names and the `auto` choice as one enum; it means
/// nothing beyond [`PrecisionSetting::fixed`].
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
enum PrecisionSetting {
    #[name = c"auto"]
    Auto,
    #[name = c"f32"]
    F32,
    #[name = c"bf16"]
    Bf16,
    #[name = c"int8"]
    Int8,
}

impl PrecisionSetting {
    /// The precision this value names; None for `auto`, which the CPU decides.
    fn fixed(self) -> Option<koe5_core::Precision> {
        match self {
            PrecisionSetting::Auto => None,
            PrecisionSetting::F32 => Some(koe5_core::Precision::F32),
            PrecisionSetting::Bf16 => Some(koe5_core::Precision::Bf16),
            PrecisionSetting::Int8 => Some(koe5_core::Precision::Int8),
        }
    }
}

/// The precision the settings ask for, with `auto` resolved for this CPU.
pub fn precision() -> koe5_core::Precision {
    PRECISION.get().fixed().unwrap_or_else(koe5_core::Precision::auto)
}

/// Whether `koe5.precision` leaves the choice to the CPU (`auto`).
pub fn precision_is_auto() -> bool {
    PRECISION.get().fixed().is_none()
}

/// Query embeddings each backend keeps (0 turns the cache off).
pub static QUERY_CACHE_SIZE: GucSetting<i32> = GucSetting::<i32>::new(64);
/// Background worker settings (the worker runs only with shared_preload_libraries).
pub static WORKER_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static WORKER_DATABASE: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(Some(c"postgres"));
pub static WORKER_NAPTIME_MS: GucSetting<i32> = GucSetting::<i32>::new(1000);
pub static WORKER_BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(64);
pub static WORKER_BATCH_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(300_000);

/// `koe5.preload` exists only where koe5 is in shared_preload_libraries: PostgreSQL
/// refuses (with FATAL) to define a PGC_POSTMASTER setting once the server runs.
fn init_preload() {
    GucRegistry::define_bool_guc(
        c"koe5.preload",
        c"Loads the model once in the postmaster, shared by every session.",
        c"With koe5 in shared_preload_libraries, the server loads the model of koe5.model_path (or koe5.model_id) and koe5.precision at start; every backend shares that one copy and embeds at once. A backend whose settings name another model, or whose model files changed since, loads its own.",
        &PRELOAD,
        GucContext::Postmaster,
        GucFlags::default(),
    );
}

pub fn init() {
    if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        init_preload();
    }
    // Startup values of the superuser-only settings given before the library loaded
    // (see `check_pins`).
    let startup: Vec<(&'static CStr, String)> =
        SUPERUSER_ONLY.iter().filter_map(|&name| Some((name, session_start_value(name)?))).collect();
    GucRegistry::define_string_guc(
        c"koe5.model_path",
        c"Sets the directory of the sentence-transformers model that koe5 runs.",
        c"The directory holds config.json, model.safetensors, tokenizer.json and modules.json. When empty, koe5 looks for koe5.model_id in the Hugging Face cache.",
        &MODEL_PATH,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"koe5.model_id",
        c"Sets the Hugging Face model id used when koe5.model_path is empty.",
        c"koe5 looks for the id in the Hugging Face cache (HF_HUB_CACHE, HF_HOME or ~/.cache/huggingface of the server's user); koe5_download() fetches it there.",
        &MODEL_ID,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"koe5.reranker_path",
        c"Sets the directory of the cross-encoder that koe5_rerank() runs.",
        c"An XLMRobertaForSequenceClassification with one label, as sentence-transformers' CrossEncoder saves it (config.json, model.safetensors, tokenizer.json). When empty, koe5 looks for koe5.reranker_id in the Hugging Face cache.",
        &RERANKER_PATH,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"koe5.reranker_id",
        c"Sets the Hugging Face id of the cross-encoder used when koe5.reranker_path is empty.",
        c"koe5 looks for the id in the Hugging Face cache of the server's user.",
        &RERANKER_ID,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"koe5.threads",
        c"Sets how many compute threads a backend uses for inference.",
        c"0 means one per CPU core. Read when a backend first embeds; later changes apply to new sessions.",
        &THREADS,
        0,
        THREADS_MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"koe5.precision",
        c"Sets the arithmetic of the encoder's dense layers: auto, f32, bf16 or int8.",
        c"f32 gives the reference's vectors; bf16 (bf16 weights and inputs, f32 sums) keeps every vector within cosine 0.9999 of f32; int8 (int8 weights per column, inputs per token, exact integer sums) is faster than f32 where the CPU has AVX512-VNNI or AVX2, within about cosine 0.999 of f32, and refused on CPUs with neither. auto chooses per CPU from what was measured (koe5_model_info says what and why). A backend reloads its model when this changes.",
        &PRECISION,
        GucContext::Suset,
        GucFlags::default(),
    );
    define_refused();
    // The first whose value PostgreSQL refused: its setting now has no source.
    if let Some((name, value)) =
        startup.into_iter().find(|(name, _)| reset_source(name) == Some(pg_sys::GucSource::PGC_S_DEFAULT))
    {
        record_refused(name, &value);
    }
    GucRegistry::define_int_guc(
        c"koe5.query_cache_size",
        c"Sets how many query embeddings each backend remembers.",
        c"koe5_query(text) returns a remembered vector for a text (up to 4 KiB) it has embedded recently with the same model, so a query repeated per row is embedded once. 0 turns the cache off.",
        &QUERY_CACHE_SIZE,
        0,
        10_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"koe5.worker_enabled",
        c"Turns on the background worker that embeds queued rows.",
        c"Needs shared_preload_libraries = 'koe5'. Tables join the queue with koe5_enqueue_table().",
        &WORKER_ENABLED,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"koe5.worker_database",
        c"Sets the database whose queue the background worker embeds.",
        c"",
        &WORKER_DATABASE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"koe5.worker_naptime",
        c"Sets how long the background worker sleeps when its queue is empty.",
        c"",
        &WORKER_NAPTIME_MS,
        10,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"koe5.worker_batch_size",
        c"Sets how many queued rows the background worker embeds per transaction.",
        c"",
        &WORKER_BATCH_SIZE,
        1,
        10_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"koe5.worker_batch_timeout",
        c"Sets how long one batch of the background worker may run; 0 means no limit.",
        c"A batch that runs longer (a slow trigger on its table, for instance) is cancelled, and its table rests before the next try, so the other tables' rows go on.",
        &WORKER_BATCH_TIMEOUT_MS,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    unsafe {
        #[cfg(not(feature = "pg14"))]
        pgrx::pg_sys::MarkGUCPrefixReserved(c"koe5".as_ptr());
        #[cfg(feature = "pg14")]
        pgrx::pg_sys::EmitWarningsOnPlaceholders(c"koe5".as_ptr());
    }
}

/// The settings only superusers (or roles granted SET on them) may set.
const SUPERUSER_ONLY: [&CStr; 6] = [
    c"koe5.model_path",
    c"koe5.model_id",
    c"koe5.reranker_path",
    c"koe5.reranker_id",
    c"koe5.threads",
    c"koe5.precision",
];

/// `koe5.refused_at_load`: "name=value" of the first superuser-only setting whose
/// session-start value PostgreSQL refused when koe5 loaded in this session, or empty.
/// A setting (not a variable of this process) so that parallel workers, which load
/// koe5 without the session's startup options, inherit it from their leader.
static REFUSED: GucSetting<Option<std::ffi::CString>> = GucSetting::<Option<std::ffi::CString>>::new(None);

fn define_refused() {
    GucRegistry::define_string_guc(
        c"koe5.refused_at_load",
        c"Shows a superuser-only koe5 setting PostgreSQL refused when koe5 loaded in this session.",
        c"Set by koe5 itself; while it is not empty, koe5 does not embed in this session.",
        &REFUSED,
        GucContext::Suset,
        GucFlags::NO_SHOW_ALL | GucFlags::NO_RESET_ALL | GucFlags::DISALLOW_IN_FILE,
    );
}

/// The session-start ("reset") value that a placeholder PostgreSQL keeps for `name`
/// until koe5 defines it got from the configuration file, `ALTER DATABASE`/`ALTER ROLE …
/// SET` or the connection's startup options (`PGOPTIONS`); None if none did (no
/// placeholder, or one made by a plain SET in the session).
fn session_start_value(name: &CStr) -> Option<String> {
    reset_source(name).filter(|&s| s != pg_sys::GucSource::PGC_S_DEFAULT)?;
    // SAFETY: the setting exists (reset_source found it), so this raises no ERROR.
    let value = unsafe { pg_sys::GetConfigOptionResetString(name.as_ptr()) };
    (!value.is_null()).then(|| unsafe { CStr::from_ptr(value) }.to_string_lossy().into_owned())
}

/// Where the session-start value of setting (or placeholder) `name` came from.
fn reset_source(name: &CStr) -> Option<pg_sys::GucSource::Type> {
    // SAFETY: PostgreSQL's own table of settings, read (not changed) in this process.
    unsafe {
        #[cfg(any(feature = "pg14", feature = "pg15"))]
        let found = {
            let all = pg_sys::get_guc_variables();
            let n = usize::try_from(pg_sys::GetNumConfigOptions()).unwrap_or(0);
            (0..n)
                .map(|i| *all.add(i))
                .find(|&g| !g.is_null() && CStr::from_ptr((*g).name).to_bytes().eq_ignore_ascii_case(name.to_bytes()))
        };
        #[cfg(not(any(feature = "pg14", feature = "pg15")))]
        let found =
            Some(pg_sys::find_option(name.as_ptr(), false, true, pg_sys::WARNING as i32)).filter(|g| !g.is_null());
        found.map(|g| (*g).reset_source)
    }
}

/// Whether `value` is one that setting `name` accepts.
fn valid_value(name: &str, value: &str) -> bool {
    match name {
        "koe5.precision" => {
            // the names PrecisionSetting declares to PostgreSQL, ended by a null name
            let mut entry = <PrecisionSetting as pgrx::GucEnum>::CONFIG_ENUM_ENTRY;
            // SAFETY: a static array that ends with an entry whose name is null.
            unsafe {
                while !(*entry).name.is_null() {
                    if CStr::from_ptr((*entry).name).to_bytes().eq_ignore_ascii_case(value.as_bytes()) {
                        return true;
                    }
                    entry = entry.add(1);
                }
            }
            false
        }
        "koe5.threads" => {
            let Ok(v) = std::ffi::CString::new(value) else { return false };
            let mut out = 0;
            // SAFETY: a NUL-terminated string and an out-parameter; no hint wanted.
            let parsed = unsafe { pg_sys::parse_int(v.as_ptr(), &mut out, 0, std::ptr::null_mut()) };
            parsed && (0..=THREADS_MAX).contains(&out)
        }
        _ => true,
    }
}

/// Records in `koe5.refused_at_load` that PostgreSQL refused `value`, the session-start
/// value of `name`, when koe5 defined it (a role that may not set it gave it in the
/// startup options, or it is invalid), dropping with it the value the database, role
/// or configuration file set.
fn record_refused(name: &CStr, value: &str) {
    let Ok(value) = std::ffi::CString::new(format!("{}={value}", name.to_string_lossy())) else { return };
    // SAFETY: koe5's own setting, just defined; PGC_S_OVERRIDE makes it the session's
    // reset value too, so no transaction's abort and no RESET takes it back.
    unsafe {
        pg_sys::set_config_option(
            c"koe5.refused_at_load".as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_OVERRIDE,
            pg_sys::GucAction::GUC_ACTION_SET,
            true,
            pg_sys::WARNING as i32,
            false,
        );
    }
}

/// Refuses to embed in a session where a superuser-only setting's startup value was
/// dropped when koe5 loaded (without shared_preload_libraries, PostgreSQL keeps such a
/// value as a placeholder until then and, refusing it, falls back to the built-in
/// default rather than to the administrator's `ALTER DATABASE`/`ALTER ROLE`/`ALTER
/// SYSTEM` value): the session would otherwise embed with a model, precision or thread
/// count nobody chose.
pub fn check_pins() {
    if let Some((code, message, detail, hint)) = dropped_pin() {
        crate::ereport::report(code, message, Some(detail), Some(hint))
    }
}

/// The error `check_pins` raises, if any: SQLSTATE, message, detail and hint.
pub fn dropped_pin() -> Option<(pgrx::PgSqlErrorCode, String, String, String)> {
    let refused = REFUSED.get()?.to_string_lossy().into_owned();
    let (name, value) = refused.split_once('=')?;
    let (code, message) = if valid_value(name, value) {
        (
            pgrx::PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("{name} was set for this session by a role that may not set it"),
        )
    } else {
        (
            pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid value for {name} in this session: \"{value}\""),
        )
    };
    Some((
        code,
        message,
        format!(
            "PostgreSQL refused the value \"{value}\" given at connection time when koe5 loaded, and fell back to the built-in default instead of the value the database, role or server configuration sets; koe5 does not embed with settings nobody chose."
        ),
        format!(
            "Reconnect without setting {name} (PGOPTIONS, connection options, ALTER ROLE … SET), have a superuser GRANT SET ON PARAMETER {name} to the role, or load koe5 with shared_preload_libraries."
        ),
    ))
}

fn text_of(setting: &GucSetting<Option<std::ffi::CString>>) -> Option<String> {
    setting.get().map(|s| CStr::to_string_lossy(&s).into_owned()).filter(|s| !s.trim().is_empty())
}

/// The model directory as the file system names it: the setting's bytes as they are
/// (a path is bytes, whatever the server encoding).
pub fn model_path() -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    MODEL_PATH
        .get()
        .filter(|s| !s.to_bytes().trim_ascii().is_empty())
        .map(|s| std::path::PathBuf::from(std::ffi::OsStr::from_bytes(s.to_bytes())))
}

/// The cross-encoder's directory, as bytes (see [`model_path`]).
pub fn reranker_path() -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    RERANKER_PATH
        .get()
        .filter(|s| !s.to_bytes().trim_ascii().is_empty())
        .map(|s| std::path::PathBuf::from(std::ffi::OsStr::from_bytes(s.to_bytes())))
}

const DEFAULT_RERANKER_ID: &str = "BAAI/bge-reranker-v2-m3";

/// Whether koe5.reranker_id names another cross-encoder than the default.
pub fn reranker_id_is_set() -> bool {
    text_of(&RERANKER_ID).is_some_and(|id| id != DEFAULT_RERANKER_ID)
}

pub fn reranker_id() -> String {
    text_of(&RERANKER_ID).unwrap_or_else(|| DEFAULT_RERANKER_ID.to_owned())
}

pub fn model_id() -> String {
    text_of(&MODEL_ID).unwrap_or_else(|| "nlpai-lab/KoE5".to_owned())
}

pub fn worker_database() -> String {
    text_of(&WORKER_DATABASE).unwrap_or_else(|| "postgres".to_owned())
}
