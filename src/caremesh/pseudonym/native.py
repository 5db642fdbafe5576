"""Compiled pseudonymisation: the engine's hot modules built with mypyc, used only while fresh.

The research stage spends its CPU in five modules of `caremesh.pseudonym` (the walk, its plans,
the rule automaton, the value methods and the output labels). `caremesh native build` compiles
exactly those sources with mypyc (from the `dev` extra, plus a C compiler and the Python
headers) into a directory of extension modules with a manifest of the SHA-256 of each source
it compiled and the interpreter ABI it compiled for. `scripts/bootstrap.sh` (so `make demo`,
`make test` and CI) runs it whenever the manifest is out of date.

When `caremesh.pseudonym` is imported, `install` compares that manifest with the sources on
disk. Only if every source is byte-for-byte the one compiled and the ABI matches does it put a
finder in front of the import system that loads the compiled modules; otherwise the pure Python
modules run, unchanged, and `status()` says why. An edited source is therefore never shadowed
by an older build, and the two forms give the same results (pinned by
`tests/unit/pseudonym/test_native.py`).

- `CAREMESH_NATIVE=0` turns the compiled modules off (pure Python);
- `CAREMESH_NATIVE_DIR` moves the build (default: `_native/` beside this package).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from caremesh.errors import NativeBuildError

MODULES = (
    "caremesh.pseudonym.automaton",
    "caremesh.pseudonym.engine",
    "caremesh.pseudonym.output",
    "caremesh.pseudonym.plan",
    "caremesh.pseudonym.values",
)
"""The compiled modules: where `Anonymizer.apply` spends its time."""

MANIFEST = "build-manifest"
"""JSON, without a .json suffix: package-data globs must never ship a local build's manifest."""
_PACKAGE = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Status:
    """Whether the compiled modules are in use, and if not, why not."""

    active: bool
    reason: str
    directory: Path

    def describe(self) -> str:
        """One line for logs and `caremesh native status`."""
        if self.active:
            return f"compiled (mypyc, {self.directory})"
        return f"pure Python ({self.reason})"


_status: Status | None = None


def directory() -> Path:
    """Where the build lives: `CAREMESH_NATIVE_DIR`, or `_native/` beside the package."""
    configured = os.environ.get("CAREMESH_NATIVE_DIR")
    return Path(configured) if configured else _PACKAGE / "_native"


def abi() -> str:
    """The interpreter ABI the extension modules must match."""
    return str(sysconfig.get_config_var("SOABI") or sys.implementation.cache_tag)


def source(module: str) -> Path:
    """The source file of one of `MODULES` in this installation."""
    return _PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py")


def digest(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check(where: Path) -> tuple[str | None, dict[str, Path]]:
    """(None, module -> extension file) when the build in `where` matches this installation's
    sources and interpreter; otherwise (why not, {})."""
    try:
        manifest = json.loads((where / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "not built: run `caremesh native build`", {}
    except (OSError, ValueError):
        return "unreadable build manifest: run `caremesh native build`", {}
    if not isinstance(manifest, dict) or manifest.get("abi") != abi():
        return "built for another Python: run `caremesh native build`", {}
    sources = manifest.get("sources")
    files = manifest.get("files")
    if not isinstance(sources, dict) or not isinstance(files, dict):
        return "unreadable build manifest: run `caremesh native build`", {}
    if set(sources) != set(MODULES):
        return "built for other modules: run `caremesh native build`", {}
    for module in MODULES:
        if sources[module] != digest(source(module)):
            return "out of date with the sources: run `caremesh native build`", {}
    found: dict[str, Path] = {}
    for name, relative in files.items():
        path = where / str(relative)
        if not path.is_file():
            return "incomplete build: run `caremesh native build`", {}
        found[str(name)] = path
    return None, found


class _Finder(importlib.abc.MetaPathFinder):
    """Serves the compiled modules (and mypyc's shared library) from the build directory."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(
        self,
        fullname: str,
        path: object = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        del path, target
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def install() -> Status:
    """Put the compiled modules in front of the pure ones if they are fresh (once per process).

    Called by `caremesh.pseudonym` before it imports its modules."""
    global _status  # noqa: PLW0603 - one decision per process
    if _status is not None:
        return _status
    where = directory()
    if os.environ.get("CAREMESH_NATIVE", "1").strip().lower() in {"0", "false", "no", "off"}:
        _status = Status(False, "CAREMESH_NATIVE=0", where)
        return _status
    already = [m for m in MODULES if m in sys.modules]
    if already:
        _status = Status(False, "pseudonym modules imported before the check", where)
        return _status
    reason, files = check(where)
    if reason is None:
        sys.meta_path.insert(0, _Finder(files))
        _status = Status(True, "", where)
    else:
        _status = Status(False, reason, where)
    return _status


def status() -> Status:
    """What `install` decided in this process (it decides now if nothing imported it yet)."""
    return install()


def build(where: Path | None = None, *, force: bool = False, quiet: bool = False) -> Status:
    """Compile `MODULES` with mypyc into `where` unless a fresh build is already there.

    The sources are copied into a scratch directory first, so the installation is never
    touched, and the new build replaces the old one only once it is complete. Raises
    `NativeBuildError` when mypyc is missing or the compilation fails."""
    where = where or directory()
    reason, _files = check(where)
    if reason is None and not force:
        return Status(True, "", where)
    try:
        import mypyc  # noqa: F401, PLC0415 - only to fail early with a useful message
    except ImportError:
        raise NativeBuildError(
            "mypyc is not installed: install the dev extra (pip install 'caremesh[dev]')"
        ) from None
    with tempfile.TemporaryDirectory(prefix="caremesh-native-") as scratch:
        root = Path(scratch)
        shutil.copytree(
            _PACKAGE,
            root / "caremesh",
            ignore=shutil.ignore_patterns("__pycache__", "_native", "*.so"),
        )
        # mypyc type-checks what the modules import (caremesh.fhir and its HL7 v2 library, which
        # ships no types) without a project config here: those imports are read, not judged.
        (root / "mypy.ini").write_text(
            "[mypy]\nignore_missing_imports = True\nfollow_imports = silent\n"
        )
        targets = [str(Path(*m.split("."))) + ".py" for m in MODULES]
        sources = {m: digest(root / t) for m, t in zip(MODULES, targets, strict=True)}
        result = subprocess.run(  # noqa: S603 - our interpreter, fixed arguments
            [sys.executable, "-m", "mypyc", *targets],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "MYPYC_OPT_LEVEL": os.environ.get("MYPYC_OPT_LEVEL", "3")},
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
            raise NativeBuildError(f"mypyc failed (exit {result.returncode}):\n{tail}")
        built = next((root / "build").glob("lib.*"), None)
        if built is None:
            raise NativeBuildError("mypyc produced no extension modules")
        where.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".native-", dir=where.parent))
        staging.chmod(0o755)
        files: dict[str, str] = {}
        suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
        for ext in built.rglob("*"):
            if not ext.name.endswith(suffixes):
                continue
            relative = ext.relative_to(built)
            name = ".".join((*relative.parent.parts, ext.name.split(".")[0]))
            (staging / relative.parent).mkdir(parents=True, exist_ok=True)
            shutil.copy2(ext, staging / relative)
            files[name] = str(relative)
        missing = [m for m in MODULES if m not in files]
        if missing:
            shutil.rmtree(staging, ignore_errors=True)
            raise NativeBuildError(f"mypyc did not build {', '.join(missing)}")
        manifest = {"abi": abi(), "sources": sources, "files": files}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    old = where.with_name(where.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if where.exists():
        where.rename(old)
    staging.rename(where)
    shutil.rmtree(old, ignore_errors=True)
    if not quiet:
        print(f"caremesh native: compiled {len(MODULES)} modules into {where}")
    reason, _files = check(where)
    return Status(reason is None, reason or "", where)
