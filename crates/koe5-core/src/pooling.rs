//! Turning the encoder's token vectors into one sentence vector, as the model's
//! `1_Pooling/config.json` and `modules.json` say.

use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Average over the tokens the attention mask keeps (KoE5, multilingual-e5).
    Mean,
    /// The first token's vector (`<s>`), as KURE-v1 and BGE-M3 use.
    Cls,
}

impl Pooling {
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
        }
    }

    /// Reads sentence-transformers' pooling flags. Exactly one supported mode may be on.
    pub fn from_config(value: &serde_json::Value, path: &Path) -> Result<Pooling> {
        const MODES: [&str; 6] = [
            "pooling_mode_cls_token",
            "pooling_mode_mean_tokens",
            "pooling_mode_max_tokens",
            "pooling_mode_mean_sqrt_len_tokens",
            "pooling_mode_weightedmean_tokens",
            "pooling_mode_lasttoken",
        ];
        let on: Vec<&str> =
            MODES.iter().copied().filter(|m| value.get(*m).and_then(|v| v.as_bool()).unwrap_or(false)).collect();
        match on.as_slice() {
            ["pooling_mode_cls_token"] => Ok(Pooling::Cls),
            ["pooling_mode_mean_tokens"] => Ok(Pooling::Mean),
            [] => Err(Error::config(path, "no pooling mode is enabled")),
            [one] => Err(Error::new(
                ErrorKind::Unsupported,
                format!("unsupported pooling mode \"{one}\" in \"{}\"", path.display()),
            )
            .with_detail("koe5 supports \"pooling_mode_mean_tokens\" and \"pooling_mode_cls_token\".")),
            many => Err(Error::new(
                ErrorKind::Unsupported,
                format!("unsupported combination of pooling modes {} in \"{}\"", many.join(", "), path.display()),
            )
            .with_detail("koe5 supports exactly one pooling mode per model.")),
        }
    }

    /// Pools one sequence. `hidden` is `len × dim`, row-major, holding only the
    /// sequence's real tokens (padding already cut off), so mean pooling over it is
    /// mean pooling over the attention mask.
    pub fn pool(self, hidden: &[f32], len: usize, dim: usize) -> Vec<f32> {
        debug_assert_eq!(hidden.len(), len * dim);
        match self {
            Pooling::Cls => hidden[..dim].to_vec(),
            Pooling::Mean => {
                let mut acc = vec![0f32; dim];
                for row in hidden.chunks_exact(dim) {
                    for (a, x) in acc.iter_mut().zip(row) {
                        *a += *x;
                    }
                }
                let n = (len as f32).max(1e-9);
                acc.iter_mut().for_each(|a| *a /= n);
                acc
            }
        }
    }
}

/// L2 normalisation as torch's `F.normalize` does it (norm clamped at 1e-12).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mean_pooling_averages_rows() {
        let h = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(Pooling::Mean.pool(&h, 3, 2), vec![3.0, 4.0]);
        assert_eq!(Pooling::Cls.pool(&h, 3, 2), vec![1.0, 2.0]);
    }

    #[test]
    fn normalize_gives_unit_length_and_keeps_zero() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-7 && (v[1] - 0.8).abs() < 1e-7);
        let mut z = vec![0.0, 0.0];
        normalize(&mut z);
        assert_eq!(z, vec![0.0, 0.0]);
    }

    #[test]
    fn pooling_config_modes() {
        let p = Path::new("1_Pooling/config.json");
        assert_eq!(Pooling::from_config(&json!({"pooling_mode_mean_tokens": true}), p).unwrap(), Pooling::Mean);
        assert_eq!(Pooling::from_config(&json!({"pooling_mode_cls_token": true}), p).unwrap(), Pooling::Cls);
        let e = Pooling::from_config(&json!({"pooling_mode_max_tokens": true}), p).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(e.message.contains("pooling_mode_max_tokens"), "{}", e.message);
        let e = Pooling::from_config(&json!({"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true}), p)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        let e = Pooling::from_config(&json!({}), p).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidConfig);
    }
}
