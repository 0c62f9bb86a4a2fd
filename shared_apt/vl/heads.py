"""Heads shared by ViLT and METER (upstream heads.py and objectives.init_weights of both; docs/backbones.md, ViLT, docs/backbones.md, METER)."""
import torch
from torch import nn


class Pooler(nn.Module):
    def __init__(self, hidden_size):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states):
        return self.activation(self.dense(hidden_states[:, 0]))


class ITMHead(nn.Module):
    def __init__(self, hidden_size):
        super().__init__()
        self.fc = nn.Linear(hidden_size, 2)

    def forward(self, x):
        return self.fc(x)


class PredictionTransform(nn.Module):
    """dense -> exact GELU -> LayerNorm (eps from the BERT config, 1e-12)."""

    def __init__(self, hidden_size, eps=1e-12):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.transform_act_fn = nn.GELU()
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, x):
        return self.LayerNorm(self.transform_act_fn(self.dense(x)))


class MLMHead(nn.Module):
    def __init__(self, hidden_size, vocab_size, eps=1e-12):
        super().__init__()
        self.transform = PredictionTransform(hidden_size, eps)
        self.decoder = nn.Linear(hidden_size, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, x):
        return self.decoder(self.transform(x)) + self.bias


class MPPHead(nn.Module):
    def __init__(self, hidden_size, eps=1e-12):
        super().__init__()
        self.transform = PredictionTransform(hidden_size, eps)
        self.decoder = nn.Linear(hidden_size, 256 * 3)

    def forward(self, x):
        return self.decoder(self.transform(x))


def classifier(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """VQA / NLVR2 head: Linear -> LayerNorm (eps 1e-5) -> exact GELU -> Linear (indices 0, 1, 2, 3)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, out_dim))


def init_weights(module):
    """Upstream objectives.init_weights: Linear/Embedding N(0, 0.02), biases 0, LayerNorm 1/0."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.data.normal_(mean=0.0, std=0.02)
    elif isinstance(module, nn.LayerNorm):
        module.bias.data.zero_()
        module.weight.data.fill_(1.0)
    if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.data.zero_()
