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

use crate::error::{Error, ErrorKind, Result};

#[cfg(not(target_endian = "little"))]
compile_error!("safetensors data is little-endian; koe5 reads it as native numbers");

/// Largest header koe5 accepts (the format allows 100 MB; KoE5's is 30 KB).
const MAX_HEADER: u64 = 16 << 20;

#[derive(Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

/// A buffer of `count` zeroed values, or an out-of-memory error instead of the abort
/// that a failed `vec!` would be.
fn zeroed<T: Copy + Default>(count: usize, path: &Path) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(count).map_err(|_| {
        Error::new(
            ErrorKind::OutOfMemory,
            format!("out of memory reading \"{}\": {count} values of {} bytes", path.display(), size_of::<T>()),
        )
    })?;
    v.resize(count, T::default());
    Ok(v)
}

/// Every tensor of the file as f32 on the CPU, by name, with the 2-D tensors for which
/// `transposed(name)` holds stored transposed (each one as it is read, so loading never
/// holds two copies of the model). `interrupt` runs between tensors.
///
/// The header is checked before anything large is allocated: sizes must match types
/// and shapes (without overflow), and the tensors must tile the data section exactly,
/// in order, without gaps or overlaps, as the format requires.
pub fn read_f32(
    path: &Path,
    transposed: &dyn Fn(&str) -> bool,
    interrupt: &mut dyn FnMut(),
) -> Result<HashMap<String, Tensor>> {
    let bad = |reason: String| Error::weights(path, reason);
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut len = [0u8; 8];
    file.read_exact_at(&mut len, 0).map_err(|e| bad(format!("cannot read the header length: {e}")))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER || header_len.saturating_add(8) > size {
        return Err(bad(format!("header length {header_len} does not fit a file of {size} bytes")));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 8).map_err(|e| bad(format!("cannot read the header: {e}")))?;
    let mut raw: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("invalid header: {e}")))?;
    raw.remove("__metadata__");
    let data_start = 8 + header_len;
    let mut entries = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let e: Entry = serde_json::from_value(value).map_err(|err| bad(format!("tensor \"{name}\": {err}")))?;
        let width: u64 = match e.dtype.as_str() {
            "F32" => 4,
            "F16" | "BF16" => 2,
            other => return Err(bad(format!("tensor \"{name}\" has unsupported type {other}"))),
        };
        let count = e.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let bytes = count.and_then(|c| u64::try_from(c).ok()?.checked_mul(width));
        let [begin, end] = e.data_offsets;
        if bytes != end.checked_sub(begin) {
            return Err(bad(format!("tensor \"{name}\": its size does not match its type and shape")));
        }
        entries.push((name, e, count.unwrap_or(0)));
    }
    entries.sort_by_key(|(_, e, _)| e.data_offsets);
    let mut next = 0u64;
    for (name, e, _) in &entries {
        if e.data_offsets[0] != next {
            return Err(bad(format!("tensor \"{name}\" does not start where the previous one ends")));
        }
        next = e.data_offsets[1];
    }
    if data_start.checked_add(next) != Some(size) {
        return Err(bad(format!("the tensors fill {next} bytes of a data section of {} bytes", size - data_start)));
    }

    let mut tensors = HashMap::with_capacity(entries.len());
    for (name, e, count) in entries {
        interrupt();
        let at = data_start + e.data_offsets[0];
        let read = |buf: &mut [u8]| file.read_exact_at(buf, at).map_err(|err| bad(format!("tensor \"{name}\": {err}")));
        let tensor = if e.dtype == "F32" {
            let mut v: Vec<f32> = zeroed(count, path)?;
            // SAFETY: any bit pattern is a valid f32; the slice covers exactly `v`.
            read(unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), count * 4) })?;
            Tensor::from_vec(v, e.shape, &Device::Cpu)
        } else {
            let mut v: Vec<u16> = zeroed(count, path)?;
            // SAFETY: as above, for u16.
            read(unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), count * 2) })?;
            let dtype = if e.dtype == "F16" { DType::F16 } else { DType::BF16 };
            // SAFETY: the u16 buffer holds `count` values of the 2-byte type `dtype`.
            let bytes = unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), count * 2) };
            Tensor::from_raw_buffer(bytes, dtype, &e.shape, &Device::Cpu).and_then(|t| t.to_dtype(DType::F32))
        }
        .and_then(|t| if t.rank() == 2 && transposed(&name) { t.t()?.contiguous() } else { Ok(t) })
        .map_err(|err| bad(format!("tensor \"{name}\": {err}")))?;
        if tensors.insert(name.clone(), tensor).is_some() {
            return Err(bad(format!("tensor \"{name}\" appears twice")));
        }
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
        let whole = read_f32(&fixture, &|_| false, &mut || {}).unwrap();
        assert!(whole.len() > 10);
        let dir = std::env::temp_dir().join(format!("koe5-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cut = dir.join("model.safetensors");
        for len in [0, 5, 8, 9, 200, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&cut, &bytes[..len]).unwrap();
            let err =
                read_f32(&cut, &|_| false, &mut || {}).err().unwrap_or_else(|| panic!("cut at {len} bytes loaded"));
            assert!(err.message.starts_with("could not load weights from"), "{len}: {}", err.message);
        }
        // A header that claims more than the file holds.
        let mut bad = bytes.clone();
        bad[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        std::fs::write(&cut, &bad).unwrap();
        assert!(read_f32(&cut, &|_| false, &mut || {}).is_err());
        // Crafted headers: overflowing shapes, overlapping tensors, huge offsets.
        for header in [
            r#"{"a":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,0]}}"#,
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551615]}}"#,
            r#"{"a":{"dtype":"F32","shape":[1000000000],"data_offsets":[0,4000000000]}}"#,
        ] {
            let mut file = (header.len() as u64).to_le_bytes().to_vec();
            file.extend_from_slice(header.as_bytes());
            file.extend_from_slice(&[0u8; 8]);
            std::fs::write(&cut, &file).unwrap();
            let err = read_f32(&cut, &|_| false, &mut || {}).err().unwrap_or_else(|| panic!("{header} loaded"));
            assert!(err.message.starts_with("could not load weights from"), "{header}: {}", err.message);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
