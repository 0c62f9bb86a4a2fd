"""Tokenizer resolution (local folder, local HF cache layout, clear error) and the MLM collators of docs/backbones.md, ViLT."""
import os
import random
import shutil

import pytest
import torch

from shared_apt.vl.data.text import (MLMCollator, TokenizerNotFoundError, WholeWordMaskCollator, get_mlm_collator,
                                  get_tokenizer)


def test_trained_tokenizer_is_bert_compatible(tokenizer, tokenizer_dir):
    from transformers import BertTokenizerFast

    assert [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id,
            tokenizer.mask_token_id] == [0, 1, 2, 3, 4]
    with open(os.path.join(tokenizer_dir, "vocab.txt")) as f:
        vocab = f.read().splitlines()
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(vocab) == len(tokenizer)
    enc = tokenizer("Two Dogs are playing", padding="max_length", max_length=10, truncation=True,
                    return_special_tokens_mask=True)
    assert enc["input_ids"][0] == 2 and enc["input_ids"][-1] == 0
    assert enc["attention_mask"] == [1 if i != 0 else 0 for i in enc["input_ids"]]
    assert tokenizer.convert_ids_to_tokens(enc["input_ids"][1:3]) == ["two", "dogs"]  # lower-cased
    bert = BertTokenizerFast.from_pretrained(tokenizer_dir)
    assert bert("two dogs")["input_ids"] == tokenizer("two dogs")["input_ids"]


def test_tokenizer_from_local_hf_cache_layout(tokenizer_dir, tmp_path):
    snap = tmp_path / "models--local--tiny-bert" / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        shutil.copy(os.path.join(tokenizer_dir, name), snap / name)
    (tmp_path / "models--local--tiny-bert" / "refs").mkdir()
    (tmp_path / "models--local--tiny-bert" / "refs" / "main").write_text("0123abcd")
    tok = get_tokenizer("local/tiny-bert", cache_dir=str(tmp_path))
    assert tok("two dogs")["input_ids"] == get_tokenizer(tokenizer_dir)("two dogs")["input_ids"]


def test_unknown_tokenizer_gives_a_clear_error_and_no_download(tmp_path):
    with pytest.raises(TokenizerNotFoundError, match="not in the local Hugging Face cache.*train_wordpiece"):
        get_tokenizer("bert-base-uncased", cache_dir=str(tmp_path))
    with pytest.raises(TokenizerNotFoundError, match="does not exist"):
        get_tokenizer(str(tmp_path / "missing" / "folder"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerNotFoundError, match="could not be loaded"):
        get_tokenizer(str(tmp_path / "empty"))


def _encodings(tokenizer, n, max_len=40):
    texts = ["two dogs are playing with a red frisbee in the park near the water and a man is riding a horse",
             "a woman holds an umbrella in the rain", "how many cats"]
    return [tokenizer(texts[i % 3], padding="max_length", truncation=True, max_length=max_len,
                      return_special_tokens_mask=True) for i in range(n)]


def test_standard_mlm_statistics_and_properties(tokenizer):
    g = torch.Generator().manual_seed(0)
    collator = MLMCollator(tokenizer, 0.15, generator=g)
    encs = _encodings(tokenizer, 3000)
    out = collator(encs)
    ids = torch.tensor([e["input_ids"] for e in encs])
    special = torch.tensor([e["special_tokens_mask"] for e in encs]).bool()
    labels, masked_ids = out["labels"], out["input_ids"]
    selected = labels != -100
    assert out["input_ids"].shape == ids.shape == (3000, 40)
    assert not selected[special].any()                                   # special tokens (pads too) never chosen
    assert torch.equal(masked_ids[special], ids[special])                # ... nor changed
    assert torch.equal(labels[selected], ids[selected])                  # labels = original ids where selected
    assert torch.equal(masked_ids[~selected], ids[~selected])            # unselected tokens unchanged
    rate = selected.sum().item() / (~special).sum().item()
    assert abs(rate - 0.15) < 0.01
    n = selected.sum().item()
    to_mask = (masked_ids[selected] == tokenizer.mask_token_id).float().mean().item()
    kept = (masked_ids[selected] == ids[selected]).float().mean().item()
    assert abs(to_mask - 0.8) < 0.02
    # 10 % unchanged plus the random replacements that drew the same id (1/len(vocab) of 10 %)
    assert abs(kept - (0.1 + 0.1 / len(tokenizer))) < 0.02
    assert int(masked_ids.max()) < len(tokenizer) and n > 0


def test_standard_mlm_pads_unpadded_encodings(tokenizer):
    short = tokenizer("two dogs", return_special_tokens_mask=True)
    long = tokenizer("a woman holds an umbrella in the rain", return_special_tokens_mask=True)
    out = MLMCollator(tokenizer, 1.0, generator=torch.Generator().manual_seed(1))([short, long])
    assert out["input_ids"].shape == (2, len(long["input_ids"]))
    pad_part = out["input_ids"][0, len(short["input_ids"]):]
    assert (pad_part == tokenizer.pad_token_id).all()
    assert (out["labels"][0, len(short["input_ids"]):] == -100).all()
    # probability 1: every non-special token of the long text is selected
    assert (out["labels"][1, 1:-1] != -100).all()


def _words(tokens):
    groups, current = [], []
    for i, t in enumerate(tokens):
        if t.startswith("##") and current:
            current.append(i)
        else:
            if current:
                groups.append(current)
            current = [i]
    groups.append(current)
    return groups


def test_whole_word_count_rule_and_groups(tokenizer):
    wwm = WholeWordMaskCollator(tokenizer, 0.15, rng=random.Random(0))
    # "horseumbrella" never occurs in the corpus, so WordPiece must split it into "##" pieces
    enc = tokenizer("frisbee horseumbrella horse", padding="max_length", max_length=40, truncation=True)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    assert any(t.startswith("##") for t in tokens), tokens
    for _ in range(200):
        chosen = wwm.word_mask(tokens)
        assert sum(chosen) == max(1, round(40 * 0.15)) == 6   # pads are one-token candidates, so 6 always fit
        assert chosen[0] == 0 and chosen[tokens.index("[SEP]")] == 0
        for word in _words(tokens):
            assert len({chosen[i] for i in word}) == 1           # whole words only
    short = tokenizer("two dogs")["input_ids"]                      # 4 tokens -> max(1, round(0.6)) = 1
    assert sum(wwm.word_mask(tokenizer.convert_ids_to_tokens(short))) == 1


def test_whole_word_collator_masks_whole_words_and_never_special(tokenizer):
    g = torch.Generator().manual_seed(3)
    wwm = get_mlm_collator(tokenizer, whole_word_masking=True, mlm_prob=0.15, generator=g, rng=random.Random(3))
    assert isinstance(wwm, WholeWordMaskCollator)
    encs = [tokenizer("frisbee umbrella horse two dogs", padding="max_length", max_length=40, truncation=True)
            for _ in range(400)]
    out = wwm(encs)
    ids = torch.tensor([e["input_ids"] for e in encs])
    tokens = tokenizer.convert_ids_to_tokens(encs[0]["input_ids"])
    real = [i for i, t in enumerate(tokens) if t not in ("[CLS]", "[SEP]", "[PAD]")]
    selected = out["labels"] != -100
    total = 0
    for row in range(len(encs)):
        sel = selected[row]
        assert not sel[[i for i in range(40) if i not in real]].any()   # special and pad positions removed
        assert torch.equal(out["labels"][row][sel], ids[row][sel])
        for word in _words(tokens):
            if word[0] in real:
                assert len({bool(sel[i]) for i in word}) == 1
        assert sel.sum() <= 6
        total += int(sel.sum())
    # 6 of 40 candidate slots, ~33 of them pads: on average clearly fewer than 6 real tokens are masked
    assert 0 < total / len(encs) < 3
    assert abs((out["input_ids"][selected] == tokenizer.mask_token_id).float().mean().item() - 0.8) < 0.1
