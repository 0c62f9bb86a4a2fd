"""Numbers printed in the APT paper (AAAI 2024) tables, for side-by-side comparison (docs/accounting.md). Data, not code:
the project computes its own values and prints these beside them."""

# "Updated Parameter" (M) and "Additional FLOPs" (G) columns of Tables 1-2, per backbone and method.
PARAMS_M = {
    "vilt-b32": {"full": 115.43, "classifier": None, "shallow_prompt": 0.15, "deep_prompt": 1.84, "lora": 0.15,
                 "adapter": 3.56, "scaled_pa": 1.80, "apt": 1.92},
    "meter-b": {"full": 323.31, "classifier": None, "shallow_prompt": 0.30, "deep_prompt": 3.68, "lora": 0.29,
                "adapter": 5.34, "scaled_pa": 3.82, "apt": 3.83},
}
GFLOPS = {
    "vilt-b32": {"full": 0.0, "classifier": 0.0, "shallow_prompt": 19.53, "deep_prompt": 5.14, "lora": 0.0,
                 "adapter": 0.86, "scaled_pa": 0.44, "apt": 0.91},
    "meter-b": {"full": 0.0, "classifier": 0.0, "shallow_prompt": 28.71, "deep_prompt": 13.05, "lora": 0.0,
                "adapter": 1.64, "scaled_pa": 1.12, "apt": 2.31},
}
# Table 3 (ViLT ablation): (num_prompts, rank or variant) -> updated parameters (M).
TABLE3_PARAMS_M = {(200, "identity"): 1.84, (200, "dense"): 8.93, (100, 4): 0.99, (150, 4): 1.46, (400, 4): 3.76,
                   (400, 16): 3.98, (200, 4): 1.92}
# Tables 1-2 accuracies: VQA test-dev, NLVR2 test-P, F30K IR R@1, TR R@1.
ACCURACY = {
    "vilt-b32": {"full": (71.26, 76.13, 64.40, 83.50), "classifier": (65.75, 66.08, 57.42, 78.00),
                 "shallow_prompt": (66.47, 66.47, 55.92, 74.80), "deep_prompt": (69.30, 73.34, 58.64, 79.50),
                 "lora": (68.44, 72.77, 57.44, 77.70), "scaled_pa": (70.40, 75.13, 61.88, 79.00),
                 "adapter": (70.85, 75.51, 62.68, 81.40), "apt": (70.94, 75.92, 63.26, 81.60)},
    "meter-b": {"full": (77.43, 83.05, 82.22, 94.30), "classifier": (69.93, 73.23, 78.80, 89.00),
                "shallow_prompt": (68.51, 65.69, 74.20, 88.60), "deep_prompt": (67.57, 65.79, 70.90, 87.70),
                "lora": (74.00, 78.82, 79.86, 92.60), "adapter": (74.70, 79.93, 80.38, 91.90),
                "scaled_pa": (75.36, 79.86, 80.30, 91.80), "apt": (75.45, 80.97, 80.88, 92.90)},
}
