"""Tiny Stable Diffusion components from config objects (random weights, no download): the same diffusers /
transformers classes as SD v1.x at a few hundred thousand parameters, for tests and the CPU demo.

The tokenizer is a word-level ``PreTrainedTokenizerFast`` over a given vocabulary (CLIP's special tokens, lower
case, padding to 77 with ``<|endoftext|>`` like CLIP's), so the pipeline code path is the real one."""
from __future__ import annotations

import os
from typing import Iterable

BOS, EOS, UNK = "<|startoftext|>", "<|endoftext|>", "<unk>"
MAX_LEN = 77


def word_tokenizer(words: Iterable[str], max_length: int = MAX_LEN):
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {UNK: 0, BOS: 1, EOS: 2}
    for w in sorted({w.lower() for w in words}):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A {EOS}", special_tokens=[(BOS, 1), (EOS, 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=EOS,
                                   model_max_length=max_length)


def unet(width: int = 32, cross_dim: int = 32, sample_size: int = 16, layers: int = 1, heads: int = 8,
         transformer_layers: int = 1):
    """Two resolutions (width, 2*width); transformer blocks in the low-resolution down block, the mid block and the
    first up block, ``heads`` heads. ``transformer_layers`` stacked ``BasicTransformerBlock`` s per attention
    (diffusers' ``transformer_layers_per_block``): 1 gives 4 blocks (8 Attention modules), 2 gives 8, 3 gives 12."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=layers,
        block_out_channels=(width, 2 * width), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=cross_dim, attention_head_dim=heads,
        norm_num_groups=8, transformer_layers_per_block=transformer_layers)


def vae(width: int = 16, sample_size: int = 32):
    """Two encoder stages: image x 2 -> 4-channel latent."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=[width, 2 * width],
                         down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                         latent_channels=4, norm_num_groups=8, sample_size=sample_size)


def text_encoder(vocab_size: int, hidden: int = 32, layers: int = 2):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=2, max_position_embeddings=MAX_LEN, hidden_act="quick_gelu", bos_token_id=1,
        eos_token_id=2, pad_token_id=2))


def scheduler():
    """SD v1.x's training noise schedule (1000 steps, scaled-linear betas 0.00085..0.012, epsilon prediction)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         clip_sample=False, prediction_type="epsilon", steps_offset=1)


def pipeline(words: Iterable[str], width: int = 32, image_size: int = 32, seed: int = 0):
    """A StableDiffusionPipeline of tiny random components (``image_size`` px images, latent image_size / 2); its
    sampler is DDIM on SD's noise schedule (training uses DDPM with the same schedule)."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    torch.manual_seed(seed)
    tok = word_tokenizer(words)
    return StableDiffusionPipeline(
        vae=vae(sample_size=image_size), text_encoder=text_encoder(len(tok)), tokenizer=tok,
        unet=unet(width=width, cross_dim=32, sample_size=image_size // 2),
        scheduler=DDIMScheduler.from_config(scheduler().config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def save_pipeline(pipe, path: str) -> str:
    """Write the pipeline in diffusers' folder layout (loadable with ``StableDiffusionPipeline.from_pretrained``)."""
    os.makedirs(path, exist_ok=True)
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def save_dino(path: str, image_size: int = 32, seed: int = 0) -> str:
    """A tiny random transformers ViT in DINO ViT-S/16's layout (CLS embedding), with its image processor."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(seed)
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=image_size, patch_size=8)).save_pretrained(path)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(path)
    return path


def save_clip(path: str, words: Iterable[str], image_size: int = 32, seed: int = 0) -> str:
    """A tiny random transformers CLIPModel (image and text towers, projection 16) with a word tokenizer."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tok = word_tokenizer(words)
    torch.manual_seed(seed)
    CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=MAX_LEN, bos_token_id=1, eos_token_id=2,
                         pad_token_id=2),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        projection_dim=16)).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(path)
    tok.save_pretrained(path)
    return path
