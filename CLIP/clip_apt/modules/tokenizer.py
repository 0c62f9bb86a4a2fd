"""OpenAI's CLIP tokenisation (openai/CLIP ``clip.tokenize``): byte-level BPE with the vocabulary file that open_clip's
wheel ships (byte-identical to OpenAI's ``bpe_simple_vocab_16e6.txt.gz``), so nothing is downloaded.

Each text -> [SOT] + BPE ids + [EOT], zero-padded to the context length (77). Text longer than the context raises, as
OpenAI's does, unless ``truncate=True`` (then the last kept token becomes EOT)."""
from __future__ import annotations

from functools import lru_cache
from typing import List, Sequence, Union

import torch

SOT_ID = 49406
EOT_ID = 49407
CONTEXT_LENGTH = 77


@lru_cache(maxsize=1)
def _bpe():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def encode(text: str) -> List[int]:
    """BPE ids of ``text`` without SOT/EOT (text cleaned with ftfy, HTML-unescaped, whitespace collapsed, lower-cased)."""
    return _bpe().encode(text)


def tokenize(texts: Union[str, Sequence[str]], context_length: int = CONTEXT_LENGTH,
             truncate: bool = False) -> torch.LongTensor:
    """LongTensor [N, context_length] of OpenAI CLIP token ids."""
    if isinstance(texts, str):
        texts = [texts]
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [SOT_ID] + encode(text) + [EOT_ID]
        if len(ids) > context_length:
            if not truncate:
                raise ValueError(f"text {text!r} is {len(ids)} tokens long, more than the context length "
                                 f"{context_length} (pass truncate=True to cut it)")
            ids = ids[:context_length]
            ids[-1] = EOT_ID
        out[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out
