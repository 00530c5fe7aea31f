"""Config dataclasses: one per job, loadable from YAML and derivable into command-line flags.

Precedence is dataclass defaults < YAML file < explicit flags; unknown keys are errors, never ignored.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = ["RENAMED", "add_config_arguments", "config_from_args", "config_hash", "config_to_dict",
           "execution_fields", "load_config", "option"]

C = TypeVar("C")

# Spellings the jobs used before they shared these fields: a config or flag that still uses one is told the new.
RENAMED = {
    "num_actors": "num_workers",
    "num_gpus_per_actor": "gpus_per_worker",
    "threads_per_actor": "threads_per_worker",
    "cpus_per_trial": "cpus_per_worker",
    "gpus_per_trial": "gpus_per_worker",
    "threads_per_trial": "threads_per_worker",
    "use_gpu": "gpus_per_worker",
}


def option(default: Any = dataclasses.MISSING, *, help: str, flags: tuple[str, ...] = (), execution: bool = False,
           **kwargs: Any) -> Any:
    """A dataclass field that carries its help text (shown by ``--help``) and any extra flag spellings.

    ``execution`` marks a field that changes how a job runs (workers, batch sizes, where files go), never what it
    computes: ``config_hash`` leaves it out, so a rerun that changes it resumes the same run.
    """
    metadata = {"help": help, "flags": flags, "execution": execution, **kwargs.pop("metadata", {})}
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def execution_fields(config: Any) -> tuple[str, ...]:
    """The fields of a config (class or instance) marked ``option(execution=True)``."""
    return tuple(f.name for f in dataclasses.fields(config) if f.metadata.get("execution"))


def config_hash(config: Any, *, exclude: tuple[str, ...] = (), include: tuple[str, ...] = ()) -> str:
    """A short hash of the settings that determine a job's result: every field but the execution-only ones and
    ``exclude`` (what a reuse ignores, e.g. the settings scores do not depend on); ``include`` names execution
    fields that do decide this job's result."""
    skipped = (set(execution_fields(config)) - set(include)) | set(exclude)
    values = {k: v for k, v in config_to_dict(config).items() if k not in skipped}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_config(cls: type[C], path: str | Path | None = None, *, defaults: dict[str, Any] | None = None,
                **overrides: Any) -> C:
    """Build ``cls`` from ``defaults`` (an entry point's own), then an optional YAML file, then keyword overrides;
    unknown keys raise ``ValueError``."""
    values: dict[str, Any] = dict(defaults or {})
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of option names to values")
        values.update(loaded)
    values.update(overrides)
    names = {f.name for f in dataclasses.fields(cls)}
    _refuse_renamed(set(values) - names)
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown option(s) for {cls.__name__}: {', '.join(unknown)}")
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"missing required option(s): {', '.join('--' + m.replace('_', '-') for m in missing)}")
    return cls(**values)


def _refuse_renamed(names: set[str]) -> None:
    old = sorted(n for n in names if n in RENAMED)
    if old:
        raise ValueError("renamed option(s): " + ", ".join(f"{n} is now {RENAMED[n]}" for n in old)
                         + " (one spelling for every job's workers)")


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(element type, is_list) of a field annotation such as ``int | None`` or ``list[str]``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    if origin in (list, tuple):
        return typing.get_args(annotation)[0], True
    return annotation, False


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one ``--flag`` per field of ``cls`` (underscores become dashes), the execution-only ones last; defaults
    stay unset. A flag that was renamed is refused with its new spelling."""
    hints = typing.get_type_hints(cls)
    parser.add_argument("--config", default=None, help="YAML file of options (flags override it)")
    fields = sorted(dataclasses.fields(cls), key=lambda f: bool(f.metadata.get("execution")))
    taken: set[str] = set()
    for f in fields:
        kind, is_list = _base_type(hints[f.name])
        flags = [_flag(f.name), *f.metadata.get("flags", ())]
        taken.update(flags)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        )
        text = f.metadata.get("help", "")
        if default is not None and "default" not in text:  # a help that explains its default keeps its words
            text += f" (default: {default!r})"
        if kind is bool:
            parser.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=text)
        elif is_list:
            parser.add_argument(*flags, dest=f.name, type=kind, action="append", default=None,
                                help=text + "; repeat the flag for several")
        else:
            parser.add_argument(*flags, dest=f.name, type=kind, default=None, help=text)
    for old, new in RENAMED.items():
        if _flag(old) not in taken:
            parser.add_argument(_flag(old), nargs="?", action=_Renamed, new=_flag(new), help=argparse.SUPPRESS)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class _Renamed(argparse.Action):
    def __init__(self, *args: Any, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(*args, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        parser.error(f"{option_string} is now {self.new} (one spelling for every job's workers)")


def config_from_args(cls: type[C], args: argparse.Namespace, *, defaults: dict[str, Any] | None = None) -> C:
    """The config a parser built by ``add_config_arguments`` describes: ``defaults`` < ``--config`` < flags."""
    names = {f.name for f in dataclasses.fields(cls)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return load_config(cls, getattr(args, "config", None), defaults=defaults, **overrides)
