//! The output buffer that the tasks of one parallel kernel call fill together.

/// The start of an output buffer that several threads write at once, each into cells no
/// other thread writes: a multiply's panels of columns, attention's (sequence, head)
/// blocks. A raw pointer is neither `Send` nor `Sync`; this one may cross threads
/// because every write through it comes from [`SharedOut::at`], whose contract says who
/// may write where.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(*mut f32);

// SAFETY: sending the pointer to another thread accesses nothing. Accesses go through
// `at`, whose callers promise that the buffer outlives the parallel call and that no
// cell is written by two threads or read while another thread writes it.
unsafe impl Send for SharedOut {}
// SAFETY: a shared `SharedOut` gives only a copy of the pointer, used under the same
// contract as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The allocation of `out`, all of its capacity (a kernel reserves its output, fills
    /// every cell in parallel, then sets the length).
    pub(crate) fn new(out: &mut Vec<f32>) -> SharedOut {
        SharedOut(out.as_mut_ptr())
    }

    /// A pointer to cell `offset` of the buffer.
    ///
    /// # Safety
    ///
    /// `offset` lies within the buffer's capacity; the buffer is not moved, grown or freed
    /// until the parallel call ends; and the cells the caller writes through the pointer
    /// are written by no other thread, and read by none, during the call.
    pub(crate) unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: `offset` is within the allocation (the caller's first promise).
        unsafe { self.0.add(offset) }
    }
}
