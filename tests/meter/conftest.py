import torch

# tiny models: one intra-op thread per process is fastest on the 2-core machines these tests target
torch.set_num_threads(1)
