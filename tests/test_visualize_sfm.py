"""tools/visualize_sfm.py draws its picture, and the ARS it draws lowers the above-Nyquist power."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.abspath(__file__ + "/.."))


def _tool():
    spec = importlib.util.spec_from_file_location(
        "visualize_sfm", os.path.join(ROOT, "tools", "visualize_sfm.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_visualize_sfm_writes_the_picture(tmp_path):
    pytest.importorskip("matplotlib")
    out = str(tmp_path / "ars.png")
    before, after = _tool().main(["--size", "96", "--kernel", "31", "--fwhm", "16", "--out", out])
    assert os.path.getsize(out) > 10_000
    assert before > 0.05 and after < 0.6 * before


def test_visualize_sfm_rejects_an_even_kernel(tmp_path):
    with pytest.raises(SystemExit):
        _tool().main(["--kernel", "8", "--out", str(tmp_path / "x.png")])
