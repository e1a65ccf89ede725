"""The golden generator behind tools/make_golden.py, one module per concern.

  errors       the three ways a run ends badly (input, usage, library finding) and log()
  provenance   versions, the generator's manifest hash, the root attributes
  configs      reading and validating a config (flat or nested), effective_json
  scenarios    the scenario and mlx-vlm call-schedule definitions (no library calls)
  inputs       token ids of the prompts
  recording    recording the library's own forward pass; run results
  lm_paths     mlx-lm: building the model, random weights, running the text scenarios
  vlm_paths    mlx-vlm: the LanguageModel on the same weights, MRoPE vectors, sweeps, hazards
  vision       image prompts through mlx-vlm's whole model (/vision)
  probes       sub-steps inside one layer of each kind (/probes)
  checkpoints  MLX model directories: making them and goldens from them
  writing      the HDF5 layout, hard links for repeats, atomic publishing
  review       comparing with the golden being replaced; history_json
  generate     one run: a golden from a config or a model directory
  cli          the command line (options, help, exit status)

Layout of the files written: docs/golden-format.md.
"""
