#!/usr/bin/env python3
"""Python side of `qwen-parity bench`: the shared random weights, and the peer engines.

  tools/bench.py weights --config tools/bench/qwen3.5-0.8b-text.json --out bench-data/qwen3.5-0.8b.h5
  tools/bench.py run --engine mlx   --data bench-data/qwen3.5-0.8b.h5 [--lengths 16,128,512] ...
  tools/bench.py run --engine torch --data bench-data/qwen3.5-0.8b.h5 ...

`weights` writes one HDF5 file in the golden layout (docs/golden-format.md: root format_version,
/config raw_json + effective_json, /weights/<mlx-lm runtime name>, /inputs/token_ids), so the Swift
side loads it with the same GoldenFile code as the goldens. Values follow the golden generator's
initialisation rules (norms around 1, A_log, dt_bias, fan-in scaled linears, tied embedding rows of
norm ~1), drawn from a fixed seed.

`run` times one engine in this process and prints one JSON object as its last stdout line:
prefill tokens/s for each length (one forward over L prompt tokens from an empty cache; hidden
states for every token, logits for the last only, as mlx-lm's generate_step and transformers'
generate need), decode tokens/s (greedy, one token per call, after a prefill of the first
`--decode-context` prompt tokens), each over `--repeats` runs, plus this process's peak RSS and
the BLAS it ran with. Engines:

  mlx    mlx-lm's Qwen 3.5 text model on the MLX CPU backend, built and loaded as mlx_lm does
         (golden.lm_paths.build_model), weights loaded strictly.
  torch  transformers' Qwen3_5ForCausalLM on torch CPU; the runtime weights are converted to the
         Hugging Face layout (norms minus 1, conv1d [C,1,K], names without language_model.).
  mlx-q4 mlx-lm on a quantized model directory (--model-dir), loaded by mlx_lm.utils.load_model
         itself; the prompt still comes from --data.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parent
SEED = 20260
PROMPT_TOKENS = 512
CHECK_TOKENS = 16     # the logits check: last logits of a prefill of this many prompt tokens,
CHECK_SAMPLES = 64    # sampled at this many evenly spaced vocabulary entries
RUNTIME_PREFIX = "language_model."


def log(msg: str) -> None:
    print(f"bench.py: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Weights


def write_weights(config_path: Path, out: Path, seed: int) -> None:
    import h5py
    import mlx.core as mx
    from mlx.utils import tree_flatten

    sys.path.insert(0, str(TOOLS))
    from golden.configs import effective_config, read_config
    from golden.lm_paths import build_model, init_parameter
    from golden.provenance import versions

    mx.set_default_device(mx.cpu)
    spec = read_config(config_path)
    raw_json = spec.raw_json
    model = build_model(spec.lm_config())  # parameters stay lazy: nothing of size is allocated here
    effective = effective_config(model)
    tied = bool(model.language_model.args.tie_word_embeddings)
    shapes = {k: tuple(v.shape) for k, v in tree_flatten(model.parameters())}
    del model
    rng = np.random.default_rng(seed)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    out.parent.mkdir(parents=True, exist_ok=True)
    started, total = time.monotonic(), 0
    with h5py.File(tmp, "w") as f:
        f.attrs["format_version"] = 1
        f.attrs["backend"] = "random-weights"
        f.attrs["dtype"] = "float32"
        f.attrs["variant"] = config_path.stem
        f.attrs["weights_seed"] = seed
        f.attrs["generator"] = "tools/bench.py weights"
        f.attrs["generator_sha256"] = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
        f.attrs["scenarios_json"] = "[]"
        f.attrs["history_json"] = "[]"
        f.attrs["versions_json"] = json.dumps(versions())
        g = f.create_group("config")
        g.attrs["raw_json"] = raw_json
        g.attrs["effective_json"] = json.dumps(effective)
        w = f.create_group("weights")
        for name in sorted(shapes):  # one tensor in memory at a time
            value = init_parameter(name, shapes[name], rng, tied).astype(np.float32)
            w.create_dataset(name, data=value)
            total += value.nbytes
        prompt = np.random.default_rng([seed, 1]).integers(
            0, effective["vocab_size"], size=(1, PROMPT_TOKENS), dtype=np.int64)
        f.create_group("inputs").create_dataset("token_ids", data=prompt.astype(np.int32))
    os.replace(tmp, out)
    log(f"wrote {out}: {len(shapes)} tensors, {total / 1e9:.2f} GB of float32 weights "
        f"in {time.monotonic() - started:.0f} s")


# ---------------------------------------------------------------------------------------------
# Measuring


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def loaded_blas() -> dict:
    """Which BLAS libraries this process mapped, and OpenBLAS's core and threads if one is."""
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            if ("blas" in path or "mkl" in path) and path.startswith("/"):
                libs.add(path)
    info = {"libraries": sorted(libs)}
    for path in sorted(libs):
        if "openblas" in path:
            try:
                lib = ctypes.CDLL(path)
                lib.openblas_get_corename.restype = ctypes.c_char_p
                lib.openblas_get_config.restype = ctypes.c_char_p
                info["openblas_core"] = lib.openblas_get_corename().decode()
                info["openblas_threads"] = lib.openblas_get_num_threads()
                info["openblas_config"] = lib.openblas_get_config().decode()
            except (OSError, AttributeError):
                pass
    return info


def measure(engine, prompt: np.ndarray, lengths: list[int], decode_steps: int,
            decode_context: int, repeats: int) -> dict:
    engine.prefill(prompt[:8])  # warm-up: first-touch allocations, lazy initialisation
    engine.decode(prompt[:8], 2)
    check = logits_check(engine.last_logits(prompt[:CHECK_TOKENS]))
    prefill = {}
    for L in lengths:
        rates = []
        for _ in range(repeats):
            seconds = engine.prefill(prompt[:L])
            rates.append(L / seconds)
        prefill[str(L)] = rates
        log(f"{engine.name}: prefill {L}: {statistics.median(rates):.2f} tok/s")
    decode = []
    for _ in range(repeats):
        seconds = engine.decode(prompt[:decode_context], decode_steps)
        decode.append(decode_steps / seconds)
    log(f"{engine.name}: decode: {statistics.median(decode):.2f} tok/s")
    return {"prefill": prefill, "decode": decode, "check": check}


def logits_check(logits: np.ndarray) -> dict:
    """A fingerprint of one engine's last logits that the report compares across engines
    (loosely: the engines round differently, only gross errors show), and the SHA-256 of all of
    them as little-endian float32, for engines that should agree bit for bit."""
    logits = np.asarray(logits, dtype=np.float32).reshape(-1)
    stride = max(1, logits.size // CHECK_SAMPLES)
    return {"tokens": CHECK_TOKENS, "argmax": int(logits.argmax()),
            "stride": stride, "sample": [float(x) for x in logits[::stride][:CHECK_SAMPLES]],
            "count": int(logits.size), "sha256": hashlib.sha256(logits.astype("<f4").tobytes()).hexdigest()}


class MLXEngine:
    name = "mlx"

    def __init__(self, data: Path):
        import h5py
        import mlx.core as mx
        from mlx_lm.models.cache import make_prompt_cache

        sys.path.insert(0, str(TOOLS))
        from golden.lm_paths import build_model

        mx.set_default_device(mx.cpu)
        self.mx, self.make_prompt_cache = mx, make_prompt_cache
        with h5py.File(data, "r") as f:
            config = json.loads(f["config"].attrs["raw_json"])
            self.model = build_model(config)
            weights = [(k, mx.array(f["weights"][k][...])) for k in f["weights"]]
        self.model.load_weights(weights, strict=True)
        del weights
        mx.eval(self.model.parameters())
        self.lm = self.model.language_model
        self.tied = bool(self.lm.args.tie_word_embeddings)
        import mlx_lm
        self.description = f"mlx-lm {mlx_lm.__version__} on mlx {mx.__version__} (cpu)"

    def _logits_last(self, ids, cache):
        h = self.lm.model(ids, cache)[:, -1:, :]
        return self.lm.model.embed_tokens.as_linear(h) if self.tied else self.lm.lm_head(h)

    def _state(self, cache):
        return [a for c in cache for a in c.state if a is not None]

    def last_logits(self, tokens: np.ndarray) -> np.ndarray:
        logits = self._logits_last(self.mx.array(tokens[None, :]), self.make_prompt_cache(self.model))
        return np.array(logits[0, -1].astype(self.mx.float32))

    def prefill(self, tokens: np.ndarray) -> float:
        mx = self.mx
        cache = self.make_prompt_cache(self.model)
        ids = mx.array(tokens[None, :])
        start = time.perf_counter()
        logits = self._logits_last(ids, cache)
        mx.eval(logits, self._state(cache))
        return time.perf_counter() - start

    def decode(self, context: np.ndarray, steps: int) -> float:
        mx = self.mx
        cache = self.make_prompt_cache(self.model)
        logits = self._logits_last(mx.array(context[None, :]), cache)
        mx.eval(logits, self._state(cache))
        start = time.perf_counter()
        for _ in range(steps):
            token = mx.argmax(logits[:, -1, :], axis=-1)
            logits = self._logits_last(token[:, None], cache)
            mx.eval(logits)
        return time.perf_counter() - start


class MLXDirectoryEngine(MLXEngine):
    """mlx-lm on a model directory (a quantized checkpoint), loaded by mlx-lm's own loader."""

    name = "mlx-q4"

    def __init__(self, model_dir: Path):
        import mlx.core as mx
        import mlx_lm
        from mlx_lm.models.cache import make_prompt_cache
        from mlx_lm.utils import load_model

        mx.set_default_device(mx.cpu)
        self.mx, self.make_prompt_cache = mx, make_prompt_cache
        self.model, config = load_model(Path(model_dir))
        mx.eval(self.model.parameters())
        self.lm = self.model.language_model
        self.tied = bool(self.lm.args.tie_word_embeddings)
        q = config.get("quantization", {})
        self.description = (f"mlx-lm {mlx_lm.__version__} on mlx {mx.__version__} (cpu), "
                            f"{q.get('bits', '?')}-bit/group {q.get('group_size', '?')} model directory")


def directory_bytes(model_dir: Path) -> int:
    """Bytes of the weight files: what a decode step reads once."""
    return sum(p.stat().st_size for p in Path(model_dir).glob("model*.safetensors"))


class TorchEngine:
    name = "torch"

    def __init__(self, data: Path, threads: int):
        import h5py
        import torch
        import transformers
        from transformers.models.qwen3_5 import modeling_qwen3_5 as hf
        from transformers.models.qwen3_5.configuration_qwen3_5 import Qwen3_5TextConfig

        torch.set_num_threads(threads)
        self.torch = torch
        with h5py.File(data, "r") as f:
            raw = json.loads(f["config"].attrs["raw_json"])
            fields = {k: v for k, v in raw.items() if k != "model_type"}
            config = Qwen3_5TextConfig(**fields)
            config._attn_implementation = "sdpa"
            with torch.device("meta"):
                self.model = hf.Qwen3_5ForCausalLM(config)
            state = {}
            for name in f["weights"]:
                state.update(self._to_hf(name, f["weights"][name][...]))
        if config.tie_word_embeddings:
            state["lm_head.weight"] = state["model.embed_tokens.weight"]
        missing, unexpected = self.model.load_state_dict(state, strict=False, assign=True)
        if missing or unexpected:
            raise SystemExit(f"bench.py: torch: weights do not match the model: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}")
        del state
        self._materialise_buffers(config)
        self.model.eval()
        self.description = (f"transformers {transformers.__version__} on torch {torch.__version__} "
                            f"(cpu, {torch.get_num_threads()} threads)")

    def _materialise_buffers(self, config) -> None:
        """Rebuilds on the CPU every module whose buffers the meta-device build left empty.

        Building on meta keeps the 3 GB random initialisation out of memory, but the state dict
        carries no non-persistent buffers (the rotary embedding's inv_freq), so they stay meta and
        the first forward fails with "Cannot copy out of meta tensor". Those modules compute their
        buffers from the config alone.
        """
        for owner_name, owner in list(self.model.named_modules()):
            for child_name, child in list(owner.named_children()):
                if any(b.is_meta for b in child.buffers(recurse=False)):
                    if any(p.is_meta for p in child.parameters(recurse=False)):
                        raise SystemExit(f"bench.py: torch: {owner_name}.{child_name} has parameters "
                                         "the weights do not set")
                    setattr(owner, child_name, type(child)(config=config))
        left = [n for n, t in list(self.model.named_parameters()) + list(self.model.named_buffers()) if t.is_meta]
        if left:
            raise SystemExit(f"bench.py: torch: still on the meta device after loading: {left[:5]}")

    def _to_hf(self, name: str, value: np.ndarray) -> dict:
        torch = self.torch
        if not name.startswith(RUNTIME_PREFIX):
            raise SystemExit(f"bench.py: torch: unexpected weight name {name}")
        hf_name = name[len(RUNTIME_PREFIX):]
        if hf_name.endswith("conv1d.weight"):      # [C, K, 1] -> [C, 1, K]
            value = np.ascontiguousarray(np.moveaxis(value, 2, 1))
        if hf_name.endswith((".input_layernorm.weight", ".post_attention_layernorm.weight",
                             "model.norm.weight", ".q_norm.weight", ".k_norm.weight")):
            value = value - np.float32(1)           # HF stores zero-centred norms and adds 1
        return {hf_name: torch.from_numpy(value)}

    def last_logits(self, tokens: np.ndarray) -> np.ndarray:
        ids = self.torch.from_numpy(tokens[None, :].astype(np.int64))
        with self.torch.inference_mode():
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        return out.logits[0, -1].float().numpy()

    def prefill(self, tokens: np.ndarray) -> float:
        torch = self.torch
        ids = torch.from_numpy(tokens[None, :].astype(np.int64))
        with torch.inference_mode():
            start = time.perf_counter()
            self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
            return time.perf_counter() - start

    def decode(self, context: np.ndarray, steps: int) -> float:
        torch = self.torch
        ids = torch.from_numpy(context[None, :].astype(np.int64))
        with torch.inference_mode():
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
            start = time.perf_counter()
            for _ in range(steps):
                token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
                out = self.model(input_ids=token, past_key_values=out.past_key_values,
                                 use_cache=True, logits_to_keep=1)
            return time.perf_counter() - start


def run(args) -> int:
    import h5py

    with h5py.File(args.data, "r") as f:
        prompt = np.array(f["inputs"]["token_ids"][0], dtype=np.int32)
        weight_bytes = sum(f["weights"][k].size * 4 for k in f["weights"])
    lengths = [int(x) for x in args.lengths.split(",")]
    if max(lengths) > len(prompt) or args.decode_context > len(prompt):
        raise SystemExit(f"bench.py: the data file holds a {len(prompt)}-token prompt")
    if args.engine == "mlx-q4":
        if args.model_dir is None:
            raise SystemExit("bench.py: --engine mlx-q4 needs --model-dir")
        weight_bytes = directory_bytes(args.model_dir)
    started = time.monotonic()
    try:
        if args.engine == "mlx":
            engine = MLXEngine(args.data)
        elif args.engine == "mlx-q4":
            engine = MLXDirectoryEngine(args.model_dir)
        else:
            engine = TorchEngine(args.data, args.threads)
    except ImportError as exc:
        reason = f"cannot import ({exc})"
        if args.engine == "torch":
            reason = (f"torch is not in tools/.venv ({exc}); 'make venv-torch' installs the pinned "
                      "CPU-only torch and transformers (tools/requirements-torch.txt)")
        print(json.dumps({"engine": args.engine, "skipped": reason}))
        return 0
    load_seconds = time.monotonic() - started
    log(f"{engine.name}: {engine.description}; loaded in {load_seconds:.1f} s")
    result = measure(engine, prompt, lengths, args.decode_steps, args.decode_context, args.repeats)
    result.update({
        "engine": args.engine, "description": engine.description, "load_seconds": load_seconds,
        "weights_bytes": weight_bytes, "peak_rss_bytes": peak_rss_bytes(), "blas": loaded_blas(),
        "python": platform.python_version(),
        "env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS",
                                             "OMP_NUM_THREADS", "LD_PRELOAD") if k in os.environ},
    })
    print(json.dumps(result), flush=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    w = sub.add_parser("weights", help="write the shared random weights")
    w.add_argument("--config", type=Path, default=TOOLS / "bench" / "qwen3.5-0.8b-text.json")
    w.add_argument("--out", type=Path, required=True)
    w.add_argument("--seed", type=int, default=SEED)
    r = sub.add_parser("run", help="time one engine; prints a JSON line")
    r.add_argument("--engine", choices=["mlx", "mlx-q4", "torch"], required=True)
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--model-dir", type=Path, help="the model directory of --engine mlx-q4")
    r.add_argument("--lengths", default="16,128,512")
    r.add_argument("--decode-steps", type=int, default=32)
    r.add_argument("--decode-context", type=int, default=16)
    r.add_argument("--repeats", type=int, default=3)
    r.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch intra-op threads (default: all cores)")
    args = ap.parse_args(argv)
    if args.command == "weights":
        write_weights(args.config, args.out, args.seed)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
