"""End-to-end method comparisons on small data: pre-train a tiny backbone, fine-tune it with every tuning method,
and tabulate the task score next to the methods' cost (``compare``). Entry points: ``python -m
shared_apt.harness.experiments.demo`` (demo world VQA, ``script/demo.sh``) and ``python -m shared_apt.harness.experiments.nlvr1``
(NLVR v1 as true/false VQA, ``script/nlvr1_bench.sh``)."""
