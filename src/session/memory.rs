//! How the heap serves forward passes: tuned once per process before the first one,
//! and its free pages given back to the kernel after each model load and embedding
//! call, so an idle session holds only the model.

/// Sets the heap's thresholds for forward passes; called once per process, before any
/// compute thread starts (`threads::start_threads`).
///
/// A forward pass reserves its buffers once per batch (the largest, the FFN's
/// activations, is 32 MiB at KoE5's size and the 2,048-token budget). Served from the
/// heap and kept there, the next batch of a call reuses them without page faults; left
/// to mmap (glibc's default until its threshold adapts, which it does not in a process
/// forked from a preloading postmaster) each batch faults them in and zeroes them anew.
/// (When the forward pass still allocated per layer, this was a quarter of the bf16
/// time; with buffers reused across layers it is about 24,000 page faults per full
/// batch, estimated at a few milliseconds, not measured.) The heap keeps up to 128 MiB
/// free while a call runs; the call gives it back when it ends (`release_free_memory`).
pub(super) fn tune_heap() {
    // SAFETY: plain malloc tuning.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

/// Gives the heap's free pages back to the kernel: after a model load (which reads each
/// f32 tensor before packing or transposing it, and would otherwise leave a bf16
/// backend holding about 1 GB it no longer uses, 3.0 instead of 2.0 GB at KoE5's size,
/// and a preloading postmaster the same in every child), and after each embedding call
/// (whose buffers the heap keeps while the call runs, see `tune_heap`).
pub fn release_free_memory() {
    // SAFETY: malloc_trim only returns free memory; it is thread-safe.
    unsafe { libc::malloc_trim(0) };
}
