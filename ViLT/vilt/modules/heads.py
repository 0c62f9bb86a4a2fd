"""Upstream module path vilt.modules.heads; the heads live once in shared_apt.vl.heads (METER uses the same)."""
from shared_apt.vl.heads import ITMHead, MLMHead, MPPHead, Pooler, classifier, init_weights  # noqa: F401
