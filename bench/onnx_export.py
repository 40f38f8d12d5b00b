#!/usr/bin/env python3
"""Exports a sentence-transformers XLM-R model's encoder to ONNX for the ONNX Runtime
baselines of bench/run.py: OUT/model.onnx (fp32, weights in OUT/model.onnx.data) and
OUT/model-int8.onnx (dynamic int8 quantisation of the dense layers' weights, ONNX
Runtime's own `quantize_dynamic`). The graph returns the last hidden state; pooling
and normalisation happen in numpy, as sentence-transformers does them.

  python bench/onnx_export.py MODEL_DIR OUT_DIR

Does nothing for a file that already exists. Never committed (2.2 GB + 0.6 GB).
"""

import sys
from pathlib import Path

import torch
from transformers import AutoModel


def export(model_dir: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    fp32 = out / "model.onnx"
    if not fp32.exists():
        model = AutoModel.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
        ids = torch.ones(2, 16, dtype=torch.long)
        mask = torch.ones(2, 16, dtype=torch.long)
        tmp = out / "export"
        tmp.mkdir(exist_ok=True)
        with torch.no_grad():
            torch.onnx.export(
                model,
                (ids, mask),
                str(tmp / "model.onnx"),
                input_names=["input_ids", "attention_mask"],
                output_names=["last_hidden_state"],
                dynamic_axes={n: {0: "batch", 1: "seq"} for n in ["input_ids", "attention_mask", "last_hidden_state"]},
                opset_version=17,
                dynamo=False,
            )
        import onnx

        # One external data file instead of one per tensor.
        m = onnx.load(str(tmp / "model.onnx"))
        onnx.save(m, str(fp32), save_as_external_data=True, all_tensors_to_one_file=True,
                  location="model.onnx.data")
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    int8 = out / "model-int8.onnx"
    if not int8.exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, use_external_data_format=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    export(Path(sys.argv[1]), Path(sys.argv[2]))
    print(sys.argv[2])
