"""Tests of the generator's config handling: refused configs (exit 1, file and key named,
nothing written), the config forms of issue 17 (nested, small vocabularies, unusual layer
patterns), library findings (exit 3) and the special token ids. Run with `make test-tools`.

The generator runs in this process (golden.cli.main, the function make_golden.py exits with),
so the libraries are imported once; ExitStatus runs make_golden.py itself for the statuses a
shell sees."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import h5py
import numpy as np

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
from golden.cli import main as make_golden  # noqa: E402
from golden.configs import read_config  # noqa: E402
from golden.inputs import TokenIds  # noqa: E402

DENSE = json.loads((TOOLS / "configs" / "tiny-dense.json").read_text())
MOE = json.loads((TOOLS / "configs" / "tiny-moe.json").read_text())
# Small and quick: hidden 64, 4 layers (GatedDeltaNet x3, attention).
SMALL = dict(DENSE, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
             intermediate_size=64, linear_num_key_heads=2, linear_num_value_heads=2,
             linear_key_head_dim=16, linear_value_head_dim=16)
SMALL_MOE = dict(SMALL, model_type="qwen3_5_moe", num_experts=4, num_experts_per_tok=2,
                 moe_intermediate_size=32, shared_expert_intermediate_size=32, norm_topk_prob=True)
VISION = {"model_type": "qwen3_5", "depth": 1, "hidden_size": 16, "intermediate_size": 32,
          "num_heads": 2, "patch_size": 4, "temporal_patch_size": 2, "spatial_merge_size": 2,
          "in_channels": 3, "num_position_embeddings": 16, "deepstack_visual_indexes": [],
          "out_hidden_size": 64}
SPECIAL = {"image_token_id": 250, "video_token_id": 251, "vision_start_token_id": 247,
           "vision_end_token_id": 248}
FAST = ["--scenarios", "full_prefill", "--vlm-extras", "off"]
TOKEN_DATASETS = ("token_ids", "decode_tokens", "sequence", "input_ids")


def nested(text: dict, model_type: str, **top) -> dict:
    """A checkpoint config as published: the text model under text_config."""
    t = {k: v for k, v in text.items() if k not in ("rope_theta", "partial_rotary_factor")}
    t |= {"model_type": model_type + "_text", "vocab_size": 300,
          "rope_parameters": {"mrope_interleaved": True, "mrope_section": [2, 1, 1],
                              "rope_type": "default", "rope_theta": 10000000,
                              "partial_rotary_factor": 0.5}}
    return {"architectures": ["Qwen3_5ForConditionalGeneration"], "model_type": model_type,
            "text_config": t, "vision_config": VISION, **SPECIAL, **top}


def without(config: dict, key: str) -> dict:
    return {k: v for k, v in config.items() if k != key}


class GeneratorRun:
    """One generator run on a config written to a fresh temporary folder (in this process,
    or as `make_golden.py` in a subprocess)."""

    def __init__(self, config: dict, *args: str, raw: str | None = None, subprocess_run=False):
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self._tmp.name)
        self.config = self.dir / "model.json"
        self.config.write_text(raw if raw is not None else json.dumps(config, indent=1))
        self.out = self.dir / "model.h5"
        # No float64 oracle unless asked for: it needs torch, and these tests are about configs.
        argv = ["--config", str(self.config), "--out", str(self.out), *args,
                *([] if "--oracle" in args else ["--oracle", "off"])]
        if subprocess_run:
            run = subprocess.run([sys.executable, str(TOOLS / "make_golden.py"), *argv],
                                 capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                 env={**os.environ, "CI": ""})
            self.status, self.stderr = run.returncode, run.stderr
            return
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            self.status = make_golden(argv)
        self.stderr = stderr.getvalue()

    def written(self) -> list[str]:
        return sorted(p.name for p in self.dir.iterdir() if p != self.config)

    def close(self):
        self._tmp.cleanup()


class RefusedConfigs(unittest.TestCase):
    """Each bad config: exit 1, the message names the file and the key, nothing written."""

    def refused(self, config: dict, key: str, *args: str, says: str = ""):
        run = GeneratorRun(config, *(args or FAST))
        try:
            self.assertEqual(run.status, 1, run.stderr)
            self.assertIn(f"config {run.config}: key {key}:", run.stderr)
            self.assertIn(says, run.stderr)
            self.assertEqual(run.written(), [], "a refused config must leave nothing behind")
        finally:
            run.close()

    def test_missing_required_key(self):
        self.refused(without(SMALL, "linear_key_head_dim"), "linear_key_head_dim",
                     says="missing required key")
        self.refused(without(SMALL, "model_type"), "model_type", says="missing required key")
        self.refused(nested(without(SMALL_MOE, "num_experts"), "qwen3_5_moe"),
                     "text_config.num_experts", says="missing required key")

    def test_unknown_model_type(self):
        self.refused(dict(SMALL, model_type="qwen3"), "model_type", says="unknown model_type 'qwen3'")
        self.refused(dict(nested(SMALL, "qwen3_5"), model_type="qwen3_5_text"), "model_type",
                     says="unknown model_type")
        config = nested(SMALL, "qwen3_5")
        config["text_config"]["model_type"] = "qwen3_5_moe_text"
        self.refused(config, "text_config.model_type", says="does not belong to model_type 'qwen3_5'")

    def test_heads_that_do_not_divide(self):
        self.refused(dict(SMALL, num_key_value_heads=3), "num_key_value_heads",
                     says="3 does not divide num_attention_heads 4")
        self.refused(dict(SMALL, linear_num_key_heads=2, linear_num_value_heads=3),
                     "linear_num_value_heads", says="3 is not a multiple of linear_num_key_heads 2")

    def test_more_experts_per_token_than_experts(self):
        self.refused(dict(SMALL_MOE, num_experts_per_tok=5), "num_experts_per_tok",
                     says="5 experts per token, but num_experts is 4")
        self.refused(dict(SMALL_MOE, num_experts_per_tok=0), "num_experts_per_tok")

    def test_special_token_ids_outside_the_vocabulary(self):
        # mlx-vlm's defaults (248056...) in a vocabulary of 300.
        config = nested(SMALL, "qwen3_5", image_token_id=248056, video_token_id=248057)
        self.refused(config, "image_token_id, video_token_id",
                     says="image_token_id 248056, video_token_id 248057 outside the vocabulary [0, 300)")
        self.refused(nested(SMALL, "qwen3_5", vision_start_token_id=-1), "vision_start_token_id")
        self.refused(dict(SMALL, image_token_id=1000), "image_token_id", says="outside the vocabulary")

    def test_non_numeric_values(self):
        self.refused(dict(SMALL, hidden_size="64"), "hidden_size", says="must be an integer, got '64'")
        self.refused(dict(SMALL, rms_norm_eps="1e-5"), "rms_norm_eps", says="must be a number")
        self.refused(dict(SMALL, num_hidden_layers=True), "num_hidden_layers", says="must be an integer")
        self.refused(dict(SMALL, num_hidden_layers=None), "num_hidden_layers", says="must be an integer")
        self.refused(nested(dict(SMALL, head_dim=16.0), "qwen3_5"), "text_config.head_dim")
        self.refused(dict(SMALL, tie_word_embeddings="false"), "tie_word_embeddings",
                     says="must be true or false")
        self.refused(dict(SMALL, rope_parameters={"rope_theta": "big"}), "rope_parameters.rope_theta")

    def test_a_vision_config_whose_features_do_not_fit_the_text_model(self):
        config = nested(SMALL, "qwen3_5", vision_config=dict(VISION, out_hidden_size=99))
        self.refused(config, "vision_config.out_hidden_size", "--scenarios", "full_prefill",
                     "--vlm-extras", "vision", says="99 is not the text hidden_size 64")

    def test_not_a_config(self):
        run = GeneratorRun({}, *FAST, raw="[1, 2]")
        try:
            self.assertEqual(run.status, 1, run.stderr)
            self.assertIn("is not a JSON object", run.stderr)
            self.assertEqual(run.written(), [])
        finally:
            run.close()


class ConfigForms(unittest.TestCase):
    """What the libraries really do with each form: a golden, or a library finding (exit 3,
    one 'library finding:' line, nothing written)."""

    def golden(self, config: dict, *args: str) -> GeneratorRun:
        run = GeneratorRun(config, *args)
        self.addCleanup(run.close)
        self.assertEqual(run.status, 0, run.stderr)
        self.assertEqual(run.written(), [run.out.name])
        return run

    def finding(self, config: dict, starts: str, *args: str) -> None:
        run = GeneratorRun(config, *(args or FAST))
        try:
            self.assertEqual(run.status, 3, run.stderr)
            lines = [l for l in run.stderr.splitlines() if l.startswith("library finding: ")]
            self.assertEqual(len(lines), 1, run.stderr)
            self.assertTrue(lines[0].startswith("library finding: " + starts), lines[0])
            self.assertNotIn("Traceback", run.stderr)
            self.assertEqual(run.written(), [], "a finding must leave nothing behind")
        finally:
            run.close()

    def assert_token_ids_in_vocabulary(self, f: h5py.File, vocab: int) -> int:
        seen = 0

        def visit(name, obj):
            nonlocal seen
            if isinstance(obj, h5py.Dataset) and name.rpartition("/")[2] in TOKEN_DATASETS:
                ids = obj[()]
                self.assertTrue(((ids >= 0) & (ids < vocab)).all(), f"{name}: {ids.max()}")
                seen += 1
        f.visititems(visit)
        return seen

    def test_nested_dense_with_vision_config_and_special_ids(self):
        config = nested(SMALL, "qwen3_5")
        run = self.golden(config, "--scenarios", "full_prefill", "--vlm-extras", "vision")
        with h5py.File(run.out, "r") as f:
            self.assertEqual(f["config"].attrs["raw_json"], run.config.read_text())
            vlm = json.loads(f["config"].attrs["vlm_json"])
            self.assertEqual(vlm["text_config"], config["text_config"])   # nested once, as given
            self.assertEqual({k: vlm[k] for k in SPECIAL}, SPECIAL)
            self.assertEqual(vlm["vision_config"], VISION)
            effective = json.loads(f["config"].attrs["vlm_effective_json"])
            self.assertEqual((effective["rope_theta"], effective["mrope_section"]), (1e7, [2, 1, 1]))
            # The image prompts run the config's own tower and token ids.
            self.assertEqual(json.loads(f["vision"].attrs["config_json"])["vision_config"]["depth"], 1)
            ids = f["inputs/vision/image_one/token_ids"][()]
            self.assertIn(SPECIAL["image_token_id"], ids)
            self.assertIn(SPECIAL["vision_start_token_id"], ids)
            self.assertGreater(self.assert_token_ids_in_vocabulary(f, 300), 5)

    def test_nested_moe_with_feed_forward_probes(self):
        run = self.golden(nested(SMALL_MOE, "qwen3_5_moe"), "--scenarios", "full_prefill",
                          "--vlm-extras", "none")
        with h5py.File(run.out, "r") as f:
            self.assertIn("/scenarios/full_prefill/mlx_vlm", f)
            layer = f["probes/full_prefill/mlx_lm/layer_00_gdn"]
            names = json.loads(layer.attrs["probes_json"])
            self.assertEqual(names[-10:], ["post_norm", "router_logits", "router_probs",
                                           "topk_indices", "topk_weights", "experts_out",
                                           "routed_out", "shared_out", "shared_gate", "mlp_out"])
            self.assertEqual(layer["topk_indices"].dtype, np.int32)
            self.assertEqual(layer["topk_indices"].shape, (1, 32, 2))
            self.assertEqual(layer["experts_out"].shape, (1, 32, 2, 64))
            self.assertEqual(layer["shared_gate"].shape, (1, 32, 1))
            self.assert_token_ids_in_vocabulary(f, 300)

    def test_small_vocabularies_without_special_ids(self):
        for vocab in (64, 300):
            with self.subTest(vocab=vocab):
                run = self.golden(dict(SMALL, vocab_size=vocab), "--scenarios", "full_prefill",
                                  "--vlm-extras", "vectors,hazards")
                with h5py.File(run.out, "r") as f:
                    effective = json.loads(f["config"].attrs["vlm_effective_json"])
                    self.assertEqual([effective[k] for k in ("vision_start_token_id",
                                                             "vision_end_token_id",
                                                             "image_token_id", "video_token_id")],
                                     [vocab - 5, vocab - 4, vocab - 3, vocab - 2])
                    self.assertGreater(self.assert_token_ids_in_vocabulary(f, vocab), 10)
                    names = json.loads(f["probes/full_prefill/mlx_lm/layer_03_attn"].attrs["probes_json"])
                    self.assertEqual(names[-5:], ["post_norm", "mlp_gate", "mlp_up", "mlp_act", "mlp_out"])

    def test_full_attention_in_every_layer_is_a_library_finding(self):
        # create_ssm_mask hands layer 0's KVCache to the SSM mask: the first cached call fails.
        self.finding(dict(SMALL, full_attention_interval=1),
                     "mlx-lm 0.32.2: running scenario full_prefill, call 1 of 1 (32 tokens): "
                     "TypeError: create_attention_mask() missing 2 required positional arguments")

    def test_no_attention_layer_is_a_library_finding(self):
        # The attention mask is taken from the cache of layer interval - 1, which does not exist.
        self.finding(dict(SMALL, full_attention_interval=5), "mlx-lm 0.32.2: running the whole "
                     "prompt without a cache (the recording check): IndexError: list index out of range")

    def test_other_library_findings(self):
        self.finding(dict(SMALL_MOE, shared_expert_intermediate_size=0),
                     "mlx-lm 0.32.2: building the model from the config: ZeroDivisionError")
        self.finding(dict(SMALL, rope_parameters={"rope_theta": 5000}),
                     "mlx-vlm 0.7.10: building the LanguageModel (ModelConfig.from_dict): "
                     "ValueError: rope_parameters must contain keys", "--scenarios", "full_prefill",
                     "--vlm-extras", "none")


class ExitStatus(unittest.TestCase):
    """The statuses make_golden.py itself exits with."""

    def test_refused_config_exits_1_and_a_finding_exits_3(self):
        for config, status, text in ((dict(SMALL, num_key_value_heads=3), 1,
                                      "key num_key_value_heads: 3 does not divide"),
                                     (dict(SMALL, full_attention_interval=1), 3,
                                      "library finding: mlx-lm 0.32.2: running scenario full_prefill")):
            run = GeneratorRun(config, *FAST, subprocess_run=True)
            try:
                self.assertEqual(run.status, status, run.stderr)
                self.assertIn(text, run.stderr)
                self.assertNotIn("Traceback", run.stderr)
                self.assertEqual(run.written(), [])
            finally:
                run.close()


class SpecialTokenIds(unittest.TestCase):
    def spec(self, config: dict):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "c.json"
            path.write_text(json.dumps(config))
            return read_config(path)

    def test_defaults_reproduce_the_tiny_goldens(self):
        spec = self.spec(DENSE)
        self.assertEqual(spec.token_ids, {"vision_start_token_id": 995, "vision_end_token_id": 996,
                                          "image_token_id": 997, "video_token_id": 998})
        ids = TokenIds(spec.token_ids, 1000)
        self.assertEqual(ids.pool.tolist(), list(range(990)))
        rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
        self.assertEqual(ids.text(rng_a, 5), rng_b.integers(0, 990, size=5).tolist())

    def test_given_ids_are_kept_and_the_rest_avoid_them(self):
        spec = self.spec(dict(SMALL, vocab_size=64, image_token_id=59))   # V-5, vision_start's default
        ids = spec.token_ids
        self.assertEqual(ids["image_token_id"], 59)
        self.assertEqual(len(set(ids.values())), 4)
        self.assertTrue(all(0 <= v < 64 for v in ids.values()))
        pool = TokenIds(ids, 64).pool.tolist()
        self.assertFalse(set(pool) & set(ids.values()))

    def test_nested_spec(self):
        spec = self.spec(nested(SMALL, "qwen3_5"))
        self.assertTrue(spec.nested)
        self.assertEqual(spec.token_ids, {k: SPECIAL[k] for k in spec.token_ids})
        self.assertEqual(spec.given_token_ids, ("vision_start_token_id", "vision_end_token_id",
                                                "image_token_id", "video_token_id"))
        self.assertEqual(spec.vlm_params()["text_config"], spec.config["text_config"])



class Oracle(unittest.TestCase):
    """The float64 oracle (needs torch: make venv-torch) on configs the committed goldens do not
    have: the published nested form with its own vision tower, and an MoE it cannot compute."""

    golden = ConfigForms.golden

    def test_nested_form_gets_the_oracle_its_probes_and_the_image_prompts(self):
        run = self.golden(nested(SMALL, "qwen3_5"), "--scenarios", "full_prefill", "--vlm-extras", "vision",
                          "--oracle", "on")
        with h5py.File(run.out, "r") as f:
            self.assertEqual(f["oracle"].attrs["generator"], "tools/golden/oracle/capture.py")
            self.assertNotIn("unavailable", f["oracle"].attrs)
            self.assertIn("torch", json.loads(f.attrs["versions_json"]))
            for scenario in ("full_prefill", "image_prompt_one", "image_prompt_two"):
                path = f[f"scenarios/{scenario}/transformers_f64"]
                self.assertEqual(path["hidden_states"].dtype, np.float64, scenario)
                self.assertEqual(path["hidden_states"].shape, f[f"scenarios/{scenario}/mlx_vlm/hidden_states"].shape)
            probed = f["probes/full_prefill/transformers_f64"]
            self.assertEqual(sorted(probed), sorted(f["probes/full_prefill/mlx_lm"]))
            self.assertIn("image_prompt_one", f["probes"])
            self.assertIn("transformers_f64", f["probes/image_prompt_one"])

    def test_an_moe_without_top_k_renormalisation_has_no_oracle_and_says_why(self):
        run = self.golden(dict(SMALL_MOE, norm_topk_prob=False), *FAST, "--oracle", "on")
        with h5py.File(run.out, "r") as f:
            self.assertIn("norm_topk_prob is false", f["oracle"].attrs["unavailable"])
            self.assertNotIn("transformers_f64", f["scenarios/full_prefill"])


if __name__ == "__main__":
    unittest.main()
