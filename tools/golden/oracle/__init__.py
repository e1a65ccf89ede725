"""The float64 oracle of a golden: transformers' canonical Qwen 3.5 on torch CPU in float64.

capture() loads the golden's own weights into transformers' Qwen3_5ForCausalLM /
Qwen3_5MoeForCausalLM (and, for image prompts, the ConditionalGeneration class with the vision
tower), runs every scenario the MLX paths ran, and returns what write() stores as the path
`transformers_f64` of each scenario plus the /oracle group (docs/golden-format.md, "The float64
oracle").

Nothing here re-implements the model. The oracle is transformers' own code with three settings
that make it a float64 reference:
  * the modules are built and run in float64 (parameters, buffers, activations);
  * every place where transformers' code asks for float32 (RMSNorm's x.float(), softmax's
    dtype=torch.float32, the delta rule's .to(torch.float32), the rotary tables, ...) runs in
    float64 instead: a TorchFunctionMode swaps the dtype at the call and records the site, and
    any op that still returns a float32 tensor aborts the run;
  * where transformers' defaults differ from what the MLX libraries ran (the rope resolution of
    a config without rope_parameters, above all), the oracle is given the libraries' effective
    values and the golden records both (/oracle defaults_json).
torch runs on one thread with MKL's conditional numerical reproducibility and ATen's portable
kernels, so that a regeneration gives the same bits on another x86 machine (make golden-check).

  torch_env  the pinned environment, float64 in place of transformers' float32 requests
  model      transformers' config and models given the libraries' values; the weight mapping
  calls      the scenarios as transformers calls, run with hooks
  capture    the runs, their checks against the MLX paths, /oracle
"""

from .capture import MODEL_DIR_PATHS, PATH, Capture, capture, write
from .torch_env import import_torch
from .errors import OracleError

__all__ = ["MODEL_DIR_PATHS", "PATH", "Capture", "OracleError", "capture", "import_torch", "write"]
