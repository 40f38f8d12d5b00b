//! Reading a safetensors file with plain reads, not a memory map.
//!
//! A mapped file that someone truncates or rewrites while it is read faults the
//! process with SIGBUS, and inside PostgreSQL that takes the whole server through
//! crash recovery. Reading each tensor with `pread` into memory koe5 owns turns the
//! same accident into an error: a short read. Each tensor is read straight into the
//! buffer the model keeps (f32 files) or through one half-size buffer (f16, bf16), so
//! loading needs no more memory than the model, and the page cache is not counted
//! against the backend.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use crate::error::{Error, Result};

#[cfg(not(target_endian = "little"))]
compile_error!("safetensors data is little-endian; koe5 reads it as native numbers");

/// Largest header koe5 accepts (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100 << 20;

#[derive(Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

/// Every tensor of the file as f32 on the CPU, by name. `interrupt` runs between tensors.
pub fn read_f32(path: &Path, interrupt: &mut dyn FnMut()) -> Result<HashMap<String, Tensor>> {
    let bad = |reason: String| Error::weights(path, reason);
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut len = [0u8; 8];
    file.read_exact_at(&mut len, 0).map_err(|e| bad(format!("cannot read the header length: {e}")))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER || 8 + header_len > size {
        return Err(bad(format!("header length {header_len} does not fit a file of {size} bytes")));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 8).map_err(|e| bad(format!("cannot read the header: {e}")))?;
    let mut entries: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("invalid header: {e}")))?;
    entries.remove("__metadata__");
    let data_start = 8 + header_len;
    let mut tensors = HashMap::with_capacity(entries.len());
    for (name, value) in entries {
        interrupt();
        let e: Entry = serde_json::from_value(value).map_err(|err| bad(format!("tensor \"{name}\": {err}")))?;
        let [begin, end] = e.data_offsets;
        let count: usize = e.shape.iter().product();
        let width = match e.dtype.as_str() {
            "F32" => 4,
            "F16" | "BF16" => 2,
            other => return Err(bad(format!("tensor \"{name}\" has unsupported type {other}"))),
        };
        if end < begin || end - begin != (count * width) as u64 || data_start + end > size {
            return Err(bad(format!("tensor \"{name}\" does not fit its place in the file ({size} bytes)")));
        }
        let at = data_start + begin;
        let read = |buf: &mut [u8]| file.read_exact_at(buf, at).map_err(|err| bad(format!("tensor \"{name}\": {err}")));
        let tensor = if width == 4 {
            let mut v = vec![0f32; count];
            // SAFETY: any bit pattern is a valid f32; the slice covers exactly `v`.
            read(unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), count * 4) })?;
            Tensor::from_vec(v, e.shape, &Device::Cpu)
        } else {
            let mut v = vec![0u16; count];
            // SAFETY: as above, for u16.
            read(unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), count * 2) })?;
            let dtype = if e.dtype == "F16" { DType::F16 } else { DType::BF16 };
            // SAFETY: the u16 buffer holds `count` values of the 2-byte type `dtype`.
            let bytes = unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), count * 2) };
            Tensor::from_raw_buffer(bytes, dtype, &e.shape, &Device::Cpu).and_then(|t| t.to_dtype(DType::F32))
        }
        .map_err(|err| bad(format!("tensor \"{name}\": {err}")))?;
        tensors.insert(name, tensor);
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_cut_anywhere_is_an_error_not_a_fault() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-xlmr/model.safetensors");
        let bytes = std::fs::read(&fixture).unwrap();
        let whole = read_f32(&fixture, &mut || {}).unwrap();
        assert!(whole.len() > 10);
        let dir = std::env::temp_dir().join(format!("koe5-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cut = dir.join("model.safetensors");
        for len in [0, 5, 8, 9, 200, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&cut, &bytes[..len]).unwrap();
            let err = read_f32(&cut, &mut || {}).err().unwrap_or_else(|| panic!("cut at {len} bytes loaded"));
            assert!(err.message.starts_with("could not load weights from"), "{len}: {}", err.message);
        }
        // A header that claims more than the file holds.
        let mut bad = bytes.clone();
        bad[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        std::fs::write(&cut, &bad).unwrap();
        assert!(read_f32(&cut, &mut || {}).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
