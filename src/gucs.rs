//! The extension's settings. Both can make the server read files (and name what
//! `koe5_download()` fetches), so only superusers may set them (PGC_SUSET).

use std::ffi::CStr;

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

pub static MODEL_PATH: GucSetting<Option<std::ffi::CString>> = GucSetting::<Option<std::ffi::CString>>::new(None);
pub static MODEL_ID: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(Some(c"nlpai-lab/KoE5"));

pub fn init() {
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
    unsafe {
        #[cfg(not(feature = "pg14"))]
        pgrx::pg_sys::MarkGUCPrefixReserved(c"koe5".as_ptr());
        #[cfg(feature = "pg14")]
        pgrx::pg_sys::EmitWarningsOnPlaceholders(c"koe5".as_ptr());
    }
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

pub fn model_id() -> String {
    text_of(&MODEL_ID).unwrap_or_else(|| "nlpai-lab/KoE5".to_owned())
}
