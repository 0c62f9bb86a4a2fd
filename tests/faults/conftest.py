import os
import sys

import torch

# tiny models: one intra-op thread per process is fastest on the 2-core machines these tests target
torch.set_num_threads(1)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training"))
