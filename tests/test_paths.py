"""lesion.paths: the one output-path check and the one atomic write."""
from __future__ import annotations

import os

import pytest

from lesion.errors import ConfigError, DataError
from lesion.paths import atomic_target, check_file_target, check_folder_target, check_out_file, write_atomic


def test_check_file_and_folder_targets(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    check_file_target(tmp_path / "new" / "deeper" / "out.csv")  # nothing exists yet: fine, nothing created
    assert not (tmp_path / "new").exists()
    with pytest.raises(ConfigError, match=r"--out: .* is a folder, not a file name"):
        check_file_target(tmp_path)
    with pytest.raises(ConfigError, match=r"--model: .*afile is a file, so .* cannot be written inside it"):
        check_file_target(afile / "sub" / "m.onnx", "--model")
    check_folder_target(tmp_path / "runs" / "x", "--runs-dir")
    with pytest.raises(ConfigError, match=r"--runs-dir: .*afile is a file, not a folder"):
        check_folder_target(afile / "runs", "--runs-dir")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_folder_target(afile)


def test_check_out_file_adds_exists_and_writable(tmp_path):
    out = tmp_path / "sub" / "r.csv"
    check_out_file(out, overwrite=False)
    assert out.parent.is_dir() and list(out.parent.iterdir()) == []  # the write test leaves nothing
    out.write_text("old")
    with pytest.raises(DataError, match="already exists"):
        check_out_file(out, overwrite=False, exists_error=DataError)
    check_out_file(out, overwrite=True)
    with pytest.raises(ConfigError, match="is a folder"):
        check_out_file(tmp_path, overwrite=True)


def test_atomic_target_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "t.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_target(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".json"  # same folder, same suffix
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["t.json"]
    assert write_atomic(target, "new") == target and target.read_text() == "new"
    write_atomic(tmp_path / "deep" / "b.bin", b"\x00\x01")
    assert (tmp_path / "deep" / "b.bin").read_bytes() == b"\x00\x01"
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert sorted(os.listdir(tmp_path)) == ["deep", "t.json"]  # no temporary file left
