"""``extract.py stage=validate``: check an ``index_clips.csv`` made here or elsewhere, write the report
(``index_check.json`` and ``.txt`` in the job's folder); exit code 1 when it finds violations. The
check that ends ``stage=index`` is this one."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from vidlab import tracking
from vidlab.embeddings.config import ExtractSpec
from vidlab.embeddings.extraction import file_sha256
from vidlab.embeddings.index_check import check_index, format_report
from vidlab.embeddings.stage_run import StageRun
from vidlab.tracking.inputs import index_inputs, log_inputs

GROUPS = ("check",)


def written(spec: ExtractSpec, output_dir: Path) -> Path:
    return output_dir


def run_name(spec: ExtractSpec) -> str:
    return f"validate-{Path(spec.index_file).stem}"


def prepare(spec: ExtractSpec) -> None:
    """Nothing to refuse before the run: what is wrong with the index is what the run reports."""


def release(prepared: None) -> None:
    pass


def run(stage: StageRun, prepared: None) -> int:
    return check_and_report(stage, Path(stage.spec.index_file), bool(stage.spec.check.allow_padded), log_index=True)


def check_and_report(stage: StageRun, index_file: Path, allow_padded: bool, log_index: bool) -> int:
    """Check ``index_file``, print and write the report, log it (with the index as datasets when
    ``log_index``); 1 when the index has violations, else 0. The stage has finished either way."""
    spec = stage.spec
    report = check_index(index_file, spec.path_root, allow_padded, spec.check.check_files, spec.check.strict_root)
    report["sha256"] = file_sha256(index_file)
    if stage.client is not None and log_index:
        _log_checked_index(stage.client, stage.run_id, index_file, report["sha256"])
    text = format_report(report)
    print(text)
    report_file = stage.output_dir / "index_check.json"
    report_file.write_text(json.dumps(report, indent=2))
    (stage.output_dir / "index_check.txt").write_text(text + "\n")
    stage.files += [("check", report_file), ("check", stage.output_dir / "index_check.txt")]
    stage.metrics.update({"rows": report["rows"], "violations": len(report["violations"])})
    if stage.client is not None:
        stage.client.set_tag(stage.run_id, "index_sha256", report["sha256"])
    stage.finished = True
    return 1 if report["violations"] else 0


def _log_checked_index(client: MlflowClient, run_id: str, index_file: Path, sha256: str) -> None:
    """The index a validation read, as datasets by split, when it is a readable CSV with those
    columns (an index that is not is what the validation reports)."""
    try:
        table = pd.read_csv(index_file, usecols=["split", "path"])
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError):  # pandas' errors for unreadable or other columns
        return
    with tracking.best_effort("datasets", client, run_id):
        log_inputs(client, run_id, index_inputs(index_file, sha256, table))
