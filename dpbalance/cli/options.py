"""Command-line options generated from the typed config dataclasses, so every setting is defined once.

A config dataclass field is declared with ``core.config.setting`` and carries:

- ``doc`` — the help text (required for fields shown on the command line);
- ``flags`` — the option names, e.g. ``("--workers", "-G")`` (default ``--field-name``);
- ``min`` / ``max`` — numeric bounds; ``envvar`` — an environment variable;
- ``cli`` — ``False`` keeps the field off the command line (it keeps its default);
- ``panel`` — the ``--help`` section the option is listed under.

``with_configs(sim=SimConfig, trace=TraceSelection)`` turns a command function that takes keyword arguments
``sim: SimConfig`` and ``trace: TraceSelection`` into one whose signature lists an option per field; the
wrapper builds the configs from the parsed values and calls the function with them. Every value goes through
the one conversion path of ``core.config`` (``convert`` for each option as it is parsed, ``build`` for bounds and
the dataclass's own checks), the same one config files, sweep cells and spec strings use; a bad value is a usage
error naming the option.

``with_configs(config_file="--config", ...)`` also adds a ``--config FILE`` option (YAML, TOML or JSON, keys
are the field names, dashes or underscores): the file gives the base values, options typed on the command line
(or set through their environment variable) override it, and an unknown key is an error listing the valid ones.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.config import (
    ConfigError,
    ConfigFileError,
    build,
    convert,
    flat_names,
    nest,
    nested_fields,
    read_config_file,
    type_name,
)

_KW = inspect.Parameter.KEYWORD_ONLY
_FROM_USER = ("COMMANDLINE", "ENVIRONMENT")


def setting_parser(tp: Any, option: str) -> Callable[[str], Any]:
    """The option's value parser: ``core.config.convert`` (so the command line accepts exactly what a config file
    or a spec string accepts); a bad value is a usage error naming the option."""

    def parse(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return convert(value, tp, option)
        except ConfigError as exc:
            raise typer.BadParameter(str(exc)) from None

    return parse


def _metavar(tp: Any) -> str:
    name = type_name(tp)
    return f"[{name}]" if typing.get_origin(tp) is typing.Literal else name.upper().replace(" ", "_")


def _item_type(tp: Any) -> tuple[Any, bool, bool]:
    """(the type of one command-line value, whether the option repeats, whether it is a plain bool flag)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, __import__("types").UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and typing.get_origin(rest[0]) is tuple:
            return typing.get_args(rest[0])[0], True, False
    if typing.get_origin(tp) is tuple:
        return (args or (str,))[0], True, False
    return tp, False, tp is bool


def flag_names(f: dataclasses.Field) -> tuple[str, ...]:
    return tuple(f.metadata.get("flags") or ("--" + f.name.replace("_", "-"),))


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return ...


def config_options(cls: type, *, panel: str | None = None) -> list[inspect.Parameter]:
    """One ``inspect.Parameter`` (with its typer option) per command-line field of a config dataclass (and of the
    configs nested in it, see ``nested_fields``)."""
    hints = typing.get_type_hints(cls)
    nested = nested_fields(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in nested:
            sub = nested[f.name]
            out += config_options(sub, panel=getattr(sub, "PANEL", panel))
            continue
        if not f.init or f.metadata.get("cli", True) is False:
            continue
        if "doc" not in f.metadata:  # pragma: no cover - caught by the tests of every config
            raise TypeError(f"{cls.__name__}.{f.name} has no metadata doc: every command-line setting needs help text")
        item, many, flag = _item_type(hints[f.name])
        default = _default(f)
        names = flag_names(f)
        kw: dict[str, Any] = {"help": f.metadata["doc"], "rich_help_panel": f.metadata.get("panel", panel)}
        if "envvar" in f.metadata:
            kw["envvar"] = f.metadata["envvar"]
        if flag:
            if len(names) == 1 and "/" not in names[0]:
                names = (f"{names[0]}/--no-{names[0][2:]}",)
            ann = bool
        else:
            kw["parser"] = setting_parser(item, names[0])
            kw["metavar"] = _metavar(item)
            ann = list[Any] | None if many else Any
            if many:
                default = list(default) or None
        param = inspect.Parameter(f.name, _KW, default=default, annotation=Annotated[ann, typer.Option(*names, **kw)])
        out.append(param)
    return out


def option_for(cls: type, name: str):
    """The annotated type of one config field's option, for a command that needs just that setting; the value
    the command receives is already converted."""
    for p in config_options(cls):
        if p.name == name:
            return p.annotation
    raise KeyError(f"{cls.__name__} has no command-line field {name!r}")


def _annotation(fn: Callable, annotation: Any) -> Any:
    """A string annotation (``from __future__ import annotations``) as the object it names in the function's
    module; typer needs the real ``Annotated[...]`` to read the option names. Names it cannot resolve (a config
    class imported inside a function) stay strings: those parameters are replaced by generated options."""
    if not isinstance(annotation, str):
        return annotation
    try:
        return eval(annotation, {**vars(typing), **fn.__globals__})  # noqa: S307 - our own source's annotations
    except NameError:
        return annotation


def _built(cls: type, values: dict[str, Any], file_values: dict[str, Any], path: Path | None, ctx) -> Any:
    """The config from the command line's values over the file's, through ``core.config.build``."""
    merged: dict[str, Any] = {}
    from_file = False
    for name, v in values.items():
        src = ctx.get_parameter_source(name) if ctx is not None else None
        by_user = src is not None and src.name in _FROM_USER
        if name in file_values and not by_user:
            merged[name] = file_values[name]
            from_file = True
        elif v is not None and v != []:
            merged[name] = v
    for name in set(file_values) - set(values):  # settings with no option (cli=False) may still come from a file
        if name in flat_names(cls):
            merged[name] = file_values[name]
            from_file = True
    try:
        return build(
            cls,
            nest(cls, merged),
            f"{path}: " if from_file else "",
            error=ConfigFileError if from_file else ConfigError,
        )
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


def with_configs(config_file: str | None = None, **configs: type) -> Callable[[Callable], Callable]:
    """Decorator: generate the command-line options of the given config dataclasses (see module docstring)."""

    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        own = [
            p.replace(annotation=_annotation(fn, p.annotation))
            for name, p in sig.parameters.items()
            if name not in configs
        ]
        taken = {p.name for p in own}
        fields_of: dict[str, list[str]] = {}
        generated: list[inspect.Parameter] = []
        for arg, cls in configs.items():
            fields_of[arg] = []
            for p in config_options(cls, panel=getattr(cls, "PANEL", None)):
                if p.name in taken:
                    raise TypeError(f"option {p.name!r} of {cls.__name__} clashes with another option of {fn.__name__}")
                taken.add(p.name)
                generated.append(p)
                fields_of[arg].append(p.name)
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
            for cls in configs.values():  # a nested config may be given as a mapping of its own: flatten it
                for name in nested_fields(cls):
                    if isinstance(file_values.get(name), dict):
                        file_values = {**{k: v for k, v in file_values.items() if k != name}, **file_values[name]}
            every = {n for cls in configs.values() for n in flat_names(cls)}
            unknown = sorted(set(file_values) - every)
            if unknown:
                known = sorted(n for names in fields_of.values() for n in names)
                raise typer.BadParameter(
                    f"{path}: unknown setting(s) {', '.join(unknown)}; valid settings: {', '.join(known)}"
                )
            built = {
                arg: _built(cls, {n: kwargs.pop(n) for n in fields_of[arg]}, file_values, path, ctx)
                for arg, cls in configs.items()
            }
            return fn(**kwargs, **built)

        params = [p.replace(kind=_KW) if p.kind != _KW else p for p in own] + generated
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return deco
