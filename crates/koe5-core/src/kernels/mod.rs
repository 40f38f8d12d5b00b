//! The encoder's arithmetic on plain row-major f32 buffers, one kernel per file:
//!
//! - [`matmul`]: the dense layers, `x · W + bias` with a fused GELU or residual, on
//!   weights packed once at load;
//! - [`attention`]: softmax(Q·Kᵀ/√d)·V per sequence and head;
//! - [`layer_norm`]: LayerNorm of each row;
//! - `bf16`: rounding f32 to bf16 and back;
//! - `int8`: quantising weights (per column) and activations (per row) to bytes;
//! - `approx`: e^x, erf and GELU, fast in f32, with the exact f64 erf they are held to;
//! - `cpu`: which instructions this CPU has;
//! - `shared_out`: the output buffer the threads of one kernel call fill together.
//!
//! Every kernel with an AVX-512 path has a portable one that computes the same sums
//! (equal up to the order of additions); runtime detection picks the path, and nothing
//! needs the instructions at build time.

mod approx;
mod attention;
mod bf16;
mod cpu;
mod int8;
mod layer_norm;
mod matmul;
mod shared_out;

pub(crate) use approx::gelu_tanh;
pub use approx::{exact_erf, exp_nonpositive, gelu};
pub use attention::{attention, Attention};
pub use bf16::{bf16_bits, bf16_to_f32};
pub use cpu::{cpu_vendor, has_avx2_fma, has_avx512_bf16, has_avx512_vnni, has_avx512f};
pub use layer_norm::layer_norm;
pub use matmul::{epilogue, has_fast_path, matmul, Epilogue, Packed, Scratch};
