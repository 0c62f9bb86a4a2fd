import os
import sys
import warnings

import pytest

sys.path.insert(0, os.path.dirname(__file__))
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The demo world (scale 0.25) and its tokenizer, generated once per session (or taken from APT_DEMO_CACHE);
    used by tests/training and tests/meter."""
    from shared_apt.vl.training.demo import ensure_demo

    cache = os.environ.get("APT_DEMO_CACHE") or str(tmp_path_factory.mktemp("demo_cache"))
    return ensure_demo(cache, scale=0.25, seed=0)
