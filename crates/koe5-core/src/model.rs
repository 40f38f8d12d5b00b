//! The XLM-RoBERTa encoder. Weights are read through candle's `VarBuilder`, with
//! names that mirror Hugging Face's module tree (`embeddings`,
//! `encoder.layer.N.attention.self`, …), i.e. the safetensors keys; the forward pass is
//! koe5's own, on plain f32 buffers: packed dense layers with fused epilogues,
//! attention and LayerNorm ([`kernels`]). It returns the last hidden state; pooling is
//! the caller's job. Between steps it calls the caller's interrupt hook,
//! which is how PostgreSQL's cancel and statement_timeout reach a long batch.

use candle_core::{Storage, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::config::{Activation, Architecture, EncoderConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::kernels::{self, Attention, Epilogue, Packed, Scratch};
use crate::precision::Precision;

type CResult<T> = candle_core::Result<T>;

/// Whether a checkpoint tensor is a dense layer's weight, which the encoder keeps
/// transposed (the weights reader transposes it as it reads).
pub fn stored_transposed(name: &str) -> bool {
    [".query.weight", ".key.weight", ".value.weight", ".dense.weight"].iter().any(|s| name.ends_with(s))
}

/// A dense layer, `x · W + b`, with `W` (`k × n`) packed for [`kernels::matmul`]; or,
/// in f32 on a CPU without AVX512F, kept row-major for the gemm crate (candle's matmul
/// engine, with AVX2 and NEON kernels), the epilogue then applied in a second pass.
struct Dense {
    weights: Weights,
    bias: Vec<f32>,
}

enum Weights {
    Packed(Packed),
    /// `k × n`, row-major.
    Gemm {
        w: Vec<f32>,
        k: usize,
        n: usize,
    },
}

impl Dense {
    /// `w` is `k × n` row-major (transposed already).
    fn new(w: &[f32], bias: Vec<f32>, k: usize, n: usize, precision: Precision) -> CResult<Dense> {
        let oom = || candle_core::Error::Msg(format!("out of memory for a {k}×{n} weight ({precision:?})"));
        let weights = if precision == Precision::F32 && !kernels::has_fast_path(Precision::F32) {
            let mut v = Vec::new();
            v.try_reserve_exact(w.len()).map_err(|_| oom())?;
            v.extend_from_slice(w);
            Weights::Gemm { w: v, k, n }
        } else {
            Weights::Packed(Packed::pack(w, k, n, precision).ok_or_else(oom)?)
        };
        Ok(Dense { weights, bias })
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
        scratch: &mut Scratch,
    ) -> CResult<()> {
        match &self.weights {
            Weights::Packed(p) => kernels::matmul(x, m, p, &self.bias, epilogue, residual, true, out, scratch),
            &Weights::Gemm { ref w, k, n } => {
                assert_eq!(x.len(), m * k);
                out.clear();
                out.reserve(m * n);
                if m > 0 {
                    // SAFETY: x is m × k, w is k × n, out has room for m × n, all
                    // row-major; gemm writes every cell (read_dst = false).
                    unsafe {
                        gemm::gemm(
                            m,
                            n,
                            k,
                            out.as_mut_ptr(),
                            1,
                            n as isize,
                            false,
                            x.as_ptr(),
                            1,
                            k as isize,
                            w.as_ptr(),
                            1,
                            n as isize,
                            0.0f32,
                            1.0f32,
                            false,
                            false,
                            false,
                            gemm::Parallelism::Rayon(rayon::current_num_threads()),
                        );
                        out.set_len(m * n);
                    }
                }
                kernels::epilogue(out, n, &self.bias, epilogue, residual);
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
        kernels::layer_norm(x, &self.gamma, &self.beta, self.eps, true)
    }
}

struct Embeddings {
    /// `vocab × hidden` and `positions × hidden`, kept as read (rows are gathered).
    word: Tensor,
    position: Tensor,
    /// Row 0 of the token-type table: every input is type 0 (the XLM-R tokenizer
    /// gives no token types, and BERT then uses zeros).
    token_type0: Vec<f32>,
    norm: Norm,
    pad_id: u32,
    architecture: Architecture,
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
        Ok(Embeddings {
            word,
            position,
            token_type0,
            norm,
            pad_id: cfg.pad_token_id,
            architecture: cfg.architecture(),
            hidden: h,
        })
    }

    /// `ids` holds sequences back to back (`lens`); the embeddings go to `x`.
    fn forward(&self, ids: &[u32], lens: &[usize], x: &mut Vec<f32>) -> CResult<()> {
        // XLM-R: Hugging Face numbers positions by counting non-pad ids, starting at
        // pad + 1; a pad id (a literal "<pad>" in the text) gets position pad.
        // BERT: every token's position is its index, from 0.
        let mut positions = Vec::with_capacity(ids.len());
        let mut rest = ids;
        for &len in lens {
            let (seq, tail) = rest.split_at(len);
            rest = tail;
            match self.architecture {
                Architecture::Bert => positions.extend(0..len as u32),
                Architecture::XlmRoberta => {
                    let mut count = 0u32;
                    for &id in seq {
                        if id == self.pad_id {
                            positions.push(self.pad_id);
                        } else {
                            count += 1;
                            positions.push(self.pad_id + count);
                        }
                    }
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
        x.clear();
        x.resize(ids.len() * h, 0.0);
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
        self.norm.forward(x);
        Ok(())
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

    /// One encoder layer over `work.x` (`rows × hidden`, the sequences of `lens` back to
    /// back), in place; `interrupt` runs between its four big steps (the Q/K/V
    /// projection, attention, the FFN's expansion, its projection), so a cancel never
    /// waits for a whole layer.
    fn forward(&self, work: &mut Work, lens: &[usize], interrupt: &mut dyn FnMut()) -> CResult<()> {
        let m = lens.iter().sum();
        let Work { x, qkv, ctx, attn, inter, scratch } = work;
        self.qkv.forward(x, m, Epilogue::Bias, None, qkv, scratch)?;
        interrupt();
        let att = Attention { qkv, lens, heads: self.heads, head_dim: self.head_dim };
        kernels::attention(&att, true, ctx);
        self.attn_out.forward(ctx, m, Epilogue::Bias, Some(x), attn, scratch)?;
        self.attn_norm.forward(attn);
        interrupt();
        match self.activation {
            Activation::GeluErf => self.inter.forward(attn, m, Epilogue::BiasGelu, None, inter, scratch)?,
            Activation::GeluTanh => {
                self.inter.forward(attn, m, Epilogue::Bias, None, inter, scratch)?;
                inter.par_iter_mut().for_each(|x| *x = kernels::gelu_tanh(*x));
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
    /// A dense layer's input rounded to bf16 or quantised to int8.
    scratch: Scratch,
}

impl Work {
    /// Reserves every buffer for `rows` rows up front, fallibly: a batch too large for
    /// the memory there is is an error, never an abort (the kernels' own `reserve`
    /// calls then find the room already there).
    fn for_rows(rows: usize, hidden: usize, inter: usize, precision: Precision) -> Option<Work> {
        fn buf<T>(len: usize) -> Option<Vec<T>> {
            let mut v = Vec::new();
            v.try_reserve_exact(len).ok()?;
            Some(v)
        }
        Some(Work {
            x: buf(rows * hidden)?,
            qkv: buf(rows * 3 * hidden)?,
            ctx: buf(rows * hidden)?,
            attn: buf(rows * hidden)?,
            inter: buf(rows * inter)?,
            scratch: Scratch::for_rows(rows, inter.max(hidden), &[precision])?,
        })
    }
}

pub struct Encoder {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    hidden: usize,
    intermediate: usize,
    precision: Precision,
}

impl Encoder {
    pub fn new(cfg: &EncoderConfig, activation: Activation, precision: Precision, vb: VarBuilder) -> CResult<Self> {
        // Checkpoints saved from a task model carry a "roberta." or "bert." prefix.
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") {
            vb
        } else if let Some(prefix) = ["roberta", "bert"]
            .into_iter()
            .find(|p| vb.contains_tensor(&format!("{p}.embeddings.word_embeddings.weight")))
        {
            vb.pp(prefix)
        } else {
            vb
        };
        let embeddings = Embeddings::new(cfg, vb.pp("embeddings"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::new(cfg, activation, precision, vb.pp(format!("encoder.layer.{i}"))))
            .collect::<CResult<Vec<_>>>()?;
        Ok(Encoder { embeddings, layers, hidden: cfg.hidden_size, intermediate: cfg.intermediate_size, precision })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// Runs the encoder over `lens.len()` sequences given back to back in `ids` (no
    /// padding: attention keeps each sequence to itself, and every other step works row
    /// by row, so a sequence's result does not depend on the others). Returns the last
    /// hidden state, `ids.len() × hidden`, row-major, in the same order. `interrupt`
    /// runs before each layer and inside it.
    pub fn forward(&self, ids: &[u32], lens: &[usize], interrupt: &mut dyn FnMut()) -> Result<Vec<f32>> {
        if ids.len() != lens.iter().sum::<usize>() || lens.contains(&0) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{} token ids do not make sequences of lengths {lens:?}", ids.len()),
            )
            .with_detail("Every sequence holds at least one token."));
        }
        let rows = ids.len();
        let mut work = Work::for_rows(rows, self.hidden, self.intermediate, self.precision).ok_or_else(|| {
            Error::new(ErrorKind::OutOfMemory, format!("out of memory for a forward pass over {rows} tokens"))
        })?;
        self.embeddings.forward(ids, lens, &mut work.x).map_err(Error::inference)?;
        for layer in &self.layers {
            interrupt();
            layer.forward(&mut work, lens, interrupt).map_err(Error::inference)?;
        }
        Ok(work.x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a CPU without AVX512F an f32 layer multiplies with gemm and applies the
    /// epilogue in a second pass: the same numbers as the packed kernel's.
    #[test]
    fn gemm_fallback_equals_the_packed_kernel() {
        let (m, k, n) = (7, 40, 70);
        let val = |i: usize, seed: usize| ((i * 7919 + seed * 104_729) % 1013) as f32 / 1013.0 - 0.5;
        let w: Vec<f32> = (0..k * n).map(|i| val(i, 1)).collect();
        let x: Vec<f32> = (0..m * k).map(|i| val(i, 2)).collect();
        let res: Vec<f32> = (0..m * n).map(|i| val(i, 3)).collect();
        let bias: Vec<f32> = (0..n).map(|i| val(i, 4)).collect();
        let packed =
            Dense { weights: Weights::Packed(Packed::pack(&w, k, n, Precision::F32).unwrap()), bias: bias.clone() };
        let gemm = Dense { weights: Weights::Gemm { w: w.clone(), k, n }, bias };
        for (epilogue, residual) in
            [(Epilogue::Bias, None), (Epilogue::BiasGelu, None), (Epilogue::Bias, Some(&res[..]))]
        {
            let run = |d: &Dense| {
                let mut out = Vec::new();
                d.forward(&x, m, epilogue, residual, &mut out, &mut Scratch::default()).unwrap();
                out
            };
            let (a, b) = (run(&packed), run(&gemm));
            assert_eq!(a.len(), m * n);
            for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                assert!((p - q).abs() <= 1e-5, "{epilogue:?} residual={} at {i}: {p} vs {q}", residual.is_some());
            }
        }
    }
}

/// The encoder at shapes the 32-wide test fixture does not reach (heads of 64, an
/// inner dimension the kernels split into several passes, several panels per matrix),
/// against a straightforward f64 implementation of XLM-R's forward pass.
#[cfg(test)]
mod wide_tests {
    use std::collections::HashMap;

    use candle_core::{DType, Device};

    use super::*;
    use crate::kernels::exact_erf;
    use crate::test_util::values;

    const H: usize = 128;
    const HEADS: usize = 2;
    const INTER: usize = 1100;
    const LAYERS: usize = 2;
    const VOCAB: usize = 300;
    const POS: usize = 80;

    /// Random weights under Hugging Face's names; dense weights `in × out`, as the
    /// weights reader leaves them.
    fn weights() -> HashMap<String, Vec<f32>> {
        let mut w = HashMap::new();
        let mut seed = 0;
        let mut put = |name: String, len: usize, scale: f32, offset: f32| {
            seed += 1;
            w.insert(name, values(len, seed).into_iter().map(|v| v * scale + offset).collect::<Vec<f32>>());
        };
        put("embeddings.word_embeddings.weight".into(), VOCAB * H, 1.0, 0.0);
        put("embeddings.position_embeddings.weight".into(), POS * H, 0.5, 0.0);
        put("embeddings.token_type_embeddings.weight".into(), H, 0.1, 0.0);
        put("embeddings.LayerNorm.weight".into(), H, 0.2, 1.0);
        put("embeddings.LayerNorm.bias".into(), H, 0.1, 0.0);
        for l in 0..LAYERS {
            let p = format!("encoder.layer.{l}.");
            for m in ["query", "key", "value"] {
                put(format!("{p}attention.self.{m}.weight"), H * H, 0.15, 0.0);
                put(format!("{p}attention.self.{m}.bias"), H, 0.1, 0.0);
            }
            put(format!("{p}attention.output.dense.weight"), H * H, 0.1, 0.0);
            put(format!("{p}attention.output.dense.bias"), H, 0.1, 0.0);
            put(format!("{p}intermediate.dense.weight"), H * INTER, 0.1, 0.0);
            put(format!("{p}intermediate.dense.bias"), INTER, 0.1, 0.0);
            put(format!("{p}output.dense.weight"), INTER * H, 0.05, 0.0);
            put(format!("{p}output.dense.bias"), H, 0.1, 0.0);
            for n in ["attention.output.LayerNorm", "output.LayerNorm"] {
                put(format!("{p}{n}.weight"), H, 0.2, 1.0);
                put(format!("{p}{n}.bias"), H, 0.1, 0.0);
            }
        }
        w
    }

    fn shape(name: &str) -> Vec<usize> {
        let dense = |i, o| vec![i, o];
        match name {
            n if n.contains("word_embeddings") => vec![VOCAB, H],
            n if n.contains("position_embeddings") => vec![POS, H],
            n if n.contains("token_type") => vec![1, H],
            n if n.ends_with("intermediate.dense.weight") => dense(H, INTER),
            n if n.ends_with("output.dense.weight") && !n.contains("attention") => dense(INTER, H),
            n if n.ends_with(".weight") && stored_transposed(n) => dense(H, H),
            n if n.contains("intermediate.dense.bias") => vec![INTER],
            _ => vec![H],
        }
    }

    fn norm(x: &mut [f64], g: &[f32], b: &[f32]) {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        for (i, v) in x.iter_mut().enumerate() {
            *v = (*v - mean) / (var + 1e-5).sqrt() * g[i] as f64 + b[i] as f64;
        }
    }

    fn dense(x: &[f64], w: &[f32], b: &[f32], n: usize) -> Vec<f64> {
        (0..n).map(|j| b[j] as f64 + x.iter().enumerate().map(|(k, &v)| v * w[k * n + j] as f64).sum::<f64>()).collect()
    }

    /// One sequence of real tokens, from its ids, in f64.
    fn reference(w: &HashMap<String, Vec<f32>>, ids: &[u32]) -> Vec<Vec<f64>> {
        let g = |n: &str| &w[n][..];
        let d = H / HEADS;
        let mut x: Vec<Vec<f64>> = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                let pos = i + 2; // pad id 1: positions start at 2
                let mut row: Vec<f64> = (0..H)
                    .map(|c| {
                        (g("embeddings.word_embeddings.weight")[id as usize * H + c]
                            + g("embeddings.position_embeddings.weight")[pos * H + c]
                            + g("embeddings.token_type_embeddings.weight")[c]) as f64
                    })
                    .collect();
                norm(&mut row, g("embeddings.LayerNorm.weight"), g("embeddings.LayerNorm.bias"));
                row
            })
            .collect();
        for l in 0..LAYERS {
            let p = |s: &str| format!("encoder.layer.{l}.{s}");
            let proj = |m: &str| -> Vec<Vec<f64>> {
                x.iter()
                    .map(|r| {
                        dense(
                            r,
                            g(&p(&format!("attention.self.{m}.weight"))),
                            g(&p(&format!("attention.self.{m}.bias"))),
                            H,
                        )
                    })
                    .collect()
            };
            let (q, k, v) = (proj("query"), proj("key"), proj("value"));
            let n = x.len();
            let mut ctx = vec![vec![0f64; H]; n];
            for h in 0..HEADS {
                for i in 0..n {
                    let s: Vec<f64> = (0..n)
                        .map(|j| (0..d).map(|t| q[i][h * d + t] * k[j][h * d + t]).sum::<f64>() / (d as f64).sqrt())
                        .collect();
                    let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for t in 0..d {
                        ctx[i][h * d + t] = (0..n).map(|j| e[j] * v[j][h * d + t]).sum::<f64>() / sum;
                    }
                }
            }
            for i in 0..n {
                let mut a =
                    dense(&ctx[i], g(&p("attention.output.dense.weight")), g(&p("attention.output.dense.bias")), H);
                a.iter_mut().zip(&x[i]).for_each(|(a, r)| *a += r);
                norm(&mut a, g(&p("attention.output.LayerNorm.weight")), g(&p("attention.output.LayerNorm.bias")));
                let mut f = dense(&a, g(&p("intermediate.dense.weight")), g(&p("intermediate.dense.bias")), INTER);
                f.iter_mut().for_each(|v| *v = 0.5 * *v * (1.0 + exact_erf(*v / std::f64::consts::SQRT_2)));
                let mut o = dense(&f, g(&p("output.dense.weight")), g(&p("output.dense.bias")), H);
                o.iter_mut().zip(&a).for_each(|(o, r)| *o += r);
                norm(&mut o, g(&p("output.LayerNorm.weight")), g(&p("output.LayerNorm.bias")));
                x[i] = o;
            }
        }
        x
    }

    #[test]
    fn wide_encoder_matches_an_f64_reference_in_both_precisions() {
        let w = weights();
        let tensors: HashMap<String, Tensor> =
            w.iter().map(|(n, v)| (n.clone(), Tensor::from_slice(v, shape(n), &Device::Cpu).unwrap())).collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let cfg: EncoderConfig = serde_json::from_value(serde_json::json!({
            "model_type": "xlm-roberta", "vocab_size": VOCAB, "hidden_size": H, "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS, "intermediate_size": INTER, "hidden_act": "gelu",
            "max_position_embeddings": POS, "type_vocab_size": 1, "pad_token_id": 1, "layer_norm_eps": 1e-5,
        }))
        .unwrap();
        // Three sequences of 70, 23 and 9 tokens, back to back.
        let lens = [70usize, 23, 9];
        let seqs: Vec<Vec<u32>> = lens
            .iter()
            .enumerate()
            .map(|(s, &len)| (0..len).map(|i| ((i * 37 + s * 101) % (VOCAB - 3) + 3) as u32).collect())
            .collect();
        let ids = seqs.concat();
        for (precision, tol) in [(Precision::F32, 2e-4), (Precision::Bf16, 5e-2), (Precision::Int8, 1e-1)] {
            let enc = Encoder::new(&cfg, Activation::GeluErf, precision, vb.clone()).unwrap();
            let got = enc.forward(&ids, &lens, &mut || {}).unwrap();
            let mut worst = 0f64;
            let mut start = 0;
            for seq in &seqs {
                let want = reference(&w, seq);
                for (i, row) in want.iter().enumerate() {
                    for (c, &e) in row.iter().enumerate() {
                        worst = worst.max((got[(start + i) * H + c] as f64 - e).abs());
                    }
                }
                start += seq.len();
            }
            // Each sequence alone gives the same numbers, to the bit, on the packed kernels.
            if kernels::has_fast_path(precision) {
                let mut start = 0;
                for seq in &seqs {
                    let alone = enc.forward(seq, &[seq.len()], &mut || {}).unwrap();
                    assert!(
                        alone == got[start * H..(start + seq.len()) * H],
                        "{precision:?}: batching changed a vector"
                    );
                    start += seq.len();
                }
            }
            println!("{precision:?}: max |difference| to f64 {worst:e}");
            // LayerNorm outputs of size ~1: f32 rounding through two layers stays near
            // 1e-5; bf16 rounds every dense layer's operands to 8 bits (2^-9 relative);
            // int8 to 255 steps of each row's range and 127 of each column's.
            assert!(worst < tol, "{precision:?}: {worst}");
        }
        // Bad arguments are errors, not panics.
        let enc = Encoder::new(&cfg, Activation::GeluErf, Precision::F32, vb).unwrap();
        assert_eq!(enc.forward(&ids[1..], &lens, &mut || {}).unwrap_err().kind, ErrorKind::InvalidInput);
        assert_eq!(enc.forward(&[VOCAB as u32 + 5], &[1], &mut || {}).unwrap_err().kind, ErrorKind::Inference);
        assert_eq!(enc.forward(&vec![7; POS], &[POS], &mut || {}).unwrap_err().kind, ErrorKind::Inference);
        assert_eq!(enc.forward(&ids[..70], &[70, 0], &mut || {}).unwrap_err().kind, ErrorKind::InvalidInput);
        assert!(enc.forward(&[], &[], &mut || {}).unwrap().is_empty());
    }
}
