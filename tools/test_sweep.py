"""Tests of the random-config sweep (tools/sweep.py): the draws are deterministic, valid and
cover the family; the config classes accept them; the outcome of a config is classified right
from the generator's and the checker's results (fake subprocesses, nothing generated)."""

from __future__ import annotations

import importlib
import json
import sys
import tempfile
import unittest
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
import sweep  # noqa: E402
from sweep import Step, classify, draw, validate  # noqa: E402

MANY = 500


def features(config: dict) -> set[str]:
    """The family's corners a config touches."""
    t = sweep.text_config(config)
    f = {"nested" if "text_config" in config else "flat"}
    if "vision_config" in config:
        f.add("vision")
    if t["vocab_size"] < 128:
        f.add("vocab<128")
    if t["vocab_size"] > 2048:
        f.add("vocab>2048")
    interval, layers = t["full_attention_interval"], t["num_hidden_layers"]
    f.add("interval 1" if interval == 1 else "no attention" if interval > layers else "mixed layers")
    f.add(f"layers {layers}")
    f.add(f"K{t['linear_conv_kernel_dim']}")
    f.add("rope " + sweep.rope_form(t))
    mi = (t.get("rope_parameters") or {}).get("mrope_interleaved")
    if mi is not None:
        f.add(f"mrope_interleaved {mi}")
    f.add("tied" if t["tie_word_embeddings"] else "untied")
    if t["attention_bias"]:
        f.add("attention_bias")
    if t["linear_key_head_dim"] != t["linear_value_head_dim"]:
        f.add("dk != dv")
    if t["linear_num_value_heads"] > t["linear_num_key_heads"]:
        f.add("Hv > Hk")
    if t["num_attention_heads"] > t["num_key_value_heads"]:
        f.add("GQA")
    if config["model_type"] == "qwen3_5_moe":
        e, k = t["num_experts"], t["num_experts_per_tok"]
        f.add("moe")
        f.add("moe k=1" if k == 1 else "moe k=E" if k == e else "moe 1<k<E")
        if e == 1:
            f.add("moe E=1")
        f.add("norm_topk_prob" if t["norm_topk_prob"] else "no norm_topk_prob")
        f.add("shared expert" if t["shared_expert_intermediate_size"] else "no shared expert")
    else:
        f.add("dense")
    return f


class Draws(unittest.TestCase):
    def test_same_seed_same_configs(self):
        for i in range(1, 40):
            self.assertEqual(draw(1, i), draw(1, i))
            self.assertEqual(sweep.generator_seed(1, i), sweep.generator_seed(1, i))
        # The sequence does not depend on N: config i of one seed is always the same.
        self.assertEqual([draw(3, i) for i in range(1, 7)], [draw(3, i) for i in range(1, 51)][:6])
        self.assertNotEqual([draw(1, i) for i in range(1, 11)], [draw(2, i) for i in range(1, 11)])

    def test_every_draw_is_valid_and_the_family_is_covered(self):
        seen: set[str] = set()
        for i in range(1, MANY + 1):
            config = draw(11, i)
            self.assertEqual(validate(config), [], f"draw {i}: {json.dumps(config)}")
            seen |= features(config)
            sweep.describe(config)
        wanted = {"flat", "nested", "vision", "vocab<128", "vocab>2048", "interval 1", "no attention",
                  "mixed layers", *(f"layers {n}" for n in range(1, 9)), *(f"K{k}" for k in range(2, 6)),
                  "rope present", "rope absent", "rope partial", "mrope_interleaved True",
                  "mrope_interleaved False", "tied", "untied", "attention_bias", "dk != dv", "Hv > Hk",
                  "GQA", "dense", "moe", "moe k=1", "moe k=E", "moe 1<k<E", "moe E=1", "norm_topk_prob",
                  "no norm_topk_prob", "shared expert", "no shared expert"}
        self.assertEqual(wanted - seen, set())

    def test_validate_rejects(self):
        good = draw(1, 1)
        t = sweep.text_config(good)
        for key, value in [("num_key_value_heads", t["num_attention_heads"] + 1), ("head_dim", 7),
                           ("linear_num_value_heads", 3 * t["linear_num_key_heads"] + 1),
                           ("linear_conv_kernel_dim", 6), ("vocab_size", 10_000)]:
            bad = json.loads(json.dumps(good))
            sweep.text_config(bad)[key] = value
            self.assertNotEqual(validate(bad), [], key)
        bad = json.loads(json.dumps(good))
        del sweep.text_config(bad)["head_dim"]
        self.assertNotEqual(validate(bad), [])

    def test_legacy_draws_stay_within_the_old_generator(self):
        for i in range(1, 201):
            config = draw(5, i, legacy=True)
            self.assertEqual(validate(config), [])
            t = sweep.text_config(config)
            self.assertNotIn("text_config", config)
            self.assertGreaterEqual(t["vocab_size"], sweep.LEGACY_MIN_VOCAB)
            self.assertTrue(2 <= t["full_attention_interval"] <= t["num_hidden_layers"])
            self.assertNotEqual(sweep.rope_form(t), "partial")
            if config["model_type"] == "qwen3_5_moe":
                self.assertGreater(t["shared_expert_intermediate_size"], 0)


def _libraries():
    try:
        return (importlib.import_module("mlx_lm.utils"), importlib.import_module("mlx_vlm.models.qwen3_5"),
                importlib.import_module("mlx_vlm.models.qwen3_5_moe"))
    except ImportError:
        return None


@unittest.skipIf(_libraries() is None, "mlx-lm / mlx-vlm not installed (make venv)")
class LibrariesAcceptTheDraws(unittest.TestCase):
    """Every draw builds in both libraries, except the two forms the libraries cannot run,
    which the generator reports as library findings: mlx-vlm requires all four rope_parameters
    keys; mlx-lm cannot build a shared expert of width 0 (nn.Linear(0, D) divides by zero)."""

    def test_build(self):
        utils, vlm_dense, vlm_moe = _libraries()
        for i in range(1, 121):
            config = draw(11, i)
            t = sweep.text_config(config)
            no_shared = config["model_type"] == "qwen3_5_moe" and t["shared_expert_intermediate_size"] == 0
            model_class, args_class = utils._get_classes(config=config)
            if no_shared:
                with self.assertRaises(ZeroDivisionError):
                    model_class(args_class.from_dict(json.loads(json.dumps(config))))
            else:
                model_class(args_class.from_dict(json.loads(json.dumps(config))))
            # mlx-vlm reads the checkpoint form; a flat config is nested the way the generator does.
            params = json.loads(json.dumps(config)) if "text_config" in config else {
                "model_type": config["model_type"], "text_config": dict(config),
                "vision_config": {"spatial_merge_size": 2}}
            module = vlm_moe if config["model_type"] == "qwen3_5_moe" else vlm_dense
            if sweep.rope_form(t) == "partial":
                with self.assertRaises(ValueError):
                    module.ModelConfig.from_dict(params)
                continue
            model_config = module.ModelConfig.from_dict(params)
            self.assertNotIsInstance(model_config.text_config, dict, f"draw {i}")
            if not no_shared:
                module.LanguageModel(model_config.text_config, model_config)


# --- classification ----------------------------------------------------------------------------

def row(invariant="golden-lm", verdict="ok", max_abs=0.0, ulp=0, detail=""):
    return {"invariant": invariant, "verdict": verdict, "maxAbs": max_abs, "maxULP": ulp, "detail": detail,
            "tolerance": "exact", "scenario": "s", "pairs": 1, "worstPair": "", "reproduce": ""}


OK_ROWS = [row("golden-lm"), row("golden-vlm"), row("lm-chunked-sweep"),
           row("unified-mrope-prefix-decode", "ok", 3e-6), row("unified-mrope-chunked-sweep", "ok", 6e-6)]
GEN_OK = Step(0)


class Classify(unittest.TestCase):
    def test_generator_exit_3_is_a_library_finding(self):
        o = classify(Step(3, stderr="make_golden: mlx-vlm ...\nlibrary finding: mlx-vlm: ValueError: rope_parameters "
                                    "must contain keys\n"), None, None)
        self.assertEqual(o.status, "FINDING")
        self.assertEqual(o.reason, "mlx-vlm: ValueError: rope_parameters must contain keys")

    def test_generator_exit_3_without_the_line_is_a_failure(self):
        self.assertEqual(classify(Step(3, stderr="Traceback\nboom\n"), None, None).status, "FAIL")

    def test_generator_error_is_a_failure_with_its_last_lines(self):
        o = classify(Step(2, stderr="a\nb\nmake_golden: error: mlx-lm could not build the model\n"), None, None)
        self.assertEqual(o.status, "FAIL")
        self.assertIn("generator exit 2: make_golden: error: mlx-lm could not build", o.reason)
        self.assertIn("a\nb\n", o.log + "\n")

    def test_all_ok(self):
        o = classify(GEN_OK, Step(0), OK_ROWS)
        self.assertEqual((o.status, len(o.passed), len(o.failed), len(o.apart)), ("PASS", 5, 0, 0))
        self.assertEqual(o.worst(), "unified-mrope-chunked-sweep max abs 6e-06")   # = library, not exact

    def test_a_fail_row_fails_the_config(self):
        rows = OK_ROWS + [row("lm-batch-vs-single", "FAIL", 2.5e-6, 40, "3 of 3 failing")]
        o = classify(GEN_OK, Step(1), rows)
        self.assertEqual(o.status, "FAIL")
        self.assertIn("lm-batch-vs-single FAIL max abs 2.5e-06, 40 ulp", o.worst())
        # Even when the checker's exit status said otherwise.
        self.assertEqual(classify(GEN_OK, Step(0), rows).status, "FAIL")

    def test_error_and_nondeterministic_rows_fail(self):
        for verdict in ("ERROR", "NONDETERMINISTIC", "SOMETHING NEW"):
            o = classify(GEN_OK, Step(1), OK_ROWS + [row("golden-vlm", verdict, None)])
            self.assertEqual(o.status, "FAIL", verdict)

    def test_every_invariant_counts(self):
        # NOT_COUNTED is empty since the MRoPE invariants equal the library's own distance.
        self.assertEqual(sweep.NOT_COUNTED, ())
        rows = [row("golden-lm"), row("unified-mrope-chunked-sweep", "FAIL", 2e-4)]
        o = classify(GEN_OK, Step(1), rows)
        self.assertEqual((o.status, len(o.apart)), ("FAIL", 0))

    def test_the_oracle_invariant_without_an_oracle_is_expected_not_listed(self):
        rows = OK_ROWS + [row("oracle-error-ratio", "NOT RUN", None, detail="no golden given holds what this invariant needs")]
        o = classify(GEN_OK, Step(1), rows)
        self.assertEqual((o.status, len(o.not_run), len(o.without_oracle)), ("PASS", 0, 1))

    def test_not_run_rows_are_counted_apart(self):
        rows = [row("golden-lm"), row("unified-image-vs-vlm", "NOT RUN", None, detail="nothing to compare")]
        o = classify(GEN_OK, Step(1), rows)
        self.assertEqual((o.status, len(o.not_run), len(o.passed)), ("PASS", 1, 1))

    def test_unexplained_checker_status_fails(self):
        self.assertEqual(classify(GEN_OK, Step(1, "14 passed, 0 failed"), OK_ROWS).status, "FAIL")
        self.assertEqual(classify(GEN_OK, Step(3, "STALE"), OK_ROWS).status, "FAIL")
        self.assertEqual(classify(GEN_OK, Step(64, stderr="usage"), OK_ROWS).status, "FAIL")
        self.assertEqual(classify(GEN_OK, Step(1, "could not read"), None).status, "FAIL")
        self.assertEqual(classify(GEN_OK, Step(0), []).status, "FAIL")  # nothing counted ran

    def test_checker_exit_4_passes_with_findings(self):
        o = classify(GEN_OK, Step(4), OK_ROWS + [row("unified-text-vs-lm", "library finding", 1e-3)])
        self.assertEqual((o.status, len(o.findings)), ("PASS", 1))


class RunConfig(unittest.TestCase):
    """run_config end to end with a fake runner in place of the generator and the checker."""

    def run_with(self, gen: Step, check_rc: int, rows):
        tmp = Path(self.enterContext(tempfile.TemporaryDirectory()))
        calls = []

        def runner(cmd, timeout):
            cmd = [str(c) for c in cmd]
            calls.append(cmd)
            if "--config" in cmd:
                Path(cmd[cmd.index("--out") + 1]).write_bytes(b"golden")
                return gen
            report = Path(cmd[cmd.index("--report-dir") + 1])
            report.mkdir(parents=True)
            if rows is not None:
                (report / "parity.json").write_text(json.dumps(rows))
            return Step(check_rc, "table\n14 passed, 0 failed\n")

        s = sweep.Settings(seed=4, work=tmp / "work", reports=tmp / "reports", checker=Path("qwen-parity"),
                           generator=TOOLS / "make_golden.py", requirements=TOOLS / "requirements.txt",
                           python=sys.executable, keep=False, timeout=10)
        config = draw(4, 2)
        return s, calls, sweep.run_config(s, 2, config, runner=runner)

    def test_pass_saves_nothing_and_deletes_the_golden(self):
        s, calls, r = self.run_with(GEN_OK, 0, OK_ROWS)
        self.assertEqual(r.outcome.status, "PASS")
        self.assertIsNone(r.saved)
        self.assertFalse(any(s.work.rglob("*.h5")))
        gen_cmd, check_cmd = calls
        self.assertEqual(gen_cmd[gen_cmd.index("--seed") + 1], str(sweep.generator_seed(4, 2)))
        self.assertIn("--generator", check_cmd)
        self.assertIn("--requirements", check_cmd)

    def test_failure_is_saved_with_its_reproduce_commands(self):
        s, calls, r = self.run_with(GEN_OK, 1, OK_ROWS + [row("golden-vlm", "FAIL", 1e-3)])
        self.assertEqual(r.outcome.status, "FAIL")
        record = json.loads(r.saved.read_text())
        config = json.loads((s.reports / "sweep-s4-002.json").read_text())
        self.assertEqual(config, draw(4, 2))
        self.assertEqual(record["outcome"], "FAIL")
        self.assertEqual(record["failed_rows"][0]["invariant"], "golden-vlm")
        golden_cmd, check_cmd = record["reproduce"]
        self.assertRegex(golden_cmd, r"^make golden CONFIG=\S+/sweep-s4-002\.json OUT=\S+/sweep-s4-002\.h5 SEED=\d+ ORACLE=off$")
        self.assertNotIn("OUT=golden/", golden_cmd)
        self.assertTrue(check_cmd.startswith("make parity GOLDEN="))

    def test_library_finding_is_saved_and_not_checked(self):
        s, calls, r = self.run_with(Step(3, stderr="library finding: mlx-lm: ZeroDivisionError\n"), 0, None)
        self.assertEqual(r.outcome.status, "FINDING")
        self.assertEqual(len(calls), 1)
        self.assertTrue(r.saved.name.endswith(".result.json"))

    def test_summary_counts(self):
        _, _, passed = self.run_with(GEN_OK, 0, OK_ROWS)
        s, _, failed = self.run_with(GEN_OK, 1, OK_ROWS + [row("golden-vlm", "FAIL", 1e-3)])
        _, _, finding = self.run_with(Step(3, stderr="library finding: x\n"), 0, None)
        text = "\n".join(sweep.summary(s, [passed, failed, finding], 12.0))
        self.assertIn("3 configs in 0:12: 1 passed, 1 failed, 1 library findings", text)
        self.assertIn("unified-mrope-chunked-sweep (exact): 2 of 2 configs, max abs 6e-06", text)


if __name__ == "__main__":
    unittest.main()
