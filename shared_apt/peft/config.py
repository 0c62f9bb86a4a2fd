"""The configuration every tuning method's own config dataclass derives from.

A method's config is a dataclass whose fields are the method's options, under the method's own names
(``num_prompts``, ``rank``, ``bottleneck``, ``scale``, ...), each declared with :func:`option` (default, check,
help). Class attributes tie the options to the flat keys of the backbones' Sacred configs, where one namespace holds
every method's options and a prefix tells them apart (``with peft=apt num_prompts=200 apt_rank=4``):

* ``legacy_prefix``: the flat key of option ``x`` is ``legacy_prefix + x`` (APT: ``apt_`` -> ``apt_rank``);
* ``unprefixed``: options whose flat key is the bare name (``num_prompts``, shared by APT and the prompt methods);
* ``legacy_names``: flat key -> option where neither rule gives the historical name (scaled PA: ``pa_bottleneck``);
* ``paper_options``: the options the Sacred named config ``peft_<method>`` sets (the APT paper's settings);
* ``runtime_options``: options that do not change the attached modules (not compared when tuned weights load);
* ``unset_defaults``: options whose default None means "the backbone's official value"
  (``BackboneSpec.option_defaults``, by flat key or option name), else this value (resolved by ``apply``).

Options are accepted under their own name or their flat key; a config is built with :func:`method_config`
(``shared_apt.PeftConfig``) and written to the tuned-weights JSON with ``to_dict``. See docs/adding.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar, Mapping, Optional


class ConfigError(ValueError):
    """A method or method option is unknown or out of range."""


class OptionValueError(ConfigError):
    """An option value is of the wrong type or out of range (``option``, ``value``, ``expected`` say which)."""

    def __init__(self, method: str, option: str, value: Any, expected: str):
        super().__init__(f"peft option {option}={value!r} of method {method!r} is invalid: expected {expected}")
        self.method, self.option, self.value, self.expected = method, option, value, expected


def _type_check(default: Any) -> Optional[tuple]:
    """The check every option gets from the type of its default (before its own check)."""
    if isinstance(default, bool):
        return (lambda v: isinstance(v, bool), "True or False")
    if isinstance(default, int):
        return (_is_int, "an integer")
    if isinstance(default, float):
        return (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number")
    if isinstance(default, str):
        return (lambda v: isinstance(v, str), "a string")
    if isinstance(default, tuple):
        return (lambda v: isinstance(v, (list, tuple)), "a list such as " + repr(list(default)))
    return None


def option(default: Any, check: Optional[tuple] = None, help: str = "", type: Optional[Callable] = None):
    """A method option: its default, an optional ``(predicate, expected)`` check and a one-line help (used by the
    command lines). ``type``: the value type when the default (None) does not tell it (command-line parsing)."""
    return field(default=default, metadata={"check": check, "help": help, "type": type})


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


POSITIVE_INT = (lambda v: _is_int(v) and v >= 1, "an integer >= 1")
OPTIONAL_POSITIVE_INT = (lambda v: v is None or (_is_int(v) and v >= 1), "an integer >= 1 or None")
PROBABILITY = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v < 1.0,
               "a probability in [0, 1)")
BOOL = (lambda v: isinstance(v, bool), "true or false")
NUMBER = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number")


def one_of(*choices) -> tuple:
    return (lambda v: v in choices, f"one of {choices}")


@dataclass
class MethodConfig:
    method: ClassVar[str] = ""                 # set by shared_apt.peft.registry.register_method
    legacy_prefix: ClassVar[str] = ""
    unprefixed: ClassVar[tuple] = ()
    legacy_names: ClassVar[dict] = {}
    paper_options: ClassVar[tuple] = ()
    runtime_options: ClassVar[tuple] = ()
    unset_defaults: ClassVar[dict] = {}        # option -> value when left at None and the backbone names none

    def __post_init__(self):
        self.validate()
        self.normalise()

    def normalise(self) -> None:
        """Bring option values to their canonical type (e.g. a list to a tuple) once they are valid."""
        for f in fields(self):
            if isinstance(f.default, tuple):
                setattr(self, f.name, tuple(getattr(self, f.name)))

    def validate(self) -> None:
        """Every option: the type of its default first (bool is an int in Python, and a string compared with a
        number raises a bare TypeError), then its own check."""
        for f in fields(self):
            value = getattr(self, f.name)
            for check in (_type_check(f.default), f.metadata.get("check")):
                if check is not None and not check[0](value):
                    raise OptionValueError(self.method, f.name, value, check[1])

    # ---------------------------------------------------------------------------------------------------------
    @classmethod
    def option_names(cls) -> tuple:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def flat_keys(cls) -> dict:
        """Flat (Sacred) key -> option name."""
        keys = {(f.name if f.name in cls.unprefixed else cls.legacy_prefix + f.name): f.name for f in fields(cls)}
        keys.update(cls.legacy_names)
        return keys

    @classmethod
    def flat_key(cls, name: str) -> str:
        return next(k for k, v in cls.flat_keys().items() if v == name)

    @classmethod
    def paper_settings(cls) -> dict:
        """The named config ``peft_<method>``'s options, under their flat keys (as the Sacred configs write them)."""
        defaults = {f.name: f.default for f in fields(cls)}
        return {cls.flat_key(n): defaults[n] for n in cls.paper_options}

    @classmethod
    def resolve_names(cls, options: Mapping[str, Any]) -> tuple:
        """(options under the method's own names, [(key, value)] not understood)."""
        own, flat, out, unknown = set(cls.option_names()), cls.flat_keys(), {}, []
        for key, value in options.items():
            name = key if key in own else flat.get(key)
            if name is None:
                unknown.append((key, value))
                continue
            if name in out and out[name] != value:
                raise ConfigError(f"peft option {name!r} of method {cls.method!r} given twice with different values "
                                  f"({out[name]!r} and {key}={value!r})")
            out[name] = value
        return out, unknown

    def to_dict(self) -> dict:
        """JSON form: ``{"method": ..., option: value, ...}`` (tuples as lists)."""
        d = {"method": self.method}
        for f in fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    def relevant(self) -> dict:
        """The options that change the attached modules (compared when tuned weights are loaded)."""
        return {k: v for k, v in self.to_dict().items() if k not in self.runtime_options}

    def __getattr__(self, name: str):
        """Legacy flat keys read as attributes (``config.apt_rank`` is ``config.rank``)."""
        if not name.startswith("__"):
            target = type(self).flat_keys().get(name)
            if target is not None and target != name:
                return getattr(self, target)
        raise AttributeError(f"{type(self).__name__} (method {self.method!r}) has no option {name!r}")


class PeftConfig:
    """``PeftConfig(method, **options)``: the config of a registered method (an instance of its own dataclass);
    ``PeftConfig.from_kwargs`` is the same, ``PeftConfig.from_dict`` reads the tuned-weights JSON form."""

    def __new__(cls, method: str = "apt", **options):
        return method_config(method, **options)

    @staticmethod
    def from_kwargs(method: str, **options) -> MethodConfig:
        return method_config(method, **options)

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> MethodConfig:
        return config_from_dict(d)


def method_config(method: str, **options) -> MethodConfig:
    """The config of ``method`` with ``options`` (own names or flat keys); unknown options are errors that name
    the methods they belong to."""
    from .registry import get_method, method_names, owners_of

    entry = get_method(method)
    resolved, unknown = entry.config.resolve_names(options)
    given = {entry.config.flat_keys().get(k, k): k for k in options}  # option name -> the key the caller used
    if unknown:
        key, value = unknown[0]
        owners = [m for m in owners_of(key) if m != method]
        if owners:
            raise ConfigError(f"option {key}={value!r} has no meaning for method {method!r} ({', '.join(owners)})")
        known = sorted(set(entry.config.option_names()) | set(entry.config.flat_keys()))
        raise ConfigError(f"unknown peft option(s) {sorted(k for k, _ in unknown)} for method {method!r}; known "
                          f"options: {known} (registered methods: {', '.join(method_names())})")
    try:
        return entry.config(**resolved)
    except OptionValueError as e:
        key = given.get(e.option, e.option)
        where = f"option {e.option!r} of method {method!r}" if key != e.option else f"method {method!r}"
        raise ConfigError(f"peft option {key}={e.value!r} ({where}) is invalid: expected {e.expected}") from e


def config_from_dict(d: Mapping[str, Any], *, legacy_flat: bool = False) -> MethodConfig:
    """Read a config written by ``to_dict``. ``legacy_flat``: a format-1 file, which holds every method's options
    under their flat keys; the options of other methods are dropped (they never applied)."""
    from .registry import get_method

    d = dict(d)
    if "method" not in d:
        raise ConfigError(f"saved peft config {d} has no 'method'")
    method = d.pop("method")
    entry = get_method(method)
    if legacy_flat:
        keys = set(entry.config.option_names()) | set(entry.config.flat_keys())
        d = {k: v for k, v in d.items() if k in keys}
    resolved, unknown = entry.config.resolve_names(d)
    if unknown:
        raise ConfigError(f"unknown peft option(s) {sorted(k for k, _ in unknown)} for method {method!r} in saved "
                          f"config")
    return entry.config(**resolved)


def options_from_config(config: Mapping[str, Any]) -> dict:
    """The tuning-method options of a backbone config: ``peft_options`` overlaid with the top-level flat keys that
    are set (None = the method's default)."""
    from .registry import flat_option_keys

    options = dict(config.get("peft_options") or {})
    options.update({k: config[k] for k in flat_option_keys() if config.get(k) is not None})
    return options


def cli_type(f) -> Callable:
    """argparse type of an option field: int, float, bool ("true"/"false") or str; tuples as comma lists."""
    default = f.default
    if f.metadata.get("type") is not None:
        return f.metadata["type"]
    if isinstance(default, bool):
        def parse_bool(text):
            low = str(text).lower()
            if low not in ("true", "false", "1", "0"):
                raise ValueError(f"expected true or false, got {text!r}")
            return low in ("true", "1")
        return parse_bool
    if isinstance(default, tuple):
        return lambda text: tuple(t.strip() for t in text.split(",") if t.strip())
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    return str
