"""`caremesh pseudonymise`: the research rules applied offline to FHIR JSON and NDJSON files.

    caremesh pseudonymise --config gdpr-research IN OUT

- RULES (`--config`) is a shipped preset (`caremesh.pseudonym.preset_names()`) or the path of
  an anonymizer rule file (Microsoft FHIR-Tools-for-Anonymization format, DESIGN §6).
- IN is a file or a folder (searched recursively for `*.json`, `*.ndjson`, `*.jsonl`); OUT is a
  file for a file, a folder for a folder (the tree is mirrored). A `.json` file holds one
  resource or Bundle; `.ndjson` / `.jsonl` one resource per line. An output is written to a
  temporary name and renamed when complete; existing outputs are refused without `--force`.
- Keys (`--keys derived`, the default) are the study's keys derived from the master key
  (`CAREMESH_PSEUDONYM__MASTER_KEY`, a secret file under `CAREMESH_SECRETS_DIR`, or
  `--key-file`), as the research stage derives them for `--study` (default `offline`): the
  same study name gives the same cryptoHash values, date shifts and pseudonyms as the study's
  stream. The patient key of each resource (for the
  patient-scoped date shift and pseudonyms) is found as the validate stage finds it (DESIGN §3),
  source `--source` (default `offline`), learning INS mappings from Patient resources as it goes.
- `--keys rule-file` takes the keys from the rule file's `parameters` instead, as the upstream
  anonymizer does (its output, hash for hash), without a master key and after one warning on
  stderr; a file whose rules need a key it does not carry is a ConfigurationError (exit 2).
- A record that is not JSON, not a FHIR resource, or that the rules cannot process is skipped and
  reported with its file and line and an error code, never its content; the exit code is then 4.
  A progress bar on stderr counts input bytes (`--quiet` turns it off).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from caremesh.envelope import KeyId
from caremesh.errors import ConfigurationError, PseudonymisationError
from caremesh.fhir.patient_key import patient_key
from caremesh.pseudonym.engine import Anonymizer
from caremesh.pseudonym.keys import Keyring, master_key_bytes
from caremesh.pseudonym.presets import load_preset, preset_names
from caremesh.pseudonym.ruleset import RuleSet, load_rules
from caremesh.pseudonym.study import study_anonymizer
from caremesh.settings import PseudonymSettings, Settings

log = logging.getLogger(__name__)

NDJSON_SUFFIXES: Final = (".ndjson", ".jsonl")
JSON_SUFFIXES: Final = (".json",)
UTF8_BOM: Final = b"\xef\xbb\xbf"
MAX_REPORTED: Final = 20
"""Rejected records listed one by one; the rest are only counted."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that was skipped: where it was and why (a code, never a value)."""

    path: Path
    line: int
    code: str


@dataclass
class Summary:
    """What one run did."""

    files: int = 0
    resources: int = 0
    rejections: list[Rejection] = field(default_factory=list)


def load_ruleset(name: str) -> RuleSet:
    """A shipped preset by name, or a rule file by path."""
    if name in preset_names():
        return load_preset(name)
    path = Path(name)
    if not path.is_file():
        raise ConfigurationError(
            f"--config {name}: neither a preset ({', '.join(preset_names())}) nor a rule file"
        )
    return load_rules(path)


def read_master_key(pseudonym: PseudonymSettings, key_file: Path | None) -> bytes:
    """The master key from `--key-file`, else from the settings (environment or secret file)."""
    if key_file is not None:
        try:
            text = key_file.read_text(encoding="utf-8").strip()
        except OSError:
            raise ConfigurationError(f"--key-file {key_file}: cannot be read") from None
        return master_key_bytes(text)
    secret = pseudonym.master_key
    if secret is None:
        raise ConfigurationError(
            "no master key: set CAREMESH_PSEUDONYM__MASTER_KEY (hex or text, >= 32 bytes), "
            "put it in a secret file under CAREMESH_SECRETS_DIR, or pass --key-file FILE"
        )
    return master_key_bytes(secret.get_secret_value())


RULE_FILE_KEYS_WARNING: Final = (
    "warning: --keys rule-file uses the keys written in the rule file: anyone who has the file "
    "can recompute its hashes and date shifts; use --keys derived (per-study keys) for studies"
)


def rule_file_anonymizer(ruleset: RuleSet, config: str) -> Anonymizer:
    """An Anonymizer with the rule file's own keys (upstream's behaviour), after one warning.

    A rule file whose methods need a key it does not carry is a ConfigurationError (one line,
    naming the missing parameter, never a value)."""
    missing = ruleset.missing_keys()
    if missing:
        raise ConfigurationError(
            f"--keys rule-file: {config} has no {' or '.join(missing)} in its parameters "
            "(add it, or use --keys derived with a master key)"
        )
    if ruleset.carries_keys():
        print(RULE_FILE_KEYS_WARNING, file=sys.stderr)
    return Anonymizer(ruleset)


def _is_input(path: Path) -> bool:
    return path.suffix.lower() in NDJSON_SUFFIXES + JSON_SUFFIXES


def plan(source: Path, target: Path, *, force: bool = False) -> list[tuple[Path, Path]]:
    """(input, output) file pairs; ConfigurationError for a missing, unreadable or unsafe pair."""
    if not source.exists():
        raise ConfigurationError(f"{source}: no such file or folder")
    if source.is_dir():
        if target.exists() and not target.is_dir():
            raise ConfigurationError(f"{target}: the input is a folder, so OUT must be a folder")
        if target.resolve().is_relative_to(source.resolve()):
            raise ConfigurationError(f"{target}: OUT must not be inside IN")
        pairs = [
            (path, target / path.relative_to(source))
            for path in sorted(source.rglob("*"))
            if path.is_file() and _is_input(path)
        ]
        if not pairs:
            raise ConfigurationError(f"{source}: no .json, .ndjson or .jsonl file in the folder")
    else:
        if not _is_input(source):
            raise ConfigurationError(f"{source}: expected a .json, .ndjson or .jsonl file")
        out = target / source.name if target.is_dir() else target
        pairs = [(source, out)]
    for src, out in pairs:
        if out.resolve() == src.resolve():
            raise ConfigurationError(f"{out}: OUT would overwrite its input")
        if out.exists() and not force:
            raise ConfigurationError(f"{out}: exists (pass --force to overwrite)")
    return pairs


class _Run:
    def __init__(self, anonymizer: Anonymizer, source_id: str, summary: Summary) -> None:
        self.anonymizer = anonymizer
        self.source_id = source_id
        self.summary = summary
        self.learned: dict[str, str] = {}

    def reject(self, path: Path, line: int, code: str) -> None:
        self.summary.rejections.append(Rejection(path, line, code))

    def one(self, path: Path, line: int, raw: bytes) -> dict[str, Any] | None:
        if line == 1 and raw.startswith(UTF8_BOM):
            raw = raw[len(UTF8_BOM) :]  # files written by .NET tools often begin with one
        try:
            resource: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.reject(path, line, "invalid-json")
            return None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            self.reject(path, line, "not-a-resource")
            return None
        found = patient_key(resource, self.source_id, self.learned)
        if found.learn is not None:
            self.learned[found.learn.local_key] = found.learn.ins
        try:
            out = self.anonymizer.apply(resource, patient_key=found.key)
        except PseudonymisationError as exc:
            self.reject(path, line, str(exc).split(":", 1)[0] or "pseudonymisation-error")
            return None
        self.summary.resources += 1
        return out

    def ndjson(self, path: Path, sink: IO[bytes], advance: Any) -> None:
        with path.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                advance(len(raw))
                if not raw.strip():
                    continue
                out = self.one(path, number, raw)
                if out is not None:
                    sink.write(orjson.dumps(out, option=orjson.OPT_APPEND_NEWLINE))

    def json(self, path: Path, sink: IO[bytes], advance: Any) -> bool:
        raw = path.read_bytes()
        advance(len(raw))
        out = self.one(path, 1, raw)
        if out is None:
            return False
        sink.write(orjson.dumps(out, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
        return True


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]pseudonymise"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def pseudonymise_files(
    anonymizer: Anonymizer,
    pairs: list[tuple[Path, Path]],
    *,
    source_id: str = "offline",
    progress: bool = True,
) -> Summary:
    """Pseudonymise every (input, output) pair; outputs appear complete or not at all."""
    summary = Summary()
    run = _Run(anonymizer, source_id, summary)
    total = sum(src.stat().st_size for src, _ in pairs)
    with _progress(progress) as bar:
        task = bar.add_task("files", total=total)

        def advance(n: int) -> None:
            bar.advance(task, n)

        for src, out in pairs:
            out.parent.mkdir(parents=True, exist_ok=True)
            partial = out.with_name(f".{out.name}.partial")
            with partial.open("wb") as sink:
                if src.suffix.lower() in NDJSON_SUFFIXES:
                    run.ndjson(src, sink, advance)
                    keep = True
                else:
                    keep = run.json(src, sink, advance)
            if keep:
                os.replace(partial, out)
                summary.files += 1
            else:
                partial.unlink()
    log.info(
        "pseudonymised: files=%d resources=%d rejected=%d",
        summary.files,
        summary.resources,
        len(summary.rejections),
    )
    return summary


def run_pseudonymise(
    settings: Settings,
    *,
    config: str,
    source: Path,
    target: Path,
    study: str = "offline",
    keys: str = "derived",
    key_file: Path | None = None,
    source_id: str = "offline",
    force: bool = False,
    progress: bool = True,
) -> int:
    """The `caremesh pseudonymise` command; returns its exit code (0, or 4 when some were
    rejected) and prints a summary. Configuration problems raise ConfigurationError."""
    ruleset = load_ruleset(config)
    if keys == "rule-file":
        anonymizer = rule_file_anonymizer(ruleset, config)
        key_note = "keys from the rule file"
    else:
        ring = Keyring.single(
            read_master_key(settings.pseudonym, key_file), KeyId(settings.pseudonym.key_id)
        )
        anonymizer = study_anonymizer(study, ring, ruleset)
        key_note = f"study {study}, key {ring.current}"
    pairs = plan(source, target, force=force)
    summary = pseudonymise_files(anonymizer, pairs, source_id=source_id, progress=progress)
    print(
        f"files: {summary.files}  resources: {summary.resources}  "
        f"rejected: {len(summary.rejections)}  (rules {config}, {key_note})"
    )
    for rejection in summary.rejections[:MAX_REPORTED]:
        print(f"rejected: {rejection.path}:{rejection.line}: {rejection.code}")
    if len(summary.rejections) > MAX_REPORTED:
        print(f"rejected: ... and {len(summary.rejections) - MAX_REPORTED} more")
    return 4 if summary.rejections else 0
