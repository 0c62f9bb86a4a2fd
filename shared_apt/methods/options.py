"""Base of the per-method option dataclasses (one class per method, its own option names), used by the methods that
are not fields of the flat ``PeftConfig``: ``apply(model, "coop", n_ctx=4)`` builds ``CoOpConfig(n_ctx=4)``.

A subclass sets ``method`` (ClassVar) and declares its options as dataclass fields with defaults; ``check()`` lists
what is wrong with them. Saved with tuned weights as ``{"method": ..., **options}``."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from ..config import ConfigError


@dataclass
class MethodOptions:
    method: ClassVar[str] = ""

    def __post_init__(self):
        self.validate()

    def check(self) -> list:
        """(key, value, expected) for every invalid option."""
        return []

    def validate(self) -> None:
        problems = self.check()
        if problems:
            raise ConfigError("; ".join(f"{self.method} option {k}={v!r} is invalid: expected {e}"
                                        for k, v, e in problems))

    @classmethod
    def option_names(cls) -> list:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_kwargs(cls, **options: Any) -> "MethodOptions":
        unknown = sorted(set(options) - set(cls.option_names()))
        if unknown:
            raise ConfigError(f"unknown {cls.method} option(s) {unknown}; known options: {cls.option_names()}")
        return cls(**options)

    def to_dict(self) -> dict:
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        return {"method": self.method, **d}

    @classmethod
    def from_dict(cls, d: dict) -> "MethodOptions":
        d = dict(d)
        method = d.pop("method", None)
        if method != cls.method:
            raise ConfigError(f"saved options are for method {method!r}, not {cls.method!r}")
        return cls.from_kwargs(**d)

    def relevant(self) -> dict:
        """The options that change the attached modules (compared when tuned weights are loaded)."""
        return self.to_dict()


def positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
