"""Layer 3, the reproduction harness: the profile and bench command lines, the experiments (method comparison,
demo, NLVR v1 benchmark) and the paper's printed numbers. Finds backbones through the backbone registry."""
