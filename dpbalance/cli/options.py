"""Command-line options generated from the typed config dataclasses, so every setting is defined once.

A config dataclass field carries its documentation in ``field(metadata=...)``:

- ``doc`` — the help text (required for fields shown on the command line);
- ``flags`` — the option names, e.g. ``("--workers", "-G")`` (default ``--field-name``);
- ``min`` / ``max`` — numeric bounds checked by the parser; ``envvar`` — an environment variable;
- ``cli`` — ``False`` keeps the field off the command line (it keeps its default);
- ``panel`` — the ``--help`` section the option is listed under.

``with_configs(sim=SimConfig, trace=TraceSelection)`` turns a command function that takes keyword arguments
``sim: SimConfig`` and ``trace: TraceSelection`` into one whose signature lists an option per field; the
wrapper builds the configs from the parsed values (a ``ValueError`` from a config's own validation becomes a
usage error naming the problem) and calls the function with them.

``with_configs(config_file="--config", ...)`` also adds a ``--config FILE`` option (YAML, TOML or JSON, keys
are the field names, dashes or underscores): the file gives the base values, options typed on the command line
(or set through their environment variable) override it, an unknown key is an error listing the valid ones, and
values are type-checked (dacite, strict).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.config_io import ConfigFileError, build_from_mapping, read_config_file

_KW = inspect.Parameter.KEYWORD_ONLY
_FROM_USER = ("COMMANDLINE", "ENVIRONMENT")


def _cli_type(tp: Any) -> tuple[Any, Callable[[Any], Any]]:
    """(annotation typer understands, converter from the parsed value back to the field's type)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            inner, conv = _cli_type(args[0])
            return inner | None, (lambda v: None if v is None else conv(v))
    if origin is tuple:
        (item, *_rest) = typing.get_args(tp) or (str,)
        return list[item], (lambda v: tuple(v) if v is not None else ())
    return tp, (lambda v: v)


def _resolve(fn: Callable, annotation: Any) -> Any:
    """A string annotation (``from __future__ import annotations``) as the object it names, in the function's
    module; typer needs the real ``Annotated[...]`` to read the option names."""
    if not isinstance(annotation, str):
        return annotation
    ns = dict(vars(typing))
    ns.update(fn.__globals__)
    try:
        return eval(annotation, ns)  # noqa: S307 - our own source's annotations
    except NameError:
        return annotation


def flag_names(f: dataclasses.Field) -> tuple[str, ...]:
    return tuple(f.metadata.get("flags") or ("--" + f.name.replace("_", "-"),))


def config_options(cls: type, *, panel: str | None = None) -> list[tuple[inspect.Parameter, Callable]]:
    """One ``inspect.Parameter`` (with its typer option) per command-line field of a config dataclass."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("cli", True) is False:
            continue
        if "doc" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} has no metadata doc: every command-line setting needs help text")
        ann, conv = _cli_type(hints[f.name])
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = ...
        if isinstance(default, tuple):
            default = list(default) or None
        names = flag_names(f)
        if ann is bool and len(names) == 1 and "/" not in names[0]:
            names = (f"{names[0]}/--no-{names[0][2:]}",)
        kw: dict[str, Any] = {"help": f.metadata["doc"], "rich_help_panel": f.metadata.get("panel", panel)}
        for key in ("min", "max", "envvar"):
            if key in f.metadata:
                kw[key] = f.metadata[key]
        if ann is Path or ann == Path | None:
            kw["path_type"] = Path
        param = inspect.Parameter(f.name, _KW, default=default, annotation=Annotated[ann, typer.Option(*names, **kw)])
        out.append((param, conv))
    return out


def option_for(cls: type, name: str):
    """The annotated type of one config field's option, for a command that needs just that setting."""
    for p, _ in config_options(cls):
        if p.name == name:
            return p.annotation
    raise KeyError(f"{cls.__name__} has no command-line field {name!r}")


def with_configs(config_file: str | None = None, **configs: type) -> Callable[[Callable], Callable]:
    """Decorator: generate the command-line options of the given config dataclasses (see module docstring)."""

    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        own = [
            p.replace(annotation=_resolve(fn, p.annotation))
            for name, p in sig.parameters.items()
            if name not in configs
        ]
        taken = {p.name for p in own}
        fields_of: dict[str, list[tuple[str, Callable]]] = {}
        generated: list[inspect.Parameter] = []
        for arg, cls in configs.items():
            fields_of[arg] = []
            for p, conv in config_options(cls, panel=getattr(cls, "PANEL", None)):
                if p.name in taken:
                    raise TypeError(f"option {p.name!r} of {cls.__name__} clashes with another option of {fn.__name__}")
                taken.add(p.name)
                generated.append(p)
                fields_of[arg].append((p.name, conv))
        if config_file:
            generated.append(
                inspect.Parameter(
                    "_config_file",
                    _KW,
                    default=None,
                    annotation=Annotated[
                        Path | None,
                        typer.Option(
                            config_file,
                            help="YAML, TOML or JSON file of settings (keys as the "
                            "options without dashes); options given on the command line override it.",
                            exists=True,
                            dir_okay=False,
                        ),
                    ],
                )
            )
            generated.append(inspect.Parameter("_ctx", _KW, annotation=typer.Context))

        @functools.wraps(fn)
        def wrapper(**kwargs):
            path = kwargs.pop("_config_file", None)
            ctx = kwargs.pop("_ctx", None)
            try:
                file_values = read_config_file(path) if path is not None else {}
            except ConfigFileError as exc:
                raise typer.BadParameter(str(exc)) from None
            if file_values:
                known = {name for arg in configs for name, _ in fields_of[arg]}
                every = {f.name for cls in configs.values() for f in dataclasses.fields(cls) if f.init}
                unknown = sorted(set(file_values) - every)
                if unknown:
                    raise typer.BadParameter(
                        f"{path}: unknown setting(s) {', '.join(unknown)}; valid settings: {', '.join(sorted(known))}"
                    )
            built = {}
            for arg, cls in configs.items():
                values = {name: conv(kwargs.pop(name)) for name, conv in fields_of[arg]}
                if file_values:
                    mine = {f.name for f in dataclasses.fields(cls) if f.init}
                    for name in mine & set(file_values):
                        src = ctx.get_parameter_source(name) if (ctx is not None and name in values) else None
                        if src is None or src.name not in _FROM_USER:
                            values[name] = file_values[name]
                    try:
                        built[arg] = build_from_mapping(cls, values, f"{path}: ")
                    except ConfigFileError as exc:
                        raise typer.BadParameter(str(exc)) from None
                    continue
                try:
                    built[arg] = cls(**values)
                except (ValueError, TypeError) as exc:
                    raise typer.BadParameter(str(exc)) from None
            return fn(**kwargs, **built)

        params = [p.replace(kind=_KW) if p.kind != _KW else p for p in own] + generated
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return deco
