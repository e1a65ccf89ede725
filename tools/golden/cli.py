"""The command line of tools/make_golden.py: options, help and exit status."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .checkpoints import CHECKPOINT_KINDS, DEFAULT_CHECKPOINT_SCENARIOS
from .errors import GoldenError, LibraryFinding, UsageError, log
from .generate import generate
from .scenarios import MIN_PROMPT_LENGTH
from .vlm_paths import VLM_EXTRA_GROUPS


HELP_EPILOG = """\
scenarios (--scenarios, default all; L = --prompt-length):
  no_cache             [L]              model(ids), no cache
  full_prefill         [L]              fresh make_prompt_cache, whole prompt; cache_after
  prefix_decode        [L-4,1,1,1,1]    prefix, then the last 4 prompt tokens one at a time
  token_by_token       [1]*L            every prompt token alone
  chunked_prefill_N    generate rule    n = min(N, remaining-1) while more than one token
                                        remains, then the last token alone (any N >= 1;
                                        the defaults are chunked_prefill_16 and _5)
  batch_left_pad       [Lmax,1,1,1]     3 rows of L, L-9, L-17 tokens left-padded with id 0,
                                        BatchKVCache + ArraysCache(left_padding), then 3
                                        decode steps; cache_after right after the prompt
  Every scenario stores per-layer hidden states and final_norm for all positions.
  no_cache and full_prefill store logits at every position, the others only at the
  last position of each call (logits_positions). Cached scenarios store cache_after.

mlx-vlm (path mlx_vlm; docs/golden-format.md, "mlx-vlm paths"; --config goldens only):
  The same weights in mlx-vlm's LanguageModel, built from ModelConfig.from_dict: a nested
  config as it is, a flat one nested under text_config (vision_config {spatial_merge_size: 2}
  unless the config has one). Special token ids: the config's own (top level), else V-5..V-2
  (995..998 for V = 1000); text ids of the vlm prompts avoid them. Every text scenario above
  is run again through it (batch_left_pad with attention_mask on the prompt). --vlm-extras adds
  groups of vlm-only scenarios: cache (cache_after on full_prefill/mlx_vlm), vectors
  (mrope_prefix_decode, mrope_full_decode), sweeps (mrope_chunked_{boundary,later}_step1..5),
  hazards (hazard_stale_positions, hazard_chunked_image_prefill, hazard_batch_without_mask, each
  with an mlx_vlm_correct twin). Also /rope_index/<case>: get_rope_index on a few prompts.

weights and inputs:
  Random float32 weights from numpy default_rng(--seed), drawn in sorted parameter-name
  order: Linear/SwitchLinear N(0,1)*fan_in^-0.5, embedding N(0,1) (x0.1 when tied), norm
  weights 1+0.1*N(0,1), A_log log U(1,16), dt_bias U(-0.5,0.5), conv1d N(0,1)*K^-0.5.
  sanitize() must leave them unchanged; they are loaded with strict=True and stored as
  /weights/<runtime name>. Token ids come from default_rng([seed, 1]).

model directories (mlx-lm paths; mlx-vlm ones too for a directory with a vision_config
mlx-vlm accepts: text schedules, cache, vectors and image prompts through the directory's own
vision tower; float32 ones on the tensors mlx-lm loaded, quantized ones as mlx-vlm's load_model
loads them, bf16 ones on their float32 widening when 4 bytes per parameter fits):
  --from-model DIR          DIR holds config.json and model*.safetensors as mlx-lm saves them
                            (any dtype, affine-quantized or not). Loaded with
                            mlx_lm.utils.load_model; the golden stores no /weights but the
                            directory (relative to --out) and the sha256 of its files, and the
                            reference paths mlx_lm (as loaded) and, per --f32-twin, mlx_lm_f32
                            (after mlx_lm.utils.dequantize_model and float32); root attr
                            reference_paths_json lists them. One model is in memory at a
                            time; a path that runs for more than a few seconds prints its
                            progress per call. Default scenarios: full_prefill,prefix_decode.
  --make-checkpoint KIND    with --config: draw the random weights, then save them as a model
                            directory --out with mlx-lm's own code: bf16 = the convert cast
                            (cast_predicate keeps A_log float32); q4 = quantize_model, affine
                            4-bit/group 64 with lm_head at 8-bit/32 and layer 0 mlp.gate_proj at
                            8-bit/64 as per-module entries (plus the model's own quant_predicate:
                            the MoE router and shared-expert gate at 8-bit/64); then save_model +
                            save_config; hf = the published layout: transformers'
                            Qwen3_5(Moe)ForConditionalGeneration from a nested config with a
                            vision_config, parameters redrawn from the seed, save_pretrained
                            (names, norms and conv unconverted); mlx-q4, mlx-q8, mlx-bf16 =
                            the published layout written shard by shard (names, shapes, dtypes
                            from transformers' class on the meta device), then mlx-vlm's
                            convert (affine 4/8-bit, group 64, float32 scales; or bfloat16).
                            Then load it back with load_model and write the golden into it as
                            parity.h5.

review and history:
  If --out exists, the new golden is first written beside it and compared: datasets bit for
  bit, provenance attributes, model files. Unchanged: the old file is kept, nothing written.
  Changed: what moved is printed per scenario, path and layer (max |diff|), and a reason is
  required: --reason TEXT, or asked for on a terminal. The file's history_json (a JSON list)
  gets {date, reason, generator_sha256, versions, changes} appended; a new file starts with
  one entry (reason "created" unless --reason).

safety:
  Every golden is written to a hidden temp file (or directory) beside --out and renamed into
  place (directories are swapped with renameat2 RENAME_EXCHANGE), so a run killed at any
  point leaves the previous golden intact.
  With CI=true the script refuses to write into the repository's golden/ directory
  (goldens are never regenerated by CI); an --out elsewhere is allowed.

configs (--config; docs/golden-format.md, "Configs"):
  flat      the text config itself: model_type qwen3_5 | qwen3_5_moe and the text fields
  nested    a checkpoint config as published: model_type at the top, text_config, optional
            vision_config (the image prompts' tower; else tools/configs/vision/tiny-vision.json)
            and image_token_id, video_token_id, vision_start_token_id, vision_end_token_id
  Refused, with the file and the key (exit 1, nothing written): a key mlx-vlm's TextConfig
  requires, missing; an unknown model_type; a value of the wrong type (text for a number);
  num_attention_heads not a multiple of num_key_value_heads, linear_num_value_heads not a
  multiple of linear_num_key_heads; num_experts_per_tok > num_experts; special token ids
  outside the vocabulary; vocab_size < 8. Everything else is the libraries' to run.

exit status:
  0  the golden was written (or is unchanged)
  1  error in the input or in the generator's own checks (a refused config, non-finite
     values, a recording that changed the output, a token id outside the vocabulary)
  2  usage: bad options, a path that does not exist, a change without a reason, CI=true
     writing into golden/
  3  library finding: mlx-lm or mlx-vlm raised while building or running the model; one
     stderr line "library finding: <library> <version>: <what it was doing>: <exception>"
  Nothing is written unless the status is 0.
"""


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="make_golden.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Generate a golden HDF5 file (docs/golden-format.md) for one Qwen 3.5 "
                    "variant with the\npinned mlx-lm and mlx-vlm references on the MLX CPU "
                    "backend.",
        epilog=HELP_EPILOG)
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path,
                        help="checkpoint-style config.json, flat or nested (model_type "
                             "qwen3_5 or qwen3_5_moe; see 'configs' below); stored verbatim as "
                             "/config raw_json")
    source.add_argument("--from-model", type=Path, metavar="DIR",
                        help="an MLX model directory (config.json + model*.safetensors); see "
                             "'model directories' below")
    ap.add_argument("--out", required=True, type=Path,
                    help="output .h5 path (with --make-checkpoint: the output directory)")
    ap.add_argument("--make-checkpoint", choices=CHECKPOINT_KINDS, default=None,
                    help="with --config: write a model directory at --out (bf16 or q4 by mlx-lm, "
                         "hf in the published layout by transformers, mlx-q4, mlx-q8 or mlx-bf16: the "
                         "published layout written shard by shard, then mlx-vlm's own convert: affine "
                         "4 or 8 bits at group 64 with float32 scales, or bfloat16) and its golden inside it")
    ap.add_argument("--f32-twin", choices=("auto", "on", "off"), default="auto",
                    help="model directories: also run the model dequantized and widened to float32 "
                         "(path mlx_lm_f32). auto (default): only when the native run is not float32 "
                         "(bf16 weights or bf16 scales) and 4 bytes per parameter fits in half the "
                         "memory; the reason is logged and stored (root attrs f32_twin, f32_twin_reason)")
    ap.add_argument("--seed", type=int, default=1234,
                    help="seed for the random weights and, via a separate stream, the token "
                         "ids (default: 1234)")
    ap.add_argument("--scenarios", default=None,
                    help="comma-separated scenario names (default: all; for model directories "
                         f"{','.join(DEFAULT_CHECKPOINT_SCENARIOS)})")
    ap.add_argument("--prompt-length", type=int, default=None, metavar="L",
                    help=f"prompt length L, at least {MIN_PROMPT_LENGTH} (default: 32; 24 for model "
                         f"directories, to keep committed checkpoint goldens small)")
    ap.add_argument("--vlm-extras", default=None,
                    help="random-weight goldens: besides the text schedules through mlx-vlm, "
                         f"which vlm-only groups to write: a comma list of "
                         f"{', '.join(VLM_EXTRA_GROUPS)}; 'none'; 'off' skips mlx-vlm entirely; "
                         "'auto' (default) looks the variant up in VLM_EXTRAS_BY_VARIANT "
                         "(golden/ size budget), all groups otherwise")
    ap.add_argument("--oracle", choices=("on", "off", "auto"), default=None,
                    help="the float64 oracle path transformers_f64 (transformers on torch CPU; "
                         "needs tools/requirements-torch.txt, make venv-torch). Default on for "
                         "--config and the small --make-checkpoint kinds; auto for --from-model and "
                         "the mlx-* kinds: on when the float64 oracle (about 28 bytes per parameter) "
                         "fits in half this machine's memory, else off, recorded in the golden as not "
                         "applicable here (off by choice is recorded as a coverage gap)")
    ap.add_argument("--variant", default=None,
                    help="variant name stored in the root attrs (default: the config file "
                         "name without .json, or the directory name)")
    ap.add_argument("--candidate", type=Path, default=None, metavar="ADAPTER",
                    help="also run this adapter file (a user's implementation; interface: "
                         "tools/golden_candidates.py) through every scenario it can run and store "
                         "it as the path candidate:<name>; --config goldens only, never into golden/")
    ap.add_argument("--candidate-python", default=None, metavar="PYTHON",
                    help="the interpreter that runs the adapter (its own virtualenv; default: this one)")
    ap.add_argument("--reason", default=None,
                    help="why this regeneration changes the golden; stored in history_json "
                         "(asked for on a terminal when omitted and something changed)")
    args = ap.parse_args(argv)
    model_dir = bool(args.make_checkpoint or args.from_model)
    if args.oracle is None:
        at_scale = args.from_model or (args.make_checkpoint or "").startswith("mlx-")
        args.oracle = "auto" if at_scale else "on"
    if args.oracle == "auto" and not model_dir:
        args.oracle = "on"   # a random-weight config is tiny by construction
    if args.prompt_length is None:
        args.prompt_length = 24 if model_dir else 32
    if args.make_checkpoint and args.config is None:
        ap.error("--make-checkpoint needs --config")
    if model_dir and args.candidate is not None:
        ap.error("--candidate applies to --config goldens (random weights)")
    if model_dir and args.vlm_extras is not None:
        ap.error("--vlm-extras applies to random-weight goldens; a model directory's mlx-vlm "
                 "groups are fixed (see 'model directories' in --help)")
    return args


EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_LIBRARY_FINDING = 0, 1, 2, 3


def main(argv=None) -> int:
    args = parse_args(argv)   # argparse exits with 2 on a bad command line
    try:
        generate(args)
    except LibraryFinding as finding:
        print(finding.line(), file=sys.stderr, flush=True)
        return EXIT_LIBRARY_FINDING
    except UsageError as exc:
        log(f"error: {exc}")
        return EXIT_USAGE
    except GoldenError as exc:
        log(f"error: {exc}")
        return EXIT_ERROR
    return EXIT_OK
