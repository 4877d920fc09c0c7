"""Files the tool writes follow the user's umask: written under a temporary name and
renamed into place, they would otherwise keep the temporary file's mode (a library may
create it 0600), and colleagues sharing a lab folder could read a dictionary's config
but not its weights."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from autointerp.dictionaries.dictionary import Dictionary
from autointerp.harvest.store import atomic_write_json


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        W = torch.eye(4)
        folder = Dictionary(W, torch.zeros(4), W.clone(), torch.zeros(4),
                            meta={"method": "t"}).save(tmp_path / "d")
        atomic_write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert mode(folder / "dictionary.safetensors") == expected
    assert mode(folder / "config.json") == expected
    assert mode(tmp_path / "x.json") == expected
