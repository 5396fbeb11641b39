""""Load model…" for the docks that keep a model list (``_picked``, ``refresh_models(select=)``)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from qtpy.QtWidgets import QFileDialog


def offer_model_folder(section, folder: Optional[str], kind: str, title: str,
                       notify: Callable[[str], object]) -> Optional[str]:
    """Ask for a model folder (when ``folder`` is None), check that it holds a ``kind`` model
    (else one line to ``notify``), add it to ``section``'s list and select it. Returns its name."""
    from ..errors import JobError
    from ..models import read_config

    if folder is None:
        folder = QFileDialog.getExistingDirectory(section, title)
        if not folder:
            return None
    try:
        read_config(folder, kind)
    except JobError as e:
        notify(str(e))
        return None
    name = Path(folder).name
    section._picked[name] = Path(folder)
    section.refresh_models(select=name)
    return name
