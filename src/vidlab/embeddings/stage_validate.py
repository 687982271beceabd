"""``extract.py stage=validate``: check an ``index_clips.csv`` made here or elsewhere, write the report
(``index_check.json`` and ``.txt`` in the job's folder); exit code 1 when it finds violations. The
check that ends ``stage=index`` is this one."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from vidlab import tracking
from vidlab.embeddings.clip_index import file_sha256
from vidlab.embeddings.index_check import check_index, format_report, read_index
from vidlab.embeddings.stage_run import StageRun
from vidlab.files import write_text
from vidlab.tracking.inputs import index_inputs, log_inputs


def run(stage: StageRun, prepared: None) -> int:
    """The check of the index, which is logged as datasets by split when it has those columns (an
    index that has not is what the check reports)."""
    index_file = Path(stage.spec.index_file)
    table, sha256 = read_index(index_file), file_sha256(index_file)
    if stage.client is not None and {"split", "path"} <= set(table.columns):
        with tracking.best_effort("datasets", stage.client, stage.run_id):
            log_inputs(stage.client, stage.run_id, index_inputs(index_file, sha256, table))
    return check_and_report(stage, index_file, table, sha256, bool(stage.spec.check.allow_padded))


def check_and_report(stage: StageRun, index_file: Path, table: pd.DataFrame, sha256: str, allow_padded: bool) -> int:
    """Check ``index_file`` (``table``: as :func:`read_index` read it; ``sha256``: its hash), print and
    write the report, log it; 1 when the index has violations, else 0. The stage has finished either way."""
    spec = stage.spec
    report = check_index(index_file, spec.path_root, allow_padded, spec.check.check_files, spec.check.strict_root, table)
    report["sha256"] = sha256
    text = format_report(report)
    print(text)
    report_file = write_text(stage.output_dir / "index_check.json", json.dumps(report, indent=2))
    text_file = write_text(stage.output_dir / "index_check.txt", text + "\n")
    stage.files += [("check", report_file), ("check", text_file)]
    stage.metrics.update({"rows": report["rows"], "violations": len(report["violations"])})
    if stage.client is not None:
        stage.client.set_tag(stage.run_id, "index_sha256", report["sha256"])
    stage.finished = True
    return 1 if report["violations"] else 0
