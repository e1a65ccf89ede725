"""Which model directories make_golden --from-model gives mlx-vlm paths, and how they run
(checkpoints.vlm_route_for): a vision_config mlx-vlm accepts is needed; float32 ones run on
mlx-lm's tensors, quantized ones as mlx-vlm loads them, bf16 ones widened when that fits.
Run with `make test-tools`."""

from __future__ import annotations

import json
import sys
import tempfile
import unittest
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
from golden.checkpoints import vlm_route_for  # noqa: E402

DENSE = json.loads((TOOLS / "configs" / "tiny-dense.json").read_text())
F32 = ["mlx.core.float32"]


def nested(rope: dict | None = None) -> dict:
    """tiny-dense as a published checkpoint nests it, with a vision_config."""
    text = {k: v for k, v in DENSE.items() if k not in ("rope_theta", "partial_rotary_factor")}
    text["model_type"] = "qwen3_5_text"
    text["rope_parameters"] = rope or {"rope_type": "default", "rope_theta": 1000.0, "partial_rotary_factor": 0.5,
                                       "mrope_section": [6, 5, 5], "mrope_interleaved": True}
    return {"model_type": "qwen3_5", "text_config": text, "vision_config": {"depth": 1, "spatial_merge_size": 2}}


class VlmWeightsFor(unittest.TestCase):
    def decide(self, config: dict, dtypes=F32, parameters=1000):
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            (d / "config.json").write_text(json.dumps(config))
            return vlm_route_for(d, config, dtypes, parameters)

    def test_float32_multimodal_directory_runs_on_mlx_lm_tensors(self):
        self.assertEqual(self.decide(nested()), "runtime")

    def test_text_only_directory_does_not(self):
        self.assertIsNone(self.decide(DENSE))

    def test_quantized_directory_runs_natively(self):
        self.assertEqual(self.decide(nested() | {"quantization": {"group_size": 64, "bits": 4}},
                                     ["mlx.core.bfloat16", "mlx.core.uint32"]), "native")

    def test_bf16_directory_runs_widened_when_it_fits(self):
        bf16 = ["mlx.core.bfloat16", "mlx.core.float32"]
        self.assertEqual(self.decide(nested(), bf16), "widened")
        self.assertIsNone(self.decide(nested(), bf16, parameters=10 ** 13))

    def test_config_mlx_vlm_refuses_does_not(self):
        # transformers' form without an mrope_section: mlx-vlm's TextConfig raises.
        self.assertIsNone(self.decide(nested({"rope_type": "default", "rope_theta": 1000.0,
                                              "partial_rotary_factor": 0.5})))


if __name__ == "__main__":
    unittest.main()
