"""Training inside napari: building a torch optimiser after Qt is up must not crash."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.gui


@pytest.mark.slow
def test_optimizer_after_qt_in_a_fresh_process():
    code = (
        "import napari\n"
        "v = napari.Viewer(show=False)\n"
        "import napari_histoai.widgets.detect_widget\n"
        "import torch\n"
        "m = torch.nn.Linear(3, 2)\n"
        "opt = torch.optim.AdamW(m.parameters(), lr=1e-3)\n"
        "m(torch.ones(1, 3)).sum().backward(); opt.step()\n"
        "print('trained')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "trained" in r.stdout, r.stderr[-2000:]
