"""docs/engine.md documents every engine flag, with the default the code has."""

from pathlib import Path

from dpbalance.engine.config import EngineConfig

DOC = (Path(__file__).parents[2] / "docs" / "engine.md").read_text()


def test_every_engine_flag_is_in_the_settings_table_with_its_default():
    cfg = EngineConfig()
    for name in EngineConfig.__dataclass_fields__:
        flag = "--" + name.replace("_", "-")
        rows = [line for line in DOC.splitlines() if line.startswith(f"| `{flag}`")]
        assert rows, f"{flag} missing from docs/engine.md's settings table"
        default = getattr(cfg, name)
        if isinstance(default, bool):
            assert ("off" if not default else "on") in rows[0], flag
        elif isinstance(default, int) or default == "unlimited":
            assert str(default) in rows[0], flag
