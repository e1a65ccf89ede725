"""Checkpoints made the way real ones are: the published layout written shard by shard
(golden/published.py) and mlx-vlm's own convert of it (--make-checkpoint mlx-q4|mlx-q8|mlx-bf16),
and what --from-model writes for them (--f32-twin, mlx-vlm routes). Run with `make test-tools`
(needs torch and transformers: make venv-torch)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import tempfile
import types
import unittest
from pathlib import Path

import h5py
import numpy as np

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
from golden.checkpoints import make_published, oracle_decision, twin_decision  # noqa: E402
from golden.published import write_published  # noqa: E402

TINY = TOOLS / "configs" / "checkpoints" / "tiny-published.json"


def wide_config(directory: Path) -> Path:
    """tiny-published at hidden 64: every projection's input is a multiple of the group size
    (64), so mlx-vlm's convert quantizes the text model, not only the 64-wide down_proj."""
    config = json.loads(TINY.read_text())
    config["text_config"].update(hidden_size=64, intermediate_size=128, head_dim=32,
                                 linear_key_head_dim=32, linear_value_head_dim=32)
    config["vision_config"]["out_hidden_size"] = 64
    path = directory / "wide.json"
    path.write_text(json.dumps(config))
    return path


def safetensors_header(path: Path) -> dict:
    raw = path.read_bytes()
    return json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])


def make(config: Path, kind: str, out: Path, *extra) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, str(TOOLS / "make_golden.py"), "--config", str(config),
                          "--make-checkpoint", kind, "--out", str(out), "--oracle", "off", *extra],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if run.returncode != 0:
        raise AssertionError(f"make_golden failed ({run.returncode}):\n{run.stderr}")
    return run


class StreamedPublishedLayout(unittest.TestCase):
    def test_same_layout_and_values_as_save_pretrained(self):
        from safetensors.torch import load_file
        with tempfile.TemporaryDirectory() as tmp:
            ours, theirs = Path(tmp) / "streamed", Path(tmp) / "saved"
            ours.mkdir(), theirs.mkdir()
            write_published(TINY, 1234, ours)
            make_published(types.SimpleNamespace(config=TINY, seed=1234), theirs)
            self.assertEqual(sorted(p.name for p in ours.iterdir()), sorted(p.name for p in theirs.iterdir()))
            for name in ("config.json", "generation_config.json"):
                self.assertEqual((ours / name).read_bytes(), (theirs / name).read_bytes(), name)
            a, b = safetensors_header(ours / "model.safetensors"), safetensors_header(theirs / "model.safetensors")
            self.assertEqual(list(a), list(b))   # names, order, dtypes, shapes
            self.assertEqual({k: (v["dtype"], v["shape"]) for k, v in a.items() if k != "__metadata__"},
                             {k: (v["dtype"], v["shape"]) for k, v in b.items() if k != "__metadata__"})
            ta, tb = load_file(ours / "model.safetensors"), load_file(theirs / "model.safetensors")
            for name in tb:
                if name.endswith("A_log"):   # transformers' own init there; ours drawn in its range
                    self.assertTrue(((ta[name] > np.log(0.01) - 1e-6) & (ta[name] < np.log(16) + 1e-6)).all())
                else:
                    self.assertTrue(bool((ta[name] == tb[name]).all()), name)

    def test_declared_bf16_keeps_the_published_float32_tensors(self):
        with tempfile.TemporaryDirectory() as tmp:
            config = json.loads(TINY.read_text())
            config["text_config"]["dtype"] = "bfloat16"
            path, out = Path(tmp) / "bf16.json", Path(tmp) / "out"
            path.write_text(json.dumps(config))
            out.mkdir()
            write_published(path, 1, out)
            dtypes = {k: v["dtype"] for k, v in safetensors_header(out / "model.safetensors").items()
                      if k != "__metadata__"}
            f32 = sorted(k for k, v in dtypes.items() if v == "F32")
            self.assertEqual(f32, ["model.language_model.layers.0.linear_attn.A_log",
                                   "model.language_model.layers.0.linear_attn.norm.weight"])
            self.assertEqual({v for k, v in dtypes.items() if k not in f32}, {"BF16"})

    def test_shards_and_index(self):
        from safetensors.torch import load_file
        with tempfile.TemporaryDirectory() as tmp:
            whole, sharded = Path(tmp) / "whole", Path(tmp) / "sharded"
            whole.mkdir(), sharded.mkdir()
            write_published(TINY, 7, whole)
            info = write_published(TINY, 7, sharded, shard_size="40KB")
            self.assertGreater(info["shards"], 1)
            index = json.loads((sharded / "model.safetensors.index.json").read_text())
            self.assertEqual(index["metadata"], {"total_parameters": info["parameters"], "total_size": info["bytes"]})
            merged = {}
            for shard in sorted(set(index["weight_map"].values())):
                tensors = load_file(sharded / shard)
                self.assertTrue(all(index["weight_map"][k] == shard for k in tensors))
                merged |= tensors
            reference = load_file(whole / "model.safetensors")
            self.assertEqual(sorted(merged), sorted(reference))
            for name, value in reference.items():   # the split does not change a draw
                self.assertTrue(bool((merged[name] == value).all()), name)


class MlxVlmConvertedCheckpoints(unittest.TestCase):
    def test_float32_scales_are_exact_and_bf16_keeps_the_twin(self):
        with tempfile.TemporaryDirectory() as tmp:
            config = wide_config(Path(tmp))
            for kind, bits in (("mlx-q4", 4), ("mlx-q8", 8)):
                out = Path(tmp) / kind
                make(config, kind, out, "--f32-twin", "on")
                cfg = json.loads((out / "config.json").read_text())
                self.assertEqual(cfg["quantization"], {"group_size": 64, "bits": bits, "mode": "affine"})
                with h5py.File(out / "parity.h5", "r") as f:
                    self.assertEqual(f.attrs["native_float32"], 1)
                    for sc in ("full_prefill", "prefix_decode"):
                        g = f[f"scenarios/{sc}"]
                        for item in ("logits", "hidden_states", "final_norm"):
                            # quantized_matmul on float32 scales = the dequantized float32 model
                            np.testing.assert_array_equal(g["mlx_lm/" + item][()], g["mlx_lm_f32/" + item][()])
            # auto: no twin for a float32 native run; mlx-vlm runs the quantized model natively
            out = Path(tmp) / "auto-q4"
            make(config, "mlx-q4", out)
            with h5py.File(out / "parity.h5", "r") as f:
                self.assertEqual(f.attrs["f32_twin"], "not written")
                self.assertEqual(json.loads(f.attrs["reference_paths_json"]), ["mlx_lm", "mlx_vlm"])
                self.assertIn("vision", f)
            out = Path(tmp) / "bf16"
            make(config, "mlx-bf16", out)
            with h5py.File(out / "parity.h5", "r") as f:
                self.assertEqual(f.attrs["native_float32"], 0)
                self.assertEqual(f.attrs["dtype"], "bfloat16")
                self.assertEqual(json.loads(f.attrs["reference_paths_json"]), ["mlx_lm", "mlx_lm_f32", "mlx_vlm"])
                # mlx-vlm ran the widened float32 weights: as close to the twin as the libraries are
                g = f["scenarios/full_prefill"]
                gap = np.abs(g["mlx_vlm/logits"][()][:, -1] - g["mlx_lm_f32/logits"][()][:, -1]).max()
                self.assertLess(gap, 1e-4)

    def test_twin_decision(self):
        self.assertEqual(twin_decision("auto", True, 10)[0], False)
        self.assertEqual(twin_decision("auto", False, 10)[0], True)
        self.assertEqual(twin_decision("auto", False, 10 ** 13)[0], False)   # 40 TB of float32
        self.assertEqual(twin_decision("on", True, 10)[0], True)
        self.assertEqual(twin_decision("off", False, 10)[0], False)

    def test_oracle_decision(self):
        """auto: on when it fits; off because it cannot fit is recorded as not applicable here,
        off by choice as applicable (the Swift side then reports a coverage gap)."""
        self.assertEqual(oracle_decision("auto", 10), ("on", None))
        mode, absent = oracle_decision("auto", 10 ** 12)
        self.assertEqual((mode, absent["applicable"]), ("off", False))
        self.assertIn("GB", absent["reason"])
        mode, absent = oracle_decision("off", 10)
        self.assertEqual((mode, absent["applicable"]), ("off", True))
        self.assertEqual(oracle_decision("on", 10 ** 12), ("on", None))


if __name__ == "__main__":
    unittest.main()
