"""Tests of candidate paths (tools/golden_candidates.py): the two shipped adapters end to end, and
the bad-adapter corpus: every broken adapter gets one named error (the file, and mid-schedule the
scenario and the call) and nothing is written. Run with `make test-tools` (needs tools/.venv)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

import h5py
import numpy as np

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
CONFIG = TOOLS / "configs" / "tiny-dense.json"
SEQUENTIAL = TOOLS / "candidates" / "sequential_mrope.py"
VLM_LANGUAGE = TOOLS / "candidates" / "mlx_vlm_language.py"
# Text only, no mlx-vlm: enough to reach every call of a broken adapter, and quick.
TEXT_ONLY = ["--scenarios", "full_prefill,chunked_prefill_5,batch_left_pad", "--vlm-extras", "off"]
# The MRoPE vectors and one chunk sweep beside two text schedules.
WITH_MROPE = ["--scenarios", "full_prefill,prefix_decode", "--vlm-extras", "vectors,sweeps"]


def generate(out: Path, *args, check=True, env=None):
    run = subprocess.run([sys.executable, str(TOOLS / "make_golden.py"), "--config", str(CONFIG),
                          "--out", str(out), *args, "--oracle", "off"], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, env={**os.environ, "CI": "", **(env or {})})
    if check and run.returncode != 0:
        raise AssertionError(f"make_golden failed ({run.returncode}):\n{run.stderr}")
    return run


def adapter(directory: Path, name: str, body: str) -> Path:
    """An adapter file in `directory`: the shipped sequential_mrope adapter, then `body`, which
    may redefine any of its functions."""
    path = directory / f"{name}.py"
    path.write_text(f"import importlib.util as _u\n"
                    f"_s = _u.spec_from_file_location('_base_{name}', {str(SEQUENTIAL)!r})\n"
                    f"_b = _u.module_from_spec(_s); _s.loader.exec_module(_b)\n"
                    f"from types import SimpleNamespace\n"
                    f"NAME = {name!r}\n"
                    f"build, text_model, reset, set_position_state, make_cache, forward, substeps = "
                    f"_b.build, _b.text_model, _b.reset, _b.set_position_state, _b.make_cache, _b.forward, _b.substeps\n"
                    + textwrap.dedent(body))
    return path


class BadAdapters(unittest.TestCase):
    """The corpus: (name, adapter body, words the error must contain). Each adapter runs on one
    job kept from a real generator run (QWEN_PARITY_CANDIDATE_JOB_DIR), through the candidate
    runner in this process; two of them also through make_golden.py end to end."""

    CASES = [
        ("does_not_import", "import not_a_module_anywhere\n", ["does not import", "ModuleNotFoundError"]),
        ("syntax_error", "def forward(:\n", ["does not import", "SyntaxError"]),
        ("no_forward", "del forward\n", ["has no function forward"]),
        ("no_text_model", "del text_model\n", ["has no function text_model"]),
        ("bad_name", "NAME = 'has space'\n", ["NAME", "[A-Za-z0-9_.-]+"]),
        ("bad_route", "TEXT_ROUTE = 'torch'\n", ["TEXT_ROUTE", "mlx_lm"]),
        ("build_raises", "def build(config, weights):\n    raise KeyError('language_model.lm_head.weight')\n",
         ["build() raised", "KeyError"]),
        ("logits_short", """
            def forward(model, inputs, **kw):
                return _b.forward(model, inputs, **kw)["logits"][:, :-1]
            """, ["scenario full_prefill", "call 1 of 1", "logits has shape [1, 31, 1000], expected [1, 32, 1000]"]),
        ("logits_float16", """
            def forward(model, inputs, **kw):
                return _b.forward(model, inputs, **kw)["logits"].astype(_b.mx.float16)
            """, ["scenario full_prefill", "logits has dtype", "expected float32"]),
        ("logits_numpy", """
            import numpy as np
            def forward(model, inputs, **kw):
                return np.array(_b.forward(model, inputs, **kw)["logits"])
            """, ["logits is a ndarray, expected an mx.array"]),
        ("nan_in_a_chunk", """
            calls = [0]
            def forward(model, inputs, **kw):
                out = _b.forward(model, inputs, **kw)["logits"]
                calls[0] += 1
                if calls[0] == 4:   # the first plan runs twice (bare, then recorded), then chunked_prefill_5
                    out = out * float("nan")
                return out
            """, ["scenario chunked_prefill_5", "call 2 of 8 (tokens 5..9", "NaN or Inf"]),
        ("raises_mid_schedule", """
            def forward(model, inputs, **kw):
                if inputs.shape[1] == 1 and kw["cache"] is not None and kw["cache"][3].offset == 31:
                    raise RuntimeError("kv cache overflow")
                return _b.forward(model, inputs, **kw)
            """, ["scenario chunked_prefill_5", "call 8 of 8 (tokens 31..31, cache keep)",
                  "forward() raised RuntimeError: kv cache overflow", "raises_mid_schedule.py:"]),
        ("batch_without_make_cache", "del make_cache\n",
         ["scenario batch_left_pad", "call 1 of 4", "make_cache(model, left_padding)"]),
        ("wrong_text_model", """
            def text_model(model):
                return _b.lm_qwen3_5.Qwen3_5TextModel(model.language_model.args)
            """, ["scenario full_prefill", "embeddings was not recorded"]),
        ("positions_misshapen", """
            def forward(model, inputs, **kw):
                out = _b.forward(model, inputs, **kw)
                return {"logits": out["logits"], "positions": _b.mx.zeros((2, 2))}
            """, ["scenario full_prefill", "reported positions of shape [2, 2]"]),
        ("leaky_recording", """
            runs = [0]
            def forward(model, inputs, **kw):
                runs[0] += 1
                out = _b.forward(model, inputs, **kw)["logits"]
                return out + 1.0 if runs[0] == 2 else out   # the recorded run of the first plan differs
            """, ["recording the forward pass", "changed the logits of full_prefill"]),
        ("substep_not_an_array", """
            def substeps(model, taps):
                taps.standard(_b.text_model(model))
                taps.function(_b.lm_qwen3_5, "normalize_qk", lambda a, k, o: {"q_normed": "q"})
            """, ["scenario full_prefill", "sub-step q_normed of layer 0 is a str"]),
    ]

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.job = Path(cls.tmp.name) / "job"
        generate(Path(cls.tmp.name) / "good.h5", *TEXT_ONLY, "--candidate", str(SEQUENTIAL),
                 env={"QWEN_PARITY_CANDIDATE_JOB_DIR": str(cls.job)})

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def serve(self, adapter_path: Path, describe_only=False) -> tuple[int, str]:
        """The runner on a copy of the kept job with this adapter: (status, error message)."""
        import golden_candidates
        job = Path(self.tmp.name) / f"job-{adapter_path.stem}"
        shutil.copytree(self.job, job)
        for stale in ("result.json", "result.npz", "error.json"):
            (job / stale).unlink(missing_ok=True)
        spec = json.loads((job / "job.json").read_text())
        (job / "job.json").write_text(json.dumps({**spec, "adapter": str(adapter_path), "describe_only": describe_only}))
        status = golden_candidates.serve(job)
        error = job / "error.json"
        self.assertEqual(status == 0, not error.exists())
        self.assertEqual(status == 0, (job / "result.json").exists())
        return status, json.loads(error.read_text())["message"] if error.exists() else ""

    def test_the_kept_job_reruns_clean(self):
        status, message = self.serve(SEQUENTIAL)
        self.assertEqual((status, message), (0, ""))

    def test_every_bad_adapter_gets_a_named_error(self):
        for name, body, words in self.CASES:
            with self.subTest(name):
                path = adapter(Path(self.tmp.name), name, body)
                status, message = self.serve(path)
                self.assertEqual(status, 3, message)
                self.assertIn(f"adapter {path}", message)
                for word in words:
                    self.assertIn(word, message)
        path = adapter(Path(self.tmp.name), "describe_raises",
                       "def describe():\n    raise RuntimeError('no version file')\n")
        status, message = self.serve(path, describe_only=True)
        self.assertEqual(status, 3)
        self.assertIn("describe() failed", message)
        self.assertIn("no version file", message)

    def test_make_golden_names_the_error_and_writes_nothing(self):
        tmp = Path(self.tmp.name)
        for name, before_references in (("does_not_import", True), ("raises_mid_schedule", False)):
            body, words = next((b, w) for n, b, w in self.CASES if n == name)
            path = adapter(tmp, name, body)
            out = tmp / f"{name}.h5"
            run = generate(out, *TEXT_ONLY, "--candidate", str(path), check=False)
            self.assertEqual(run.returncode, 1, run.stderr[-2000:])   # an input error (golden/errors.py)
            errors = [l for l in run.stderr.splitlines() if l.startswith("make_golden: error:")]
            self.assertEqual(len(errors), 1, run.stderr[-2000:])
            for word in [f"adapter {path}"] + words:
                self.assertIn(word, errors[0])
            # A broken import is found before any reference runs.
            self.assertEqual("mlx_lm" in run.stderr, not before_references)
            self.assertFalse(out.exists())
            self.assertEqual(list(tmp.glob(f".{name}.h5.*")), [])

    def test_missing_file_missing_interpreter_and_wrong_destination_are_named(self):
        tmp = Path(self.tmp.name)
        out = tmp / "g.h5"
        run = generate(out, *TEXT_ONLY, "--candidate", str(tmp / "absent.py"), check=False)
        self.assertEqual(run.returncode, 1)
        self.assertIn(f"adapter {tmp / 'absent.py'}: no such file", run.stderr)
        run = generate(out, *TEXT_ONLY, "--candidate", str(SEQUENTIAL), "--candidate-python",
                       str(tmp / "no-python"), check=False)
        self.assertEqual(run.returncode, 1)
        self.assertIn("--candidate-python", run.stderr)
        self.assertIn("cannot run it", run.stderr)
        self.assertFalse(out.exists())
        golden = TOOLS.parent / "golden" / "candidate-test.h5"
        run = generate(golden, *TEXT_ONLY, "--candidate", str(SEQUENTIAL), check=False)
        self.assertEqual(run.returncode, 2)   # a usage error
        self.assertIn("refusing to write", run.stderr)
        self.assertFalse(golden.exists())
        run = generate(out, "--candidate", str(SEQUENTIAL), "--make-checkpoint", "q4", check=False)
        self.assertEqual(run.returncode, 2)
        self.assertIn("--candidate applies to --config goldens", run.stderr)


def paths(f: h5py.File, name: str) -> dict:
    """{scenario: (reference, candidate group)} for the candidate `name`."""
    out = {}
    for scenario, group in f["scenarios"].items():
        if f"candidate:{name}" in group:
            c = group[f"candidate:{name}"]
            out[scenario] = (c.attrs["reference"], c)
    return out


def logits_gap(f, scenario, reference, candidate) -> float:
    r = f[f"scenarios/{scenario}/{reference}"]
    rp, cp = list(r["logits_positions"][()]), list(candidate["logits_positions"][()])
    common = [t for t in rp if t in cp]
    a = r["logits"][()][:, [rp.index(t) for t in common]]
    b = candidate["logits"][()][:, [cp.index(t) for t in common]]
    return float(np.abs(a - b).max())


class ShippedCandidates(unittest.TestCase):
    def test_sequential_mrope_is_exact_on_text_and_a_few_1e_6_off_on_mrope(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "seq.h5"
            generate(out, *WITH_MROPE, "--candidate", str(SEQUENTIAL))
            with h5py.File(out, "r") as f:
                info = f["candidates/sequential_mrope"].attrs
                self.assertEqual(info["adapter"], "tools/candidates/sequential_mrope.py")
                self.assertEqual(len(info["adapter_sha256"]), 64)
                self.assertEqual(info["text_reference"], "mlx_lm")
                self.assertEqual(f["candidates"].attrs["generator"], "tools/golden_candidates.py")
                provided = json.loads(info["provided_json"])
                self.assertTrue(provided["positions"])
                self.assertTrue({"q_normed", "core_out", "final_state", "sdpa", "q_rope"} <= set(provided["substeps"]))
                ran = paths(f, "sequential_mrope")
                self.assertEqual(set(ran), {"full_prefill", "prefix_decode", "mrope_prefix_decode",
                                            "mrope_full_decode"} | {f"mrope_chunked_{c}_step{s}"
                                                                    for c in ("boundary", "later") for s in range(1, 6)})
                for scenario, (reference, c) in ran.items():
                    gap = logits_gap(f, scenario, reference, c)
                    self.assertTrue(np.array_equal(c["logits"][()], c["logits_repeat"][()]), scenario)
                    if reference == "mlx_lm":
                        self.assertEqual(gap, 0.0, scenario)
                        self.assertTrue(np.array_equal(c["hidden_states"][()],
                                                       f[f"scenarios/{scenario}/mlx_lm/hidden_states"][()]))
                    else:
                        self.assertTrue(1e-6 < gap < 2e-5, f"{scenario}: {gap}")
                        self.assertTrue(np.array_equal(c["position_ids"][()],
                                                       f[f"scenarios/{scenario}/{reference}/position_ids"][()]))
                # Sub-steps of every layer, for diff: layer 0 is a GatedDeltaNet layer.
                probes = f["probes/mrope_full_decode/candidate:sequential_mrope"]
                self.assertEqual(sorted(probes), ["layer_00_gdn", "layer_01_gdn", "layer_02_gdn", "layer_03_attn"])
                self.assertEqual(probes["layer_00_gdn/q_normed"].shape, (1, 7, 4, 32))
                self.assertEqual(probes["layer_00_gdn/final_state"].shape, (4, 1, 4, 32, 32))  # 4 calls, stacked

    def test_mlx_vlm_language_equals_the_mlx_vlm_paths_bit_for_bit(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "vlm.h5"
            generate(out, *WITH_MROPE, "--candidate", str(VLM_LANGUAGE))
            with h5py.File(out, "r") as f:
                self.assertEqual(f["candidates/mlx_vlm_language"].attrs["text_reference"], "mlx_vlm")
                ran = paths(f, "mlx_vlm_language")
                self.assertEqual(len(ran), 14)
                for scenario, (reference, c) in ran.items():
                    reference = "mlx_vlm" if reference == "mlx_lm" else reference
                    self.assertEqual(logits_gap(f, scenario, reference, c), 0.0, scenario)
                    self.assertTrue(np.array_equal(c["hidden_states"][()],
                                                   f[f"scenarios/{scenario}/{reference}/hidden_states"][()]), scenario)


if __name__ == "__main__":
    unittest.main()
