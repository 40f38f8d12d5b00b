//! The XLM-RoBERTa encoder. Weights are read through candle's `VarBuilder`, with
//! names that mirror Hugging Face's module tree (`embeddings`,
//! `encoder.layer.N.attention.self`, …), i.e. the safetensors keys; the forward pass is
//! koe5's own, on plain f32 buffers: packed dense layers with fused epilogues
//! ([`kernels`]), attention and LayerNorm ([`ops`]). It returns the last hidden state;
//! pooling is the caller's job. Between steps it calls the caller's interrupt hook,
//! which is how PostgreSQL's cancel and statement_timeout reach a long batch.

use candle_core::{Device, Storage, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::config::{Activation, EncoderConfig};
use crate::kernels::{self, Epilogue, Format, Packed};
use crate::ops::{self, Attention};
use crate::Precision;

type CResult<T> = candle_core::Result<T>;

/// Whether a checkpoint tensor is a dense layer's weight, which the encoder keeps
/// transposed (the weights reader transposes it as it reads).
pub fn stored_transposed(name: &str) -> bool {
    [".query.weight", ".key.weight", ".value.weight", ".dense.weight"].iter().any(|s| name.ends_with(s))
}

/// A dense layer, `x · W + b`, with `W` (`k × n`) packed for [`kernels::matmul`]; or,
/// in f32 on a CPU without AVX512F, kept as a candle tensor for candle's matmul (whose
/// gemm has AVX2 and NEON kernels), the epilogue then applied in a second pass.
struct Dense {
    weights: Weights,
    bias: Vec<f32>,
    k: usize,
    n: usize,
}

enum Weights {
    Packed(Packed),
    Candle(Tensor),
}

impl Dense {
    /// `w` is `k × n` row-major (transposed already).
    fn new(w: &[f32], bias: Vec<f32>, k: usize, n: usize, precision: Precision) -> CResult<Dense> {
        let format = match precision {
            Precision::F32 => Format::F32,
            Precision::Bf16 => Format::Bf16,
        };
        let weights = if format == Format::F32 && !kernels::has_fast_path(Format::F32) {
            Weights::Candle(Tensor::from_slice(w, (k, n), &Device::Cpu)?)
        } else {
            Weights::Packed(Packed::pack(w, k, n, format).ok_or_else(|| {
                candle_core::Error::Msg(format!("out of memory packing a {k}×{n} weight ({format:?})"))
            })?)
        };
        Ok(Dense { weights, bias, k, n })
    }

    /// `x · W + b` over `m` rows into `out`, then GELU (`Epilogue::BiasGelu`, exact-erf)
    /// or `residual` added.
    fn forward(
        &self,
        x: &[f32],
        m: usize,
        epilogue: Epilogue,
        residual: Option<&[f32]>,
        out: &mut Vec<f32>,
        scratch: &mut Vec<u32>,
    ) -> CResult<()> {
        match &self.weights {
            Weights::Packed(p) => kernels::matmul_into(x, m, p, &self.bias, epilogue, residual, true, out, scratch),
            Weights::Candle(w) => {
                *out = Tensor::from_slice(x, (m, self.k), &Device::Cpu)?.matmul(w)?.flatten_all()?.to_vec1::<f32>()?;
                out.par_chunks_mut(self.n).enumerate().for_each(|(r, row)| {
                    let res = residual.map(|res| &res[r * self.n..(r + 1) * self.n]);
                    for (j, v) in row.iter_mut().enumerate() {
                        *v += self.bias[j] + res.map_or(0.0, |res| res[j]);
                        if epilogue == Epilogue::BiasGelu {
                            *v = kernels::gelu(*v);
                        }
                    }
                });
            }
        }
        Ok(())
    }
}

/// Calls `f` with the values of a contiguous f32 CPU tensor, without copying them.
fn with_f32_slice<T>(t: &Tensor, f: impl FnOnce(&[f32]) -> T) -> CResult<T> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => {
            let all = cpu.as_slice::<f32>()?;
            Ok(f(&all[layout.start_offset()..layout.start_offset() + layout.shape().elem_count()]))
        }
        _ => candle_core::bail!("koe5 computes on the CPU"),
    }
}

/// One dense layer, or several side by side (Q, K and V as one `k × 3k` multiply).
fn linear(vbs: &[VarBuilder], inp: usize, out: usize, precision: Precision) -> CResult<Dense> {
    let n = out * vbs.len();
    // Read transposed already: see `stored_transposed`.
    let weights = vbs.iter().map(|vb| vb.get((inp, out), "weight")).collect::<CResult<Vec<_>>>()?;
    let mut bias = Vec::with_capacity(n);
    for vb in vbs {
        bias.extend(vb.get(out, "bias")?.to_vec1::<f32>()?);
    }
    if let [w] = weights.as_slice() {
        return with_f32_slice(w, |w| Dense::new(w, bias, inp, n, precision))?;
    }
    let mut joined = vec![0f32; inp * n];
    for (i, w) in weights.iter().enumerate() {
        with_f32_slice(w, |w| {
            for r in 0..inp {
                joined[r * n + i * out..r * n + (i + 1) * out].copy_from_slice(&w[r * out..(r + 1) * out]);
            }
        })?;
    }
    drop(weights);
    Dense::new(&joined, bias, inp, n, precision)
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl Norm {
    fn new(vb: VarBuilder, size: usize, eps: f64) -> CResult<Norm> {
        Ok(Norm { gamma: vb.get(size, "weight")?.to_vec1()?, beta: vb.get(size, "bias")?.to_vec1()?, eps: eps as f32 })
    }

    fn forward(&self, x: &mut [f32]) {
        ops::layer_norm(x, &self.gamma, &self.beta, self.eps, true)
    }
}

struct Embeddings {
    /// `vocab × hidden` and `positions × hidden`, kept as read (rows are gathered).
    word: Tensor,
    position: Tensor,
    /// Row 0 of the token-type table: XLM-R inputs are all type 0.
    token_type0: Vec<f32>,
    norm: Norm,
    pad_id: u32,
    hidden: usize,
}

impl Embeddings {
    fn new(cfg: &EncoderConfig, vb: VarBuilder) -> CResult<Self> {
        let h = cfg.hidden_size;
        let word = vb.pp("word_embeddings").get((cfg.vocab_size, h), "weight")?;
        let position = vb.pp("position_embeddings").get((cfg.max_position_embeddings, h), "weight")?;
        let token_type = vb.pp("token_type_embeddings").get((cfg.type_vocab_size, h), "weight")?;
        let norm = Norm::new(vb.pp("LayerNorm"), h, cfg.layer_norm_eps)?;
        let token_type0 = token_type.get(0)?.to_vec1()?;
        Ok(Embeddings { word, position, token_type0, norm, pad_id: cfg.pad_token_id, hidden: h })
    }

    /// `ids` is `batch × seq`, row-major, padded with the pad id.
    fn forward(&self, ids: &[u32], seq: usize) -> CResult<Vec<f32>> {
        // Hugging Face numbers positions by counting non-pad ids, starting at pad + 1;
        // every pad id (padding, or a literal "<pad>" in the text) gets position pad.
        let mut positions = Vec::with_capacity(ids.len());
        for row in ids.chunks_exact(seq) {
            let mut count = 0u32;
            for &id in row {
                if id == self.pad_id {
                    positions.push(self.pad_id);
                } else {
                    count += 1;
                    positions.push(self.pad_id + count);
                }
            }
        }
        let h = self.hidden;
        let (vocab, npos) = (self.word.dim(0)?, self.position.dim(0)?);
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            candle_core::bail!("token id {bad} is outside the vocabulary of {vocab}");
        }
        if let Some(&bad) = positions.iter().find(|&&p| p as usize >= npos) {
            candle_core::bail!("position {bad} is outside the model's {npos} positions");
        }
        let mut x = vec![0f32; ids.len() * h];
        with_f32_slice(&self.word, |word| {
            with_f32_slice(&self.position, |pos| {
                x.par_chunks_mut(h).zip(ids.par_iter().zip(&positions)).for_each(|(row, (&id, &p))| {
                    let (w, q) = (&word[id as usize * h..][..h], &pos[p as usize * h..][..h]);
                    for (c, v) in row.iter_mut().enumerate() {
                        *v = w[c] + q[c] + self.token_type0[c];
                    }
                });
            })
        })??;
        self.norm.forward(&mut x);
        Ok(x)
    }
}

struct Layer {
    /// Queries, keys and values side by side: one `hidden × 3·hidden` multiply.
    qkv: Dense,
    attn_out: Dense,
    attn_norm: Norm,
    inter: Dense,
    out: Dense,
    out_norm: Norm,
    heads: usize,
    head_dim: usize,
    activation: Activation,
}

impl Layer {
    fn new(cfg: &EncoderConfig, activation: Activation, precision: Precision, vb: VarBuilder) -> CResult<Self> {
        let h = cfg.hidden_size;
        let att = vb.pp("attention");
        let sel = att.pp("self");
        Ok(Layer {
            qkv: linear(&[sel.pp("query"), sel.pp("key"), sel.pp("value")], h, h, precision)?,
            attn_out: linear(&[att.pp("output").pp("dense")], h, h, precision)?,
            attn_norm: Norm::new(att.pp("output").pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            inter: linear(&[vb.pp("intermediate").pp("dense")], h, cfg.intermediate_size, precision)?,
            out: linear(&[vb.pp("output").pp("dense")], cfg.intermediate_size, h, precision)?,
            out_norm: Norm::new(vb.pp("output").pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
            activation,
        })
    }

    /// One encoder layer over `work.x`, `(batch·seq) × hidden`, in place; `interrupt`
    /// runs between its four big steps (the Q/K/V projection, attention, the FFN's
    /// expansion, its projection), so a cancel never waits for a whole layer.
    fn forward(&self, work: &mut Work, lens: &[usize], seq: usize, interrupt: &mut dyn FnMut()) -> CResult<()> {
        let m = lens.len() * seq;
        let Work { x, qkv, ctx, attn, inter, scratch } = work;
        self.qkv.forward(x, m, Epilogue::Bias, None, qkv, scratch)?;
        interrupt();
        let att = Attention { qkv, batch: lens.len(), seq, lens, heads: self.heads, head_dim: self.head_dim };
        ops::attention_into(&att, true, ctx);
        self.attn_out.forward(ctx, m, Epilogue::Bias, Some(x), attn, scratch)?;
        self.attn_norm.forward(attn);
        interrupt();
        match self.activation {
            Activation::GeluErf => self.inter.forward(attn, m, Epilogue::BiasGelu, None, inter, scratch)?,
            Activation::GeluTanh => {
                self.inter.forward(attn, m, Epilogue::Bias, None, inter, scratch)?;
                inter.par_iter_mut().for_each(|x| *x = gelu_tanh(*x));
            }
        }
        interrupt();
        // The layer's input is no longer needed: its output takes its place.
        self.out.forward(inter, m, Epilogue::Bias, Some(attn), x, scratch)?;
        self.out_norm.forward(x);
        Ok(())
    }
}

/// The buffers of one forward pass, reused by every layer (so its memory is allocated
/// and faulted in once, not 24 times).
#[derive(Default)]
struct Work {
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    attn: Vec<f32>,
    inter: Vec<f32>,
    /// A dense layer's input rounded to bf16.
    scratch: Vec<u32>,
}

/// GELU's tanh approximation, as `gelu_new` and `gelu_pytorch_tanh` define it.
fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + ((2.0 / std::f32::consts::PI).sqrt() * (x + 0.044_715 * x * x * x)).tanh())
}

pub struct Encoder {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    hidden: usize,
}

impl Encoder {
    pub fn new(cfg: &EncoderConfig, activation: Activation, precision: Precision, vb: VarBuilder) -> CResult<Self> {
        // Checkpoints saved from a task model carry a "roberta." prefix.
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") {
            vb
        } else if vb.contains_tensor("roberta.embeddings.word_embeddings.weight") {
            vb.pp("roberta")
        } else {
            vb
        };
        let embeddings = Embeddings::new(cfg, vb.pp("embeddings"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::new(cfg, activation, precision, vb.pp(format!("encoder.layer.{i}"))))
            .collect::<CResult<Vec<_>>>()?;
        Ok(Encoder { embeddings, layers, hidden: cfg.hidden_size })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// Runs the encoder over `lens.len()` sequences padded to `seq` tokens. `lens[i]` is
    /// the number of real tokens of sequence `i`. Returns the last hidden state,
    /// `(batch·seq) × hidden`, row-major; rows past a sequence's end hold no meaning.
    /// `interrupt` runs before each layer.
    pub fn forward(&self, ids: &[u32], lens: &[usize], seq: usize, interrupt: &mut dyn FnMut()) -> CResult<Vec<f32>> {
        debug_assert_eq!(ids.len(), lens.len() * seq);
        let mut work = Work { x: self.embeddings.forward(ids, seq)?, ..Work::default() };
        for layer in &self.layers {
            interrupt();
            layer.forward(&mut work, lens, seq, interrupt)?;
        }
        Ok(work.x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a CPU without AVX512F an f32 layer multiplies with candle and applies the
    /// epilogue in a second pass: the same numbers as the packed kernel's.
    #[test]
    fn candle_fallback_equals_the_packed_kernel() {
        let (m, k, n) = (7, 40, 70);
        let val = |i: usize, seed: usize| ((i * 7919 + seed * 104_729) % 1013) as f32 / 1013.0 - 0.5;
        let w: Vec<f32> = (0..k * n).map(|i| val(i, 1)).collect();
        let x: Vec<f32> = (0..m * k).map(|i| val(i, 2)).collect();
        let res: Vec<f32> = (0..m * n).map(|i| val(i, 3)).collect();
        let bias: Vec<f32> = (0..n).map(|i| val(i, 4)).collect();
        let packed =
            Dense { weights: Weights::Packed(Packed::pack(&w, k, n, Format::F32).unwrap()), bias: bias.clone(), k, n };
        let candle =
            Dense { weights: Weights::Candle(Tensor::from_slice(&w, (k, n), &Device::Cpu).unwrap()), bias, k, n };
        for (epilogue, residual) in
            [(Epilogue::Bias, None), (Epilogue::BiasGelu, None), (Epilogue::Bias, Some(&res[..]))]
        {
            let run = |d: &Dense| {
                let mut out = Vec::new();
                d.forward(&x, m, epilogue, residual, &mut out, &mut Vec::new()).unwrap();
                out
            };
            let (a, b) = (run(&packed), run(&candle));
            assert_eq!(a.len(), m * n);
            for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                assert!((p - q).abs() <= 1e-5, "{epilogue:?} residual={} at {i}: {p} vs {q}", residual.is_some());
            }
        }
    }
}
