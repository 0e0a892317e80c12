"""Command-line options generated from config dataclasses, and config files that flags override."""

from dataclasses import dataclass, field
from typing import Literal

import typer
from typer.testing import CliRunner

from dpbalance.cli.options import with_configs


@dataclass(frozen=True)
class Demo:
    workers: int = field(default=8, metadata={"doc": "workers", "flags": ("--workers", "-G"), "min": 1})
    mode: Literal["a", "b"] = field(default="a", metadata={"doc": "mode"})
    urls: tuple[str, ...] = field(default=(), metadata={"doc": "urls", "flags": ("--url",)})
    rate: float | None = field(default=None, metadata={"doc": "rate"})
    fast: bool = field(default=False, metadata={"doc": "fast"})
    hidden: int = field(default=3, metadata={"doc": "internal", "cli": False})

    def __post_init__(self):
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be > 0")


def app_for(seen):
    app = typer.Typer()

    @app.command()
    @with_configs(config_file="--config", demo=Demo)
    def run(name: str = "x", *, demo: Demo):
        seen.append((name, demo))

    @app.command()
    def other():  # a second command keeps typer in sub-command mode
        pass

    return app


def invoke(args):
    seen = []
    r = CliRunner().invoke(app_for(seen), ["run", *args], env={"COLUMNS": "400"})
    return r, (seen[0] if seen else None)


def test_every_field_becomes_an_option_with_types_bounds_and_validation():
    r, (name, d) = invoke(["-G", "3", "--mode", "b", "--url", "u1", "--url", "u2", "--rate", "2.5", "--fast"])
    assert r.exit_code == 0 and d == Demo(3, "b", ("u1", "u2"), 2.5, True, 3)
    assert invoke([])[1][1] == Demo()
    for bad in (["-G", "0"], ["--mode", "c"], ["--rate", "-1"], ["--hidden", "4"]):
        r, got = invoke(bad)
        assert r.exit_code == 2 and got is None, bad
    assert "rate must be > 0" in invoke(["--rate", "-1"])[0].output


def test_config_file_is_the_base_and_flags_override_it(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("workers: 5\nmode: b\nurls: [p, q]\n")
    assert invoke(["--config", str(f)])[1][1] == Demo(5, "b", ("p", "q"))
    assert invoke(["--config", str(f), "-G", "7"])[1][1] == Demo(7, "b", ("p", "q"))
    t = tmp_path / "c.toml"
    t.write_text("workers = 4\nfast = true\n")
    assert invoke(["--config", str(t)])[1][1] == Demo(4, fast=True)


def test_bad_config_files_are_clear_errors(tmp_path):
    cases = {
        "typo.yaml": ("workrs: 5\n", "unknown setting(s) workrs"),
        "type.yaml": ("workers: many\n", "workers"),
        "list.yaml": ("- 1\n", "expected a mapping"),
        "bad.json": ("{", "does not parse"),
    }
    for name, (text, msg) in cases.items():
        p = tmp_path / name
        p.write_text(text)
        r, got = invoke(["--config", str(p)])
        assert r.exit_code == 2 and got is None and msg in " ".join(r.output.split()), (name, r.output)
