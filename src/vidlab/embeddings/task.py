"""The tasks behind ``extract.py``: ``stage=index`` builds ``index_clips.csv`` from a video collection,
``stage=validate`` checks an index made here or elsewhere, ``stage=extract`` writes clip embeddings.
Each logs one MLflow run."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from vidlab import tracking
from vidlab.embeddings import layouts
from vidlab.embeddings.clip_index import IndexSettings, build_index
from vidlab.embeddings.config import ExtractSpec, UcfCrimeConfig
from vidlab.embeddings.extraction import PreparedExtraction, extract_embeddings, file_sha256, is_child_rank, load_index, prepare_extraction
from vidlab.embeddings.index_check import check_index, format_report
from vidlab.embeddings.store import naming_where_space_ran_out
from vidlab.errors import ConfigError
from vidlab.jobs import job_dirs
from vidlab.schema import MlflowLoggerConfig
from vidlab.tracking.inputs import index_inputs, log_inputs, video_split_inputs


def layout_videos(spec: ExtractSpec) -> tuple[list[layouts.Video], dict]:
    """The collection's videos and splits: a root that is not a folder or holds none is refused
    before the run exists."""
    data = spec.layout
    root = Path(data.root)
    if not root.is_dir():
        raise ConfigError(f"layout.root: not a folder: {root}")
    if isinstance(data, UcfCrimeConfig):
        videos, layout_report = layouts.ucf_crime(root, data.extensions, data.split_lists, data.split_ratios, data.val_ratio, data.seed)
    else:
        videos, layout_report = layouts.video_tree(root, data.extensions, data.normal_categories, data.split_ratios, data.seed)
    if not videos:
        raise ConfigError(f"layout.root: no video of the {data.name} layout under {root}")
    return videos, layout_report


def make_index(spec: ExtractSpec, videos: list[layouts.Video], layout_report: dict) -> tuple[Path, dict]:
    data, root = spec.layout, Path(spec.layout.root)
    s = spec.indexing
    settings = IndexSettings(s.clip_len, s.stride, s.short_videos, s.on_error, s.paths, s.frame_count, s.workers,
                             s.count_cache, {"layout": data.name, "seed": data.seed})
    output = Path(s.output)
    _, report = build_index(videos, root, output, settings, layout_report)
    print(f"wrote {output}: {report['clips']} clips of {report['videos_indexed']} videos "
          f"(counting frames {report['frame_count']['seconds']} s, {report['frame_count']['cached_videos']} cached)")
    return output, report


STAGE_GROUPS = {"index": ("layout", "indexing", "check"), "validate": ("check",), "extract": ("backbone", "extraction")}
"""The config groups whose values are a stage's params; the rest of the config is in its tags."""


def _log_checked_index(client: MlflowClient, run_id: str, index_file: Path, sha256: str) -> None:
    """The index a validation read, as datasets by split, when it is a readable CSV with those
    columns (an index that is not is what the validation reports)."""
    try:
        table = pd.read_csv(index_file, usecols=["split", "path"])
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError):  # pandas' errors for unreadable or other columns
        return
    with tracking.best_effort("datasets", client, run_id):
        log_inputs(client, run_id, index_inputs(index_file, sha256, table))


def run(cfg: DictConfig, spec: ExtractSpec) -> int:
    """Run the stage ``spec`` (``cfg`` checked by :func:`vidlab.embeddings.config.validate_extract`) describes; returns the
    process exit code (non-zero when the index is invalid). What can be refused is refused before a run
    exists; a full disk is one line naming where."""
    root, output_dir = job_dirs(cfg)
    written = {"extract": spec.extraction.output, "index": spec.indexing.output}.get(spec.stage, output_dir)
    with naming_where_space_ran_out(Path(written)):
        prepared = prepare_extraction(spec) if spec.stage == "extract" else None
        found = layout_videos(spec) if spec.stage == "index" else None
        try:
            return _run_stage(cfg, spec, root, output_dir, prepared, found)
        finally:
            if prepared is not None:
                prepared.store.unlock()  # the folder is free once this job ends, also for a caller in the same process


def _run_stage(cfg: DictConfig, spec: ExtractSpec, root: Path, output_dir: Path, prepared: PreparedExtraction | None,
               found: tuple[list[layouts.Video], dict] | None) -> int:
    client = run_id = None
    if isinstance(spec.logger, MlflowLoggerConfig) and not is_child_rank():
        name = spec.logger.run_name or (f"extract-{spec.backbone.name}_T{spec.backbone.frames_per_clip}" if spec.stage == "extract"
                                        else f"{spec.stage}-{spec.layout.name if spec.layout else Path(spec.index_file).stem}")
        client, run_id = tracking.start_run(replace(spec.logger, run_name=name), root, output_dir, {"task": "embeddings", "stage": spec.stage})
        tracking.log_config(client, run_id, cfg, output_dir, STAGE_GROUPS[spec.stage])
    status, files, metrics = "FAILED", [], {}
    try:
        allow_padded = spec.check.allow_padded
        if spec.stage == "index":
            index_file, build_report = make_index(spec, *found)
            if client is not None and build_report["clips"]:
                with tracking.best_effort("datasets", client, run_id):
                    table = load_index(index_file, None)
                    videos = {str(split): list(rows.abs_path) for split, rows in table.groupby("split", sort=False)}
                    log_inputs(client, run_id, video_split_inputs(spec.layout.name, videos, {"layout": spec.layout.name}))
            files.append(("index", index_file))
            files.append(("index", index_file.with_suffix(".json")))
            metrics.update({"videos_indexed": build_report["videos_indexed"], "clips": build_report["clips"],
                            "bad_videos": len(build_report["bad_videos"]), "short_videos": build_report["short_videos"]["count"],
                            "frame_count_seconds": build_report["frame_count"]["seconds"]})
            if allow_padded is None:
                allow_padded = spec.indexing.short_videos == "pad"
        elif spec.stage == "extract":
            if client is not None:
                with tracking.best_effort("datasets", client, run_id):
                    log_inputs(client, run_id, index_inputs(Path(spec.index_file), prepared.index_sha, prepared.table))
            result = extract_embeddings(spec, prepared, run_id)
            files += result.files
            metrics.update(result.metrics)
            if client is not None:
                tracking.log_artifacts(client, run_id, result.artifacts(spec.extraction.max_artifact_mb, client, run_id))
            status = "FINISHED"
            return 0
        else:
            index_file = Path(spec.index_file)
        report = check_index(index_file, spec.path_root, bool(allow_padded), spec.check.check_files, spec.check.strict_root)
        report["sha256"] = file_sha256(index_file)
        if client is not None and spec.stage == "validate":
            _log_checked_index(client, run_id, index_file, report["sha256"])
        text = format_report(report)
        print(text)
        report_file = output_dir / "index_check.json"
        report_file.write_text(json.dumps(report, indent=2))
        (output_dir / "index_check.txt").write_text(text + "\n")
        files += [("check", report_file), ("check", output_dir / "index_check.txt")]
        metrics.update({"rows": report["rows"], "violations": len(report["violations"])})
        if client is not None:
            client.set_tag(run_id, "index_sha256", report["sha256"])
        status = "FINISHED"
        return 1 if report["violations"] else 0
    finally:  # what was done is logged either way; a failure's end status is set by run_job
        if client is not None:
            for key, value in metrics.items():
                client.log_metric(run_id, key, float(value))
            tracking.log_artifacts(client, run_id, [(folder, path) for folder, path in files if path.exists()])
            if status == "FINISHED":
                client.set_terminated(run_id, status)

