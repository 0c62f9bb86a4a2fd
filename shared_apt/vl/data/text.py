"""Tokenizers and masked-language-model collators of the ViLT / METER data pipeline.

* :func:`get_tokenizer` resolves upstream's ``tokenizer`` config value ("bert-base-uncased", "roberta-base", or a
  folder) WITHOUT any download: a local directory, or a name already in the local Hugging Face cache.
* :func:`train_wordpiece_tokenizer` trains a small BERT-compatible WordPiece tokenizer with the ``tokenizers`` library
  for machines that have no copy of bert-base-uncased.
* :class:`MLMCollator` and :class:`WholeWordMaskCollator` re-implement the two transformers 4.2.1 collators that
  upstream ViLT builds (``DataCollatorForLanguageModeling`` and ``DataCollatorForWholeWordMask``, docs/backbones.md, ViLT), with
  the same random-number calls in the same order, so that a seeded run masks what upstream would have masked. They do
  not use transformers' collator classes, whose behaviour changed after 4.2.1.
"""
from __future__ import annotations

import json
import os
import random
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import torch

BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class TokenizerNotFoundError(FileNotFoundError):
    """The configured tokenizer is neither a local directory nor present in the local Hugging Face cache."""


# ----------------------------------------------------------------------------------------------------------------
# Tokenizer resolution
# ----------------------------------------------------------------------------------------------------------------


def _how_to_supply(name: str) -> str:
    return (
        "Nothing is downloaded at run time. Supply the tokenizer in one of these ways: "
        f"(1) set the config key tokenizer=/path/to/folder where the folder holds the files of {name!r} "
        "(tokenizer.json and/or vocab.txt for BERT, vocab.json + merges.txt for RoBERTa, plus tokenizer_config.json), "
        "e.g. made once on a machine with internet by `AutoTokenizer.from_pretrained(name).save_pretrained(folder)`; "
        "(2) put it in the local Hugging Face cache (HF_HOME / HF_HUB_CACHE) on this machine; "
        "(3) train a small WordPiece tokenizer on your captions with "
        "shared_apt.vl.data.text.train_wordpiece_tokenizer(texts, folder) and pass that folder."
    )


def _load_from_directory(path: str):
    """Load a tokenizer saved in `path`: through AutoTokenizer when the folder says what it is, else by its files."""
    from transformers import AutoTokenizer, BertTokenizer, RobertaTokenizer

    files = set(os.listdir(path))
    errors = []
    if "tokenizer_config.json" in files or "config.json" in files:
        try:
            return AutoTokenizer.from_pretrained(path, local_files_only=True)
        except Exception as e:  # fall back to the file-based rule below
            errors.append(f"AutoTokenizer: {e}")
    try:
        if "vocab.json" in files and "merges.txt" in files:
            return RobertaTokenizer.from_pretrained(path, local_files_only=True)
        if "vocab.txt" in files or "tokenizer.json" in files:
            # upstream ViLT: BertTokenizer with do_lower_case = "uncased" in the name; a bare folder is assumed
            # uncased unless its name says "cased" without "uncased".
            base = os.path.basename(os.path.normpath(path)).lower()
            lower = not ("cased" in base and "uncased" not in base)
            return BertTokenizer.from_pretrained(path, local_files_only=True, do_lower_case=lower)
    except Exception as e:
        errors.append(f"{type(e).__name__}: {e}")
    raise TokenizerNotFoundError(
        f"tokenizer directory {path!r} could not be loaded (files: {sorted(files)}); "
        f"expected tokenizer_config.json with tokenizer.json or vocab.txt (BERT) or vocab.json + merges.txt "
        f"(RoBERTa). Errors: {'; '.join(errors) or 'no recognised tokenizer files'}"
    )


def get_tokenizer(name_or_path: str, cache_dir: Optional[str] = None):
    """Return the tokenizer named by upstream's ``tokenizer`` config key, never downloading anything.

    `name_or_path` is either a local directory (loaded as is) or a hub name (e.g. "bert-base-uncased",
    "roberta-base") whose snapshot must already be in the local Hugging Face cache (`cache_dir`, default the
    standard cache); it is looked up with ``local_files_only=True`` and then loaded as a directory. Upstream used the slow BertTokenizer / RobertaTokenizer; the
    tokenizers-backed classes of transformers 5 produce the same ids for these vocabularies.
    """
    if not isinstance(name_or_path, str) or not name_or_path:
        raise TokenizerNotFoundError(f"tokenizer must be a non-empty name or path, got {name_or_path!r}. "
                                     + _how_to_supply("bert-base-uncased"))
    expanded = os.path.expanduser(name_or_path)
    if os.path.isdir(expanded):
        return _load_from_directory(expanded)
    if os.path.sep in name_or_path and (name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1):
        raise TokenizerNotFoundError(f"tokenizer directory {name_or_path!r} does not exist. "
                                     + _how_to_supply(name_or_path))
    from huggingface_hub import snapshot_download

    try:
        # resolves the cached snapshot folder of the name; local_files_only: no network access at all
        folder = snapshot_download(name_or_path, local_files_only=True, cache_dir=cache_dir)
    except Exception as e:
        raise TokenizerNotFoundError(
            f"tokenizer {name_or_path!r} is not a local directory and is not in the local Hugging Face cache "
            f"({cache_dir or 'default cache'}): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. "
            + _how_to_supply(name_or_path)
        ) from e
    return _load_from_directory(folder)


def train_wordpiece_tokenizer(
    texts: Iterable[str],
    out_dir: str,
    vocab_size: int = 30522,
    min_frequency: int = 2,
    lowercase: bool = True,
    limit_alphabet: int = 1000,
):
    """Train a BERT-style WordPiece tokenizer on `texts` and save it to `out_dir`; return the loaded tokenizer.

    The vocabulary starts with the special tokens [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4 (bert-base-uncased has
    them at 0, 100, 101, 102, 103; code must read the ids from the tokenizer, never hard-code them). Normalisation,
    pre-tokenisation, the "##" continuation prefix and the "[CLS] text [SEP]" template are BERT's, so the
    whole-word-masking collator groups pieces exactly as it does with BERT. The folder holds vocab.txt (one token per
    line in id order), tokenizer.json and tokenizer_config.json, and loads with ``get_tokenizer(out_dir)`` or
    ``transformers.BertTokenizerFast.from_pretrained(out_dir)``.
    """
    from tokenizers.implementations import BertWordPieceTokenizer
    from transformers import BertTokenizer

    trainer = BertWordPieceTokenizer(lowercase=lowercase)
    trainer.train_from_iterator(
        (t for t in texts),
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(BERT_SPECIAL_TOKENS),
        limit_alphabet=limit_alphabet,
        wordpieces_prefix="##",
        show_progress=False,
    )
    vocab = trainer.get_vocab()
    for i, tok in enumerate(BERT_SPECIAL_TOKENS):
        if vocab.get(tok) != i:
            raise RuntimeError(f"trained vocabulary puts {tok} at id {vocab.get(tok)}, expected {i}")
    ordered = sorted(vocab.items(), key=lambda kv: kv[1])
    if [i for _, i in ordered] != list(range(len(ordered))):
        raise RuntimeError("trained WordPiece vocabulary ids are not contiguous")
    os.makedirs(out_dir, exist_ok=True)
    tok = BertTokenizer(vocab=dict(vocab), do_lower_case=lowercase)
    tok.save_pretrained(out_dir)
    with open(os.path.join(out_dir, "vocab.txt"), "w", encoding="utf-8") as f:
        for token, _ in ordered:
            f.write(token + "\n")
    with open(os.path.join(out_dir, "shared_apt_tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump({"trained_by": "shared_apt.vl.data.text.train_wordpiece_tokenizer", "vocab_size": len(ordered),
                   "lowercase": lowercase, "min_frequency": min_frequency}, f, indent=2)
    return get_tokenizer(out_dir)


# ----------------------------------------------------------------------------------------------------------------
# MLM collators (transformers 4.2.1 behaviour)
# ----------------------------------------------------------------------------------------------------------------


def _ids_of(example: Any) -> List[int]:
    if isinstance(example, Mapping) or hasattr(example, "keys"):
        ids = example["input_ids"]
    else:
        ids = example
    if isinstance(ids, torch.Tensor):
        return ids.tolist()
    return list(ids)


def _pad_rows(rows: Sequence[Sequence[int]], value: int, length: Optional[int] = None) -> torch.Tensor:
    """Right-pad integer rows to the longest (or `length`) as transformers' ``tokenizer.pad`` does."""
    width = max([len(r) for r in rows] + [length or 0])
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            out[i, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
    return out


class _MaskingBase:
    """What both collators share: tokenizer ids and the 80 / 10 / 10 replacement of transformers 4.2.1."""

    def __init__(self, tokenizer, mlm_probability: float = 0.15, generator: Optional[torch.Generator] = None):
        if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError(f"tokenizer {type(tokenizer).__name__} needs a mask token and a pad token for MLM")
        if not 0.0 <= mlm_probability <= 1.0:
            raise ValueError(f"mlm_probability={mlm_probability!r}: expected a probability in [0, 1]")
        self.tokenizer = tokenizer
        self.mlm_probability = float(mlm_probability)
        self.generator = generator
        self.pad_token_id = int(tokenizer.pad_token_id)
        self.mask_token_id = int(tokenizer.mask_token_id)
        self.special_ids = torch.tensor(sorted(set(int(i) for i in tokenizer.all_special_ids)), dtype=torch.long)
        self.vocab_len = len(tokenizer)  # transformers' len(tokenizer): random replacement ids are in [0, this)

    def special_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """``get_special_tokens_mask(already_has_special_tokens=True)``: ids that are any special token (pad too)."""
        return torch.isin(ids, self.special_ids)

    def replace(self, inputs: torch.Tensor, labels: torch.Tensor, masked: torch.Tensor):
        """Of the selected positions 80 % -> [MASK], 10 % -> random id, 10 % unchanged; labels -100 elsewhere."""
        labels[~masked] = -100
        g = self.generator
        replaced = torch.bernoulli(torch.full(labels.shape, 0.8), generator=g).bool() & masked
        inputs[replaced] = self.mask_token_id
        randomised = torch.bernoulli(torch.full(labels.shape, 0.5), generator=g).bool() & masked & ~replaced
        random_words = torch.randint(self.vocab_len, labels.shape, dtype=torch.long, generator=g)
        inputs[randomised] = random_words[randomised]
        return inputs, labels


class MLMCollator(_MaskingBase):
    """transformers 4.2.1 ``DataCollatorForLanguageModeling(mlm=True)`` (upstream ``whole_word_masking=False``).

    Input: a list of encodings (dicts with ``input_ids`` and, optionally, ``special_tokens_mask``) or id lists. They
    are right-padded with the pad id to the longest (``special_tokens_mask`` padded with 1). Every non-special token is
    selected independently with probability ``mlm_probability``; special tokens (from the encoding's
    ``special_tokens_mask`` when given, else every id that is a special token, pads included) never are. Then the
    80 / 10 / 10 replacement. Returns ``{"input_ids": LongTensor [N, L], "labels": LongTensor [N, L]}``.
    """

    def __call__(self, examples: Sequence[Any]) -> Dict[str, torch.Tensor]:
        if len(examples) == 0:
            raise ValueError("MLM collator called with no examples")
        rows = [_ids_of(e) for e in examples]
        inputs = _pad_rows(rows, self.pad_token_id)
        first = examples[0]
        has_stm = (isinstance(first, Mapping) or hasattr(first, "keys")) and "special_tokens_mask" in first
        if has_stm:
            special = _pad_rows([list(e["special_tokens_mask"]) for e in examples], 1, inputs.shape[1]).bool()
        else:
            special = self.special_mask(inputs)
        labels = inputs.clone()
        probability = torch.full(labels.shape, self.mlm_probability)
        probability.masked_fill_(special, 0.0)
        masked = torch.bernoulli(probability, generator=self.generator).bool()
        inputs, labels = self.replace(inputs, labels, masked)
        return {"input_ids": inputs, "labels": labels}


class WholeWordMaskCollator(_MaskingBase):
    """transformers 4.2.1 ``DataCollatorForWholeWordMask`` (upstream ``whole_word_masking=True``), quirks included.

    Per example (its own, possibly padded, token list): word candidates = a token plus the following "##" pieces;
    only the literal strings "[CLS]" and "[SEP]" are skipped, so [PAD] tokens (and RoBERTa's <s> </s> <pad>) are
    candidates, each its own word. Candidates are shuffled with Python's ``random``; the number of tokens to mask is
    ``max(1, round(len(tokens) * mlm_probability))`` (Python's round; 40 tokens -> 6); whole words are taken while
    they fit (a word that would overshoot is skipped, later shorter ones may still fit). Afterwards every special or
    pad position is removed from the selection, so usually fewer real tokens are masked. Then the 80 / 10 / 10
    replacement on the padded batch.
    """

    def __init__(self, tokenizer, mlm_probability: float = 0.15, generator: Optional[torch.Generator] = None,
                 rng: Optional[random.Random] = None, max_predictions: int = 512):
        super().__init__(tokenizer, mlm_probability, generator)
        self.rng = rng
        self.max_predictions = max_predictions

    def word_mask(self, tokens: Sequence[str]) -> List[int]:
        """0/1 per token: the whole words chosen for masking (before special/pad positions are removed)."""
        candidates: List[List[int]] = []
        for i, token in enumerate(tokens):
            if token == "[CLS]" or token == "[SEP]":
                continue
            if candidates and token.startswith("##"):
                candidates[-1].append(i)
            else:
                candidates.append([i])
        (self.rng or random).shuffle(candidates)
        budget = min(self.max_predictions, max(1, int(round(len(tokens) * self.mlm_probability))))
        chosen: set = set()
        for word in candidates:
            if len(chosen) >= budget:
                break
            if len(chosen) + len(word) > budget:
                continue
            if any(i in chosen for i in word):
                continue
            chosen.update(word)
        return [1 if i in chosen else 0 for i in range(len(tokens))]

    def __call__(self, examples: Sequence[Any]) -> Dict[str, torch.Tensor]:
        if len(examples) == 0:
            raise ValueError("MLM collator called with no examples")
        rows = [_ids_of(e) for e in examples]
        inputs = _pad_rows(rows, self.pad_token_id)
        word_masks = [self.word_mask(self.tokenizer.convert_ids_to_tokens(r)) for r in rows]
        selected = _pad_rows(word_masks, 0, inputs.shape[1]).bool()
        labels = inputs.clone()
        selected &= ~self.special_mask(labels)
        selected &= ~labels.eq(self.pad_token_id)
        inputs, labels = self.replace(inputs, labels, selected)
        return {"input_ids": inputs, "labels": labels}


def get_mlm_collator(tokenizer, whole_word_masking: bool = False, mlm_prob: float = 0.15, **kwargs):
    """Upstream's choice: ``DataCollatorForWholeWordMask`` if whole_word_masking else the standard BERT collator."""
    cls = WholeWordMaskCollator if whole_word_masking else MLMCollator
    return cls(tokenizer, mlm_probability=mlm_prob, **kwargs)
