//! The XLM-RoBERTa encoder, built on candle. Structs mirror Hugging Face's module
//! tree (`embeddings`, `encoder.layer.N.attention.self`, …) so their names are the
//! safetensors keys. The forward pass returns the last hidden state; pooling is the
//! caller's job. Between layers it calls the caller's interrupt hook, which is how
//! PostgreSQL's cancel and statement_timeout reach a long batch.

use candle_core::{DType, Device, Module, Storage, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};

use crate::config::{Activation, EncoderConfig};
use crate::kernels::{self, Epilogue, PackedBf16};
use crate::Precision;

type CResult<T> = candle_core::Result<T>;

/// Whether a checkpoint tensor is a dense layer's weight, which the encoder keeps
/// transposed (the weights reader transposes it as it reads).
pub fn stored_transposed(name: &str) -> bool {
    [".query.weight", ".key.weight", ".value.weight", ".dense.weight"].iter().any(|s| name.ends_with(s))
}

/// A dense layer whose weight is stored transposed (`in × out`): contiguous f32, so
/// every forward pass multiplies by it as it lies in memory, or packed bf16 for
/// [`kernels::matmul`].
enum Dense {
    F32 { weight_t: Tensor, bias: Tensor },
    Bf16 { packed: PackedBf16, bias: Vec<f32> },
}

impl Dense {
    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        self.forward_with(x, Epilogue::Bias)
    }

    /// `x · W + b`, then the epilogue's activation (bf16 weights only: the caller
    /// applies it to f32 layers, see `Layer::forward`).
    fn forward_with(&self, x: &Tensor, epilogue: Epilogue) -> CResult<Tensor> {
        match self {
            Dense::F32 { weight_t, bias } => x.matmul(weight_t)?.broadcast_add(bias),
            Dense::Bf16 { packed, bias } => {
                let rows = x.dim(0)?;
                // The AVX512-BF16 kernel where the CPU has it (matmul checks).
                let out = with_f32_slice(x, |xs| kernels::matmul(xs, rows, packed, bias, epilogue, true))?;
                Tensor::from_vec(out, (rows, packed.n), x.device())
            }
        }
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

fn linear(vb: VarBuilder, inp: usize, out: usize, precision: Precision) -> CResult<Dense> {
    // Read transposed already: see `stored_transposed`.
    let weight_t = vb.get((inp, out), "weight")?;
    let bias = vb.get(out, "bias")?;
    Ok(match precision {
        Precision::F32 => Dense::F32 { weight_t, bias },
        Precision::Bf16 => {
            let packed = with_f32_slice(&weight_t, |w| PackedBf16::pack(w, inp, out))?
                .ok_or_else(|| candle_core::Error::Msg(format!("out of memory packing a {inp}×{out} weight in bf16")))?;
            Dense::Bf16 { packed, bias: bias.to_vec1()? }
        }
    })
}

fn layer_norm(vb: VarBuilder, size: usize, eps: f64) -> CResult<LayerNorm> {
    candle_nn::layer_norm(size, eps, vb)
}

struct Embeddings {
    word: Embedding,
    position: Embedding,
    /// Row 0 of the token-type table: XLM-R inputs are all type 0.
    token_type0: Tensor,
    norm: LayerNorm,
    pad_id: u32,
}

impl Embeddings {
    fn new(cfg: &EncoderConfig, vb: VarBuilder) -> CResult<Self> {
        let h = cfg.hidden_size;
        let word = candle_nn::embedding(cfg.vocab_size, h, vb.pp("word_embeddings"))?;
        let position = candle_nn::embedding(cfg.max_position_embeddings, h, vb.pp("position_embeddings"))?;
        let token_type = vb.pp("token_type_embeddings").get((cfg.type_vocab_size, h), "weight")?;
        let norm = layer_norm(vb.pp("LayerNorm"), h, cfg.layer_norm_eps)?;
        Ok(Embeddings { word, position, token_type0: token_type.get(0)?, norm, pad_id: cfg.pad_token_id })
    }

    /// `ids` is `batch × seq`, row-major, padded with the pad id.
    fn forward(&self, ids: &[u32], batch: usize, seq: usize, dev: &Device) -> CResult<Tensor> {
        // Hugging Face numbers positions by counting non-pad ids, starting at pad + 1;
        // every pad id (padding, or a literal "<pad>" in the text) gets position pad.
        // Counting in integers keeps ids above 256 exact in any float precision.
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
        let ids_t = Tensor::from_slice(ids, (batch * seq,), dev)?;
        let pos_t = Tensor::from_vec(positions, (batch * seq,), dev)?;
        let x = self.word.forward(&ids_t)?;
        let x = (x + self.position.forward(&pos_t)?)?;
        let x = x.broadcast_add(&self.token_type0)?;
        self.norm.forward(&x)
    }
}

struct Layer {
    query: Dense,
    key: Dense,
    value: Dense,
    attn_out: Dense,
    attn_norm: LayerNorm,
    inter: Dense,
    out: Dense,
    out_norm: LayerNorm,
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
            query: linear(sel.pp("query"), h, h, precision)?,
            key: linear(sel.pp("key"), h, h, precision)?,
            value: linear(sel.pp("value"), h, h, precision)?,
            attn_out: linear(att.pp("output").pp("dense"), h, h, precision)?,
            attn_norm: layer_norm(att.pp("output").pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            inter: linear(vb.pp("intermediate").pp("dense"), h, cfg.intermediate_size, precision)?,
            out: linear(vb.pp("output").pp("dense"), cfg.intermediate_size, h, precision)?,
            out_norm: layer_norm(vb.pp("output").pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
            activation,
        })
    }

    /// `x` is `(batch·seq) × hidden`; `mask` is `batch × 1 × 1 × seq`, 0 or -inf.
    /// One encoder layer; `interrupt` runs between its four big steps (the Q/K/V
    /// projections, attention, the FFN's expansion, its projection), so a cancel never
    /// waits for a whole layer.
    fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        batch: usize,
        seq: usize,
        interrupt: &mut dyn FnMut(),
    ) -> CResult<Tensor> {
        let split = |t: Tensor| -> CResult<Tensor> {
            t.reshape((batch, seq, self.heads, self.head_dim))?.transpose(1, 2)?.contiguous()
        };
        let q = split(self.query.forward(x)?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        interrupt();
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx =
            probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((batch * seq, self.heads * self.head_dim))?;
        let attn = self.attn_norm.forward(&(self.attn_out.forward(&ctx)? + x)?)?;
        interrupt();
        let inter = match (self.activation, &self.inter) {
            (Activation::GeluErf, Dense::Bf16 { .. }) => self.inter.forward_with(&attn, Epilogue::BiasGelu)?,
            (Activation::GeluErf, _) => self.inter.forward(&attn)?.gelu_erf()?,
            (Activation::GeluTanh, _) => self.inter.forward(&attn)?.gelu()?,
        };
        interrupt();
        self.out_norm.forward(&(self.out.forward(&inter)? + attn)?)
    }
}

pub struct Encoder {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    hidden: usize,
    device: Device,
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
        Ok(Encoder { embeddings, layers, hidden: cfg.hidden_size, device: vb.device().clone() })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// Runs the encoder over `batch` sequences padded to `seq` tokens. `lens[i]` is
    /// the number of real tokens of sequence `i`. Returns the last hidden state,
    /// `(batch·seq) × hidden`, row-major. `interrupt` runs before each layer.
    pub fn forward(&self, ids: &[u32], lens: &[usize], seq: usize, interrupt: &mut dyn FnMut()) -> CResult<Vec<f32>> {
        let batch = lens.len();
        debug_assert_eq!(ids.len(), batch * seq);
        let mut mask = Vec::with_capacity(batch * seq);
        for &len in lens {
            mask.extend((0..seq).map(|j| if j < len { 0f32 } else { f32::NEG_INFINITY }));
        }
        let mask = Tensor::from_vec(mask, (batch, 1, 1, seq), &self.device)?;
        let mut x = self.embeddings.forward(ids, batch, seq, &self.device)?;
        for layer in &self.layers {
            interrupt();
            x = layer.forward(&x, &mask, batch, seq, interrupt)?;
        }
        x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
    }
}
