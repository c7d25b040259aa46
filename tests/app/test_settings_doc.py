"""The settings reference and .env.example are what app.settings_doc writes from the
settings' own descriptions: a new setting cannot go undocumented, nor a default be restated
by hand and drift."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app import settings_doc
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MMR_VAR = re.compile(r"\bMMR_[A-Z0-9_]+\b")


def test_every_setting_has_a_description() -> None:
    undocumented = [name for name, field in Settings.model_fields.items() if not field.description]
    assert not undocumented, f"describe these fields in app/settings.py: {undocumented}"


@pytest.mark.parametrize("target", settings_doc.TARGETS, ids=lambda t: t.path)
def test_the_committed_file_is_what_the_generator_writes(target: settings_doc.Target) -> None:
    committed = (ROOT / target.path).read_text(encoding="utf-8")
    assert committed == target.render(), (
        f"{target.path} is out of date: run `python -m app.settings_doc`"
    )


def test_the_reference_names_every_setting_with_its_default_and_description() -> None:
    page = settings_doc.reference_page()
    for name, field in Settings.model_fields.items():
        section = page.split(f"## MMR_{name.upper()}\n", 1)[1].split("\n## ", 1)[0]
        assert f"Default: {settings_doc.default_markdown(field.default)} · " in section, name
        assert " ".join(str(field.description).split()) in " ".join(section.split()), name


def test_defaults_and_choices_come_from_the_fields() -> None:
    page = settings_doc.reference_page()
    assert "Default: `./data` · a path" in page  # a relative path shown as one
    assert "Default: `64000000` · an integer" in page and "Default: `50` · a number" in page
    assert "Default: empty · a path, or empty" in page
    assert "one of `auto`, `fp32`, `bf16`, `fp16`, `int8`, `fp32-onnx`" in page
    assert "an integer >= 1" in page and "a number > 0" in page


def test_env_example_shows_every_default_and_no_markdown_links() -> None:
    text = settings_doc.env_example()
    for name, field in Settings.model_fields.items():
        assert f"\n# MMR_{name.upper()}={settings_doc.env_default(field.default)}\n" in text
    assert "](" not in text  # a link becomes its text, its page follows the description
    assert "See docs/models.md#precision." in text
    assert set(MMR_VAR.findall(text)) == {f"MMR_{n.upper()}" for n in Settings.model_fields}


def test_check_mode_reports_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pyproject.toml").write_text("", encoding="utf-8")
    for target in settings_doc.TARGETS:
        (tmp_path / target.path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / target.path).write_text(target.render(), encoding="utf-8")
    assert settings_doc.main(["--check", "--root", str(tmp_path)]) == 0
    (tmp_path / "docs" / "settings.md").write_text("old\n", encoding="utf-8")
    assert settings_doc.main(["--check", "--root", str(tmp_path)]) == 1
    assert "docs/settings.md" in capsys.readouterr().err
    assert settings_doc.main(["--root", str(tmp_path)]) == 0
    assert settings_doc.main(["--check", "--root", str(tmp_path)]) == 0
