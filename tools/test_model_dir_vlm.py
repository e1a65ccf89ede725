"""Which model directories make_golden --from-model gives mlx-vlm paths (checkpoints.vlm_weights_for):
float32, unquantized, with a vision_config mlx-vlm accepts; every other one gets mlx-lm paths
only. Run with `make test-tools`."""

from __future__ import annotations

import json
import sys
import tempfile
import unittest
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
from golden.checkpoints import vlm_weights_for  # noqa: E402

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
    def decide(self, config: dict, dtypes=F32):
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            (d / "config.json").write_text(json.dumps(config))
            return vlm_weights_for(d, config, dtypes, lambda: {"runtime": "tensors"})

    def test_float32_multimodal_directory_gets_vlm_paths(self):
        self.assertEqual(self.decide(nested()), {"runtime": "tensors"})

    def test_text_only_directory_does_not(self):
        self.assertIsNone(self.decide(DENSE))

    def test_quantized_or_bf16_directory_does_not(self):
        self.assertIsNone(self.decide(nested() | {"quantization": {"group_size": 64, "bits": 4}}))
        self.assertIsNone(self.decide(nested(), ["mlx.core.bfloat16", "mlx.core.float32"]))

    def test_config_mlx_vlm_refuses_does_not(self):
        # transformers' form without an mrope_section: mlx-vlm's TextConfig raises.
        self.assertIsNone(self.decide(nested({"rope_type": "default", "rope_theta": 1000.0,
                                              "partial_rotary_factor": 0.5})))


if __name__ == "__main__":
    unittest.main()
