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
use std::os::unix::fs::FileExt;
use std::path::Path;

use candle_core::{Device, Tensor};
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

/// The tensors of a weights file, and the SHA-256 of exactly the bytes they were read from.
pub struct Weights {
    pub tensors: HashMap<String, Tensor>,
    /// Hex SHA-256 of the file as read (every byte of it: the header and the tensors
    /// tile the file), so it names the model loaded even if the file changes later.
    pub sha256: String,
}

/// Every tensor of the file `path` (in the model directory `dir`, opened with the
/// checks of [`crate::files`]) as f32 on the CPU, by name, with the 2-D tensors for
/// which `transposed(name)` holds stored transposed (each one as it is read, so loading
/// never holds two copies of the model). `interrupt` runs between tensors.
///
/// The header is checked before anything large is allocated: sizes must match types
/// and shapes (without overflow), and the tensors must tile the data section exactly,
/// in order, without gaps or overlaps, as the format requires.
pub fn read_f32(
    dir: &Path,
    path: &Path,
    transposed: &dyn Fn(&str) -> bool,
    interrupt: &mut dyn FnMut(),
) -> Result<Weights> {
    use sha2::{Digest, Sha256};
    let bad = |reason: String| Error::weights(path, reason);
    let (file, meta) = crate::files::open(dir, path, u64::MAX)?;
    let size = meta.len();
    let mut hasher = Sha256::new();
    let mut len = [0u8; 8];
    file.read_exact_at(&mut len, 0).map_err(|e| bad(format!("cannot read the header length: {e}")))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER {
        return Err(bad(format!("its header is larger than the {} MiB koe5 reads", MAX_HEADER >> 20)));
    }
    if header_len.saturating_add(8) > size {
        return Err(bad("its header runs past the end of the file".into()));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 8).map_err(|e| bad(format!("cannot read the header: {e}")))?;
    hasher.update(len);
    hasher.update(&header);
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
            let bytes = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), count * 4) };
            read(bytes)?;
            hasher.update(&*bytes);
            Tensor::from_vec(v, e.shape, &Device::Cpu)
        } else {
            let mut v: Vec<u16> = zeroed(count, path)?;
            // SAFETY: as above, for u16.
            let bytes = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), count * 2) };
            read(bytes)?;
            hasher.update(&*bytes);
            // Converted here, not by candle: a load computes nothing in candle, so it
            // starts none of candle's threads (the postmaster must have none, see the
            // extension's `preload`).
            let widen = if e.dtype == "F16" { f16_to_f32 } else { crate::kernels::bf16_to_f32 };
            let mut wide: Vec<f32> = zeroed(count, path)?;
            for (w, &h) in wide.iter_mut().zip(&v) {
                *w = widen(h);
            }
            drop(v);
            Tensor::from_vec(wide, e.shape, &Device::Cpu)
        }
        .and_then(|t| if t.rank() == 2 && transposed(&name) { t.t()?.contiguous() } else { Ok(t) })
        .map_err(|err| bad(format!("tensor \"{name}\": {err}")))?;
        if tensors.insert(name.clone(), tensor).is_some() {
            return Err(bad(format!("tensor \"{name}\" appears twice")));
        }
    }
    let sha256 = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Weights { tensors, sha256 })
}

/// IEEE half precision to f32, exactly (subnormals, infinities and NaN included).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        // Subnormal: man · 2^-24.
        (0, _) => {
            let v = man as f32 / (1u32 << 24) as f32;
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> Result<Weights> {
        read_f32(path.parent().unwrap(), path, &|_| false, &mut || {})
    }

    #[test]
    fn half_precision_files_are_widened_exactly() {
        // f16: 1, -2, 65504 (largest), 2^-24 (smallest subnormal), -0, +inf; bf16: 1, -3.5, NaN.
        let f16: [u16; 6] = [0x3c00, 0xc000, 0x7bff, 0x0001, 0x8000, 0x7c00];
        let bf16: [u16; 3] = [0x3f80, 0xc060, 0x7fc0];
        let header = r#"{"a":{"dtype":"F16","shape":[6],"data_offsets":[0,12]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[12,18]}}"#;
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header.as_bytes());
        for h in f16.iter().chain(&bf16) {
            file.extend_from_slice(&h.to_le_bytes());
        }
        let path = std::env::temp_dir().join(format!("koe5-half-{}.safetensors", std::process::id()));
        std::fs::write(&path, &file).unwrap();
        let t = read(&path).unwrap().tensors;
        std::fs::remove_file(&path).unwrap();
        let a: Vec<f32> = t["a"].to_vec1().unwrap();
        assert_eq!(&a[..5], &[1.0, -2.0, 65504.0, 1.0 / 16_777_216.0, -0.0]);
        assert!(a[4].is_sign_negative() && a[5] == f32::INFINITY);
        let b: Vec<f32> = t["b"].to_vec1().unwrap();
        assert_eq!(&b[..2], &[1.0, -3.5]);
        assert!(b[2].is_nan());
        // Every finite f16 against the definition: sign · 2^(e-15) · (1 + m/1024).
        for h in 0..=0xffffu16 {
            let (e, m) = ((h >> 10) & 0x1f, h & 0x3ff);
            if e == 0x1f {
                continue;
            }
            let mag =
                if e == 0 { m as f64 * 2f64.powi(-24) } else { 2f64.powi(e as i32 - 15) * (1.0 + m as f64 / 1024.0) };
            let want = if h & 0x8000 != 0 { -mag } else { mag };
            assert_eq!(f16_to_f32(h) as f64, want, "{h:#06x}");
        }
    }

    #[test]
    fn a_file_cut_anywhere_is_an_error_not_a_fault() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-xlmr/model.safetensors");
        let bytes = std::fs::read(&fixture).unwrap();
        let whole = read(&fixture).unwrap();
        assert!(whole.tensors.len() > 10);
        // The SHA-256 of what was read is the file's.
        assert_eq!(whole.sha256, crate::files::sha256_file(&fixture, &mut || {}).unwrap());
        let dir = std::env::temp_dir().join(format!("koe5-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cut = dir.join("model.safetensors");
        for len in [0, 5, 8, 9, 200, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&cut, &bytes[..len]).unwrap();
            let err = read(&cut).err().unwrap_or_else(|| panic!("cut at {len} bytes loaded"));
            assert!(err.message.starts_with("could not load weights from"), "{len}: {}", err.message);
        }
        // A header that claims more than the file holds.
        let mut bad = bytes.clone();
        bad[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        std::fs::write(&cut, &bad).unwrap();
        let err = read(&cut).err().unwrap();
        // The reason, not the raw header bytes (which would fingerprint any file).
        assert!(err.message.ends_with("its header is larger than the 16 MiB koe5 reads"), "{}", err.message);
        bad[..8].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        std::fs::write(&cut, &bad).unwrap();
        let err = read(&cut).err().unwrap();
        assert!(err.message.ends_with("its header runs past the end of the file"), "{}", err.message);
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
            let err = read(&cut).err().unwrap_or_else(|| panic!("{header} loaded"));
            assert!(err.message.starts_with("could not load weights from"), "{header}: {}", err.message);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
