"""pipeline.settings: where the data folder is and how env vars and flags combine."""
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import StudioSettings, default_data_dir


def test_data_dir_from_env_var_wins(tmp_path):
    assert default_data_dir({"DA_STUDIO_DATA": str(tmp_path), "SPACE_ID": "x/y"}) == tmp_path


def test_data_dir_defaults_to_local_folder_off_a_space():
    assert default_data_dir({}) == Path("data")


def test_data_dir_on_a_space_uses_persistent_storage_only_when_writable(monkeypatch, tmp_path):
    import pipeline.settings as s
    monkeypatch.setattr(s, "SPACE_DATA_DIR", tmp_path)
    assert default_data_dir({"SPACE_ID": "me/studio"}) == tmp_path / "depth-anything-studio"
    monkeypatch.setattr(s, "SPACE_DATA_DIR", tmp_path / "absent")
    assert default_data_dir({"SPACE_ID": "me/studio"}) == Path("data")


def test_from_env_reads_caps_and_paths(tmp_path):
    s = StudioSettings.from_env({"DA_STUDIO_DATA": str(tmp_path), "DA_STUDIO_MAX_UPLOAD_MB": "2",
                                 "DA_STUDIO_MAX_PIXELS": "1000", "DA_STUDIO_CHECKPOINT": "w.pth"})
    assert (s.data_dir, s.max_upload_bytes, s.max_pixels, s.checkpoint) == (tmp_path, 2 * 1024 * 1024, 1000, "w.pth")
    assert s.database == tmp_path / "studio.db"
    assert s.temp_dir == tmp_path / "tmp"


def test_flags_override_env_but_none_keeps_env(tmp_path):
    s = StudioSettings.from_env({"DA_STUDIO_DATA": str(tmp_path)})
    t = s.with_overrides(db_path=tmp_path / "other.db", checkpoint=None, data_dir=None)
    assert t.database == tmp_path / "other.db"
    assert t.data_dir == tmp_path and t.checkpoint == s.checkpoint


def test_bad_values_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="DA_STUDIO_MAX_UPLOAD_MB='lots'"):
        StudioSettings.from_env({"DA_STUDIO_MAX_UPLOAD_MB": "lots"})
    with pytest.raises(ConfigError, match="colour map 'rainbowz'"):
        StudioSettings(data_dir=tmp_path, cmap="rainbowz")


def test_ensure_dirs_creates_data_and_temp(tmp_path):
    s = StudioSettings(data_dir=tmp_path / "d").ensure_dirs()
    assert s.temp_dir.is_dir() and s.data_dir.is_dir()


def test_import_root_is_one_setting_from_env_or_flag(tmp_path):
    default = StudioSettings.from_env({"DA_STUDIO_DATA": str(tmp_path / "d")})
    assert default.allowed_import_root == (tmp_path / "d" / "import").resolve()
    from_env = StudioSettings.from_env({"DA_STUDIO_DATA": str(tmp_path / "d"),
                                        "DA_STUDIO_IMPORT_ROOT": str(tmp_path / "photos")})
    assert from_env.allowed_import_root == (tmp_path / "photos").resolve()
    flag = from_env.with_overrides(import_root=tmp_path / "nas")
    assert flag.allowed_import_root == (tmp_path / "nas").resolve()
