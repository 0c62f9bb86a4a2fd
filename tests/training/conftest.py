import torch

# tiny models: one intra-op thread per process is fastest on the 2-core machines these tests target (and with
# two DDP processes avoids oversubscription). The `demo` fixture is in tests/conftest.py (shared with tests/meter).
torch.set_num_threads(1)
