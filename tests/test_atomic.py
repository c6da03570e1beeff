"""vae/atomic.py: the one way files are written in place."""
import json
import os
import stat

import pytest

from vae.atomic import PRIVATE, SHARED, atomic_path, write_bytes, write_json


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mode", [SHARED, PRIVATE])
def test_the_file_gets_the_mode_asked_for_whatever_the_umask(tmp_path, mode):
    old = os.umask(0o077)  # the test's own process: a umask that would hide the file from others
    try:
        write_bytes(tmp_path / "a.bin", b"new", mode)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.bin") == mode and (tmp_path / "a.bin").read_bytes() == b"new"


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "record.json"
    write_json(path, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text('{"v": 2, "half')
        raise RuntimeError("crash mid-write")
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_the_temporary_file_sits_beside_the_target_under_the_name_clean_up_knows(tmp_path):
    with atomic_path(tmp_path / "sub" / "m-vae.safetensors") as tmp:
        assert tmp.parent == tmp_path / "sub" and tmp.name.startswith(".m-vae.safetensors.") and tmp.suffix == ".tmp"
        tmp.write_bytes(b"x")
    assert (tmp_path / "sub" / "m-vae.safetensors").read_bytes() == b"x" and not tmp.exists()


def test_json_keywords_pass_through(tmp_path):
    write_json(tmp_path / "s.json", {"b": 1, "a": 2}, sort_keys=True, indent=1)
    assert (tmp_path / "s.json").read_text() == '{\n "a": 2,\n "b": 1\n}'
