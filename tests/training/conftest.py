import os

import pytest
import torch

from shared_apt.training.demo import ensure_demo

# tiny models: one intra-op thread per process is fastest on the 2-core machines these tests target (and with
# two DDP processes avoids oversubscription)
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The demo world (scale 0.25) and its tokenizer, generated once per session (or taken from APT_DEMO_CACHE)."""
    cache = os.environ.get("APT_DEMO_CACHE") or str(tmp_path_factory.mktemp("demo_cache"))
    return ensure_demo(cache, scale=0.25, seed=0)
