"""``extract.py stage=validate``: check an ``index_clips.csv`` made here or elsewhere, write the report
(``index_check.json`` and ``.txt`` in the job's folder); an index with violations ends it as bad input
does everywhere: one line on stderr, exit code 1, its run FAILED with that line (the report logged).
The check that ends ``stage=index`` is this one."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from vidlab import tracking
from vidlab.embeddings.clip_index import file_sha256
from vidlab.embeddings.index_check import check_index, format_report, padding_allowed, read_index, refuse_violations
from vidlab.embeddings.stage_run import StageRun
from vidlab.files import write_text
from vidlab.tracking.inputs import index_inputs, log_inputs


def run(stage: StageRun, prepared: None) -> None:
    """The check of the index, which is logged as datasets by split when it has those columns (an
    index that has not is what the check reports)."""
    index_file = Path(stage.spec.index_file)
    table, sha256 = read_index(index_file), file_sha256(index_file)
    if stage.client is not None and {"split", "path"} <= set(table.columns):
        with tracking.best_effort("datasets", stage.client, stage.run_id):
            log_inputs(stage.client, stage.run_id, index_inputs(index_file, sha256, table))
    check_and_report(stage, index_file, table, sha256)


def check_and_report(stage: StageRun, index_file: Path, table: pd.DataFrame, sha256: str) -> None:
    """Check ``index_file`` (``table``: as :func:`read_index` read it; ``sha256``: its hash), print and
    write the report, log it; an index with violations is then refused in one line, as ``stage=extract``
    refuses it (:func:`~vidlab.embeddings.index_check.refuse_violations`)."""
    spec = stage.spec
    report = check_index(index_file, spec.path_root, padding_allowed(spec), spec.check.check_files,
                         spec.check.strict_root, table)
    report["sha256"] = sha256
    text = format_report(report)
    print(text)
    report_file = write_text(stage.output_dir / "index_check.json", json.dumps(report, indent=2))
    text_file = write_text(stage.output_dir / "index_check.txt", text + "\n")
    stage.files += [("check", report_file), ("check", text_file)]
    stage.metrics.update({"rows": report["rows"], "violations": len(report["violations"])})
    if stage.client is not None:
        stage.client.set_tag(stage.run_id, "index_sha256", report["sha256"])
    refuse_violations(report, f"every violation: {text_file}")
    stage.finished = True
