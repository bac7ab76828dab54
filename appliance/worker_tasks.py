"""What a job of each kind does: its pipeline in `jobs/{id}/`, then its results as assets.

Publishing is a stage of its own, so a job retried after its results were stored does not
store them twice.
"""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import Any

import msgspec

from appliance.config import FieldboxConfig
from perception.progress import InvalidInput, Reporter, Stages
from store import ingest
from store.assets import Asset
from store.errors import InvalidName, NotFound
from store.locations import Locations
from store.paths import Layout
from store.queue import Job


def execute(
    job: Job, cfg: FieldboxConfig, layout: Layout, locs: Locations, reporter: Reporter
) -> dict[str, Any]:
    """Run `job` to the end; return its result (the ids of the assets it produced)."""
    try:
        asset, video = ingest.asset_file(layout, locs, str(job.payload.get("asset_id")))
    except (NotFound, InvalidName) as exc:
        raise InvalidInput(f"the job's asset is gone: {exc}") from exc
    params: dict[str, Any] = dict(job.payload.get("params") or {})
    work = layout.jobs_dir / job.id
    stages = Stages(work, reporter)
    if job.kind == "perception":
        return _perception(cfg, layout, locs, asset, video, work, params, stages, reporter)
    if job.kind == "splat":
        return _splat(cfg, layout, locs, asset, video, work, params, stages, reporter)
    raise InvalidInput(f"unknown job kind {job.kind!r}")


def _publish(
    layout: Layout,
    locs: Locations,
    source: Asset,
    job_id: str,
    path: Path,
    kind: str,
    suffix: str,
    mime: str,
) -> str:
    stem = PurePath(source.filename).stem or "capture"
    made = ingest.add_file(
        layout,
        locs,
        source.location,
        path,
        kind=kind,
        filename=f"{stem}{suffix}",
        mime_type=mime,
        project=source.project,
        metadata={"job_id": job_id, "source_asset_id": source.id},
    )
    return made.id


def _perception(
    cfg: FieldboxConfig,
    layout: Layout,
    locs: Locations,
    asset: Asset,
    video: Path,
    work: Path,
    params: dict[str, Any],
    stages: Stages,
    reporter: Reporter,
) -> dict[str, Any]:
    from perception.pipeline import run_perception

    pcfg = msgspec.structs.replace(cfg.perception, **params)
    facts = run_perception(video, work / "perception", pcfg, reporter)
    job_id = work.name
    return stages.run(
        "publish",
        lambda _: {
            "scene_facts_asset_id": _publish(
                layout,
                locs,
                asset,
                job_id,
                facts,
                "scene_facts",
                ".scene_facts.json",
                "application/json",
            )
        },
    )


def _splat(
    cfg: FieldboxConfig,
    layout: Layout,
    locs: Locations,
    asset: Asset,
    video: Path,
    work: Path,
    params: dict[str, Any],
    stages: Stages,
    reporter: Reporter,
) -> dict[str, Any]:
    from perception.splat.pipeline import run_splat

    scfg = msgspec.structs.replace(cfg.splat, **params)
    ply = run_splat(video, work / "splat", scfg, reporter)
    export = Stages(work / "splat").done("export") or {}
    thumb = export.get("thumbnail")
    job_id = work.name

    def publish(_: Path) -> dict[str, Any]:
        out = {
            "splat_asset_id": _publish(
                layout, locs, asset, job_id, ply, "splat", ".splat.ply", "application/octet-stream"
            )
        }
        if isinstance(thumb, str) and Path(thumb).is_file():
            out["thumbnail_asset_id"] = _publish(
                layout, locs, asset, job_id, Path(thumb), "thumbnail", ".thumb.jpg", "image/jpeg"
            )
        return out

    return stages.run("publish", publish)
