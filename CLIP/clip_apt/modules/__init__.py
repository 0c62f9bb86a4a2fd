from .clip_model import VIT_B16, ClipAttention, build_clip, infer_geometry, load_clip
from .tokenizer import tokenize

__all__ = ["VIT_B16", "ClipAttention", "build_clip", "infer_geometry", "load_clip", "tokenize"]
