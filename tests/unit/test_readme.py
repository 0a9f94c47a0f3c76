"""The README's table of settings is the settings model: every field is documented."""

from __future__ import annotations

from shared.settings import PROJECT_ROOT, Settings


def test_every_setting_is_in_the_readme() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()

    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in readme]

    assert not missing, f"add these settings to the README's table: {missing}"
