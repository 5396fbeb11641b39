"""Thin Qt docks: read layers, start jobs, show results. No numerics here.

Importing this package happens inside a running Qt application. The CUDA build of torch ships
triton, whose extension module segfaults when it is first imported after PyQt6 (torch imports
it lazily, e.g. when an optimiser is built: torch.optim -> torch._dynamo -> triton). Our jobs
never use torch.compile, so in the GUI process we mark triton as unavailable before torch can
reach for it; torch then treats it as not installed. Scripts and the CLI are unaffected.
"""

import sys

if "triton" not in sys.modules:
    sys.modules["triton"] = None  # type: ignore[assignment]
