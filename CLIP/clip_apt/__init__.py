"""CLIP (OpenAI weights on open_clip's modules) with the prompt-learning methods of the UPT and APT papers.

    import clip_apt, shared_apt
    model = clip_apt.load_clip("ViT-B-16.pt")                 # OpenAI TorchScript archive or state dict
    ids = clip_apt.tokenize(["a photo of a dog."])           # LongTensor [1, 77]
    model.encode_text(ids), model.encode_image(images), model.logit_scale
    shared_apt.apply(model, "coop", n_ctx=4, ctx_init="a photo of a")
    logits = model.classify(images, classnames)              # [B, K]
"""
from .modules import VIT_B16, build_clip, infer_geometry, load_clip, tokenize

__all__ = ["VIT_B16", "build_clip", "infer_geometry", "load_clip", "tokenize"]
