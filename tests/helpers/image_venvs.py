"""Fresh virtualenvs of the images' requirements files, and running code in them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import venv
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from tests.helpers.deploy_files import REPO, read_pins

IMAGE_REQUIREMENTS = sorted((REPO / "docker").glob("*/requirements.txt"))


class ImageVenvs:
    """Fresh virtualenvs of the images' requirements files, built concurrently in the background."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._pool = ThreadPoolExecutor(max_workers=len(IMAGE_REQUIREMENTS) or 1)
        self._builds: dict[str, Future] = {
            path.parent.name: self._pool.submit(self._build, path) for path in IMAGE_REQUIREMENTS
        }

    def _build(self, requirements: Path) -> tuple[Path, float]:
        read_pins(requirements)  # pins only: an index option would make pip reach for the network
        started = time.monotonic()
        target = self.root / requirements.parent.name
        venv.create(target, with_pip=False, symlinks=True)
        # This interpreter's pip installs into the venv (--python): a current pip resolves about twice
        # as fast as the one ensurepip would put there. Quiet, no bytecode compilation (a third of the
        # install time); pip's own download cache stays on.
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(target / "bin" / "python"),
            "install",
            "-q",
            "--no-compile",
            "--disable-pip-version-check",
            "--no-input",
            "-r",
            str(requirements),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"pip install -r {requirements.relative_to(REPO)} failed:\n{result.stderr[-4000:]}"
            )
        return target, time.monotonic() - started

    def python(self, image: str) -> Path:
        """The venv's interpreter once its install finished; fails with pip's error otherwise."""
        if image not in self._builds:
            raise KeyError(f"no docker/{image}/requirements.txt")
        target, seconds = self._builds[image].result(timeout=900)
        print(f"venv of docker/{image}/requirements.txt installed in {seconds:.0f} s")
        return target / "bin" / "python"

    def close(self) -> None:
        """Wait for the builds, then delete the venvs (about 3 GB, not worth keeping for later sessions)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.root, ignore_errors=True)


def run_in(python: Path, code: str, *, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run ``code`` with an image venv's interpreter from the repository root; returns stdout."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VIGIL_", "PYTHONPATH"))}
    result = subprocess.run(
        [str(python), "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**clean, "PYTHONPATH": str(REPO), **(env or {})},
    )
    if result.returncode != 0:
        raise AssertionError(f"{python} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result.stdout
