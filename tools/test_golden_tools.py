"""Tests of the golden tools: review and history on regeneration, the freshness check, atomic
writes under SIGKILL, and the CI guard. Run with `make test-tools` (needs tools/.venv)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

import h5py
import numpy as np

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
sys.path.insert(0, str(TOOLS))
from golden_diff import compare_files, compare_model_dirs  # noqa: E402

CONFIG = TOOLS / "configs" / "tiny-dense.json"
FAST = ["--scenarios", "no_cache,prefix_decode"]
# Random-weight goldens without mlx-vlm: the lifecycle does not depend on it, the run stays
# short (the kill test's delays assume an mlx-lm-only run) and the review's first 40 changes
# still reach /weights.
LM_ONLY = [*FAST, "--vlm-extras", "off"]
NO_ORACLE = ["--oracle", "off"]


def generate(*args, env=None, check=True):
    # The float64 oracle needs torch (make venv-torch); these tests are about the lifecycle.
    args = [*args, *NO_ORACLE] if "--oracle" not in args else list(args)
    run = subprocess.run([sys.executable, str(TOOLS / "make_golden.py"), *args],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL,
                         env={**os.environ, "CI": "", **(env or {})})
    if check and run.returncode != 0:
        raise AssertionError(f"make_golden failed ({run.returncode}):\n{run.stderr}")
    return run


def history(path: Path) -> list:
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["history_json"])


class ReviewAndHistory(unittest.TestCase):
    def test_regeneration_is_reviewed_and_recorded(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "g.h5"
            generate("--config", str(CONFIG), "--out", str(out), *LM_ONLY)
            first = history(out)
            self.assertEqual([e["reason"] for e in first], ["created"])
            self.assertEqual(set(first[0]), {"date", "reason", "generator_sha256", "versions"})
            original = out.read_bytes()

            # Same inputs: bitwise the same golden, so nothing is written and no reason asked.
            run = generate("--config", str(CONFIG), "--out", str(out), *LM_ONLY)
            self.assertIn("unchanged", run.stderr)
            self.assertEqual(out.read_bytes(), original)

            # A change without a reason is refused (no terminal to ask on) and writes nothing.
            run = generate("--config", str(CONFIG), "--out", str(out), *LM_ONLY, "--seed", "7", check=False)
            self.assertEqual(run.returncode, 2)
            self.assertIn("--reason", run.stderr)
            self.assertEqual(out.read_bytes(), original)
            # ... but it showed what would move, per scenario, path and layer.
            self.assertRegex(run.stderr, r"no_cache/mlx_lm: embeddings [0-9.e+-]+, layer 0 ")
            # (the first 40 changed datasets in path order: the inputs, then prefix_decode's probes)
            self.assertIn("/inputs/token_ids: values:", run.stderr)
            self.assertIn("/probes/prefix_decode/mlx_lm/layer_00_gdn/final_state: values:", run.stderr)

            run = generate("--config", str(CONFIG), "--out", str(out), *LM_ONLY, "--seed", "7",
                           "--reason", "new seed for the test")
            entries = history(out)
            self.assertEqual([e["reason"] for e in entries], ["created", "new seed for the test"])
            self.assertEqual(entries[0], first[0])  # earlier entries are kept as they were
            self.assertIn("/scenarios/no_cache/mlx_lm/logits", entries[1]["changes"])
            with h5py.File(out, "r") as f:
                self.assertEqual(int(f.attrs["weights_seed"]), 7)

    def test_ci_never_writes_into_golden(self):
        target = REPO / "golden" / "ci-guard-test.h5"
        run = generate("--config", str(CONFIG), "--out", str(target), *LM_ONLY, env={"CI": "true"},
                       check=False)
        self.assertEqual(run.returncode, 2)
        self.assertIn("CI=true: refusing", run.stderr)
        self.assertFalse(target.exists())


class ReferencePaths(unittest.TestCase):
    def test_random_weights_get_mlx_vlm_paths_model_directories_do_not(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "g.h5"
            generate("--config", str(CONFIG), "--out", str(out), "--scenarios", "full_prefill",
                     "--vlm-extras", "none")
            with h5py.File(out, "r") as f:
                self.assertEqual(sorted(f["scenarios"]), ["full_prefill"])
                self.assertEqual(sorted(f["scenarios/full_prefill"]), ["mlx_lm", "mlx_vlm"])
                self.assertIn("vlm_json", f["config"].attrs)
                self.assertEqual(f.attrs["weights_source"], "random")
                # The vlm schedule reads the prompt mlx-lm ran, stored once under /inputs.
                schedule = json.loads(f["scenarios/full_prefill/mlx_vlm"].attrs["schedule_json"])
                self.assertEqual(schedule[0]["tokens"], "/inputs/token_ids")
            run = generate("--config", str(CONFIG), "--make-checkpoint", "q4", "--out",
                           str(Path(tmp) / "ck"), "--vlm-extras", "none", check=False)
            self.assertEqual(run.returncode, 2)
            self.assertIn("--vlm-extras applies to random-weight goldens", run.stderr)


class FreshnessCheck(unittest.TestCase):
    def test_an_edited_golden_fails_and_names_the_dataset(self):
        with tempfile.TemporaryDirectory() as tmp:
            golden, configs = Path(tmp) / "golden", Path(tmp) / "configs"
            golden.mkdir()
            configs.mkdir()
            shutil.copy(CONFIG, configs)
            shutil.copy(REPO / "golden" / "tiny-dense.h5", golden)
            check = [sys.executable, str(TOOLS / "golden_check.py"), "--golden-dir", str(golden),
                     "--configs", str(configs)]
            clean = subprocess.run(check, capture_output=True, text=True)
            self.assertEqual(clean.returncode, 0, clean.stdout + clean.stderr)
            self.assertIn("tiny-dense.h5: identical", clean.stdout)

            dataset = "/scenarios/prefix_decode/mlx_lm/logits"
            with h5py.File(golden / "tiny-dense.h5", "r+") as f:
                values = f[dataset][()]
                values.flat[17] = np.nextafter(values.flat[17], np.float32(np.inf))  # one ulp
                f[dataset][...] = values
            edited = subprocess.run(check, capture_output=True, text=True)
            self.assertEqual(edited.returncode, 1, edited.stdout)
            self.assertIn(f"{dataset}: values: 1 of", edited.stdout)

    def test_checkpoint_directories_compare_tensor_by_tensor(self):
        with tempfile.TemporaryDirectory() as tmp:
            a, b = Path(tmp) / "a", Path(tmp) / "b"
            generate("--config", str(CONFIG), "--make-checkpoint", "q4", "--out", str(a), *FAST)
            shutil.copytree(a, b)
            self.assertEqual(compare_model_dirs(a, b), [])
            # Flip one byte inside one tensor's data.
            path = b / "model.safetensors"
            data = bytearray(path.read_bytes())
            n = int.from_bytes(data[:8], "little")
            header = json.loads(data[8:8 + n])
            start = 8 + n + header["language_model.model.norm.weight"]["data_offsets"][0]
            data[start] ^= 1
            path.write_bytes(bytes(data))
            changes = compare_model_dirs(a, b)
            self.assertEqual([c.path for c in changes], ["model.safetensors:language_model.model.norm.weight"])


class AtomicWrites(unittest.TestCase):
    """A generator killed at any moment leaves the previous golden intact (or the new one
    complete): never a half-written file or directory."""

    def _kill_at(self, args, delays, out, old_state, new_state, state):
        seen = set()
        for delay in delays:
            proc = subprocess.Popen([sys.executable, str(TOOLS / "make_golden.py"), *args, *NO_ORACLE],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    stdin=subprocess.DEVNULL, env={**os.environ, "CI": ""})
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            self.assertIn(state(out), (old_state, new_state), f"killed after {delay}s")
            seen.add(state(out))
        return seen

    def test_killed_file_generation(self):
        with tempfile.TemporaryDirectory() as tmp:
            out, ref = Path(tmp) / "g.h5", Path(tmp) / "ref.h5"
            generate("--config", str(CONFIG), "--out", str(out), *LM_ONLY)
            generate("--config", str(CONFIG), "--out", str(ref), *LM_ONLY, "--seed", "9")
            old = out.read_bytes()

            def state(p):
                if p.read_bytes() == old:
                    return "old"
                return "new" if compare_files(ref, p) == [] else "broken"
            self._kill_at(["--config", str(CONFIG), "--out", str(out), *LM_ONLY, "--seed", "9",
                           "--reason", "kill test"], [0.3, 1.0, 1.6, 2.2, 2.8], out, "old", "new", state)

    def test_killed_checkpoint_generation(self):
        with tempfile.TemporaryDirectory() as tmp:
            out, ref = Path(tmp) / "ck", Path(tmp) / "ref"
            generate("--config", str(CONFIG), "--make-checkpoint", "q4", "--out", str(out), *FAST)
            # The reference for "the new golden, complete": same inputs; variant defaults to the
            # directory name, so name it like out.
            generate("--config", str(CONFIG), "--make-checkpoint", "q4", "--out", str(ref), *FAST,
                     "--seed", "9", "--variant", out.name)
            old = {p.name: p.read_bytes() for p in out.iterdir()}

            def state(p):
                if {q.name: q.read_bytes() for q in p.iterdir()} == old:
                    return "old"
                return "new" if compare_model_dirs(ref, p) == [] else "broken"
            self._kill_at(["--config", str(CONFIG), "--make-checkpoint", "q4", "--out", str(out),
                           *FAST, "--seed", "9", "--reason", "kill test"],
                          [0.3, 1.0, 1.6, 2.2, 2.8], out, "old", "new", state)


if __name__ == "__main__":
    unittest.main()
