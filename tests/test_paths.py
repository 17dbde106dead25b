"""The data folder: which one is chosen, its layout, and finding installed models."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
import pytest

from llamavid.errors import UserError
from llamavid.hub.installed import list_models
from llamavid.paths import ENV_VAR, DataDir, resolve_data_dir
from llamavid.storage import human_size


def test_option_wins_over_env_and_default(tmp_path: Path) -> None:
    env = {ENV_VAR: str(tmp_path / "from-env")}
    assert resolve_data_dir(tmp_path / "from-option", env) == tmp_path / "from-option"


def test_env_wins_over_default(tmp_path: Path) -> None:
    assert resolve_data_dir(None, {ENV_VAR: str(tmp_path / "from-env")}) == tmp_path / "from-env"


def test_default_is_platform_user_data_dir() -> None:
    expected = Path(platformdirs.user_data_dir("llamavid", appauthor=False))
    assert resolve_data_dir(None, {}) == expected
    assert resolve_data_dir("", {ENV_VAR: ""}) == expected, "empty values must count as unset"


def test_os_environ_is_used_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "x"))
    assert resolve_data_dir() == tmp_path / "x"


def test_relative_and_home_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir("rel/data", {}) == tmp_path / "rel" / "data"
    assert resolve_data_dir("~/d", {}) == tmp_path / "home" / "d"


def test_a_file_is_rejected_with_a_user_error(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        resolve_data_dir(f, {})
    with pytest.raises(UserError, match=ENV_VAR):
        resolve_data_dir(None, {ENV_VAR: str(f)})


def test_layout_and_create(tmp_path: Path) -> None:
    dd = DataDir(tmp_path / "d")
    assert dd.models == tmp_path / "d" / "models"
    assert dd.features == tmp_path / "d" / "cache" / "features"
    assert dd.database == tmp_path / "d" / "library.db"
    assert dd.settings.parent == dd.root and dd.logs.parent == dd.root
    assert not dd.root.exists(), "building the layout must not touch the disk"
    assert dd.create() is dd
    for folder in (dd.root, dd.models, dd.features, dd.logs):
        assert folder.is_dir()
    assert not dd.database.exists(), "files are created by their owners, not by create()"
    dd.create()  # idempotent


def test_create_failure_is_a_user_error(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should go")
    with pytest.raises(UserError, match="cannot create the data folder"):
        DataDir(blocker / "data").create()


def test_installed_models_finds_model_folders(data_dir: Path, make_model) -> None:
    make_model(data_dir, "zeta", size=2000)
    make_model(data_dir, "Alpha", size=500)
    (data_dir / "models" / "no-config").mkdir()
    (data_dir / "models" / "no-config" / "weights.bin").write_bytes(b"1")
    (data_dir / "models" / "stray-file.txt").write_text("not a model")
    hidden = make_model(data_dir, ".partial-download")
    assert hidden.exists()

    found = list_models(data_dir)
    assert [m.name for m in found] == ["Alpha", "zeta"]
    zeta = found[1]
    assert zeta.path == data_dir / "models" / "zeta"
    assert zeta.size_bytes == 2000 + (zeta.path / "config.json").stat().st_size  # weights + config
    assert list_models(DataDir(data_dir)) == found, "accepts a DataDir or a path"


def test_installed_models_follows_symlinks(tmp_path: Path, data_dir: Path, make_model) -> None:
    elsewhere = make_model(tmp_path / "elsewhere", "big-checkpoint", size=4096)
    (data_dir / "models").mkdir(exist_ok=True)
    os.symlink(elsewhere, data_dir / "models" / "linked")
    os.symlink(tmp_path / "nowhere", data_dir / "models" / "broken-link")
    (m,) = list_models(data_dir)
    assert m.name == "linked"
    assert m.size_bytes >= 4096


def test_no_models_folder_means_no_models(tmp_path: Path) -> None:
    assert list_models(tmp_path / "does-not-exist") == []


@pytest.mark.parametrize(
    ("n", "text"), [(0, "0 B"), (999, "999 B"), (1500, "1.5 kB"), (13_476_000_000, "13.5 GB"), (2e15, "2000.0 TB")]
)
def test_human_size(n: float, text: str) -> None:
    assert human_size(n) == text
