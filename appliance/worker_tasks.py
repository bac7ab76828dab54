"""What a job of each kind does: its pipeline in `jobs/{id}/`, then its results as assets.

Publishing is a stage of its own, so a job retried after its results were stored does not
store them twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import msgspec

from appliance.config import FieldboxConfig
from perception.progress import InvalidInput, Reporter, Stages
from store import ingest
from store.assets import Asset
from store.errors import InvalidName, NotFound
from store.locations import Locations
from store.outbox import Outbox
from store.paths import Layout
from store.queue import Job


@dataclass(frozen=True)
class JobRun:
    """Everything one job's run needs: config, stores, its source asset and work dir."""

    job: Job
    cfg: FieldboxConfig
    layout: Layout
    locs: Locations
    outbox: Outbox
    asset: Asset
    video: Path
    work: Path
    params: dict[str, Any]
    reporter: Reporter

    def publish(self, path: Path, kind: str, suffix: str, mime: str) -> str:
        """Store a result file as an asset of the source's location; return its id."""
        stem = PurePath(self.asset.filename).stem or "capture"
        made = ingest.add_file(
            self.layout,
            self.locs,
            self.outbox,
            self.asset.location,
            path,
            kind=kind,
            filename=f"{stem}{suffix}",
            mime_type=mime,
            project=self.asset.project,
            metadata={"job_id": self.job.id, "source_asset_id": self.asset.id},
        )
        return made.id


def execute(
    job: Job,
    cfg: FieldboxConfig,
    layout: Layout,
    locs: Locations,
    outbox: Outbox,
    reporter: Reporter,
) -> dict[str, Any]:
    """Run `job` to the end; return its result (the ids of the assets it produced)."""
    try:
        asset, video = ingest.asset_file(layout, locs, str(job.payload.get("asset_id")))
    except (NotFound, InvalidName) as exc:
        raise InvalidInput(f"the job's asset is gone: {exc}") from exc
    params: dict[str, Any] = dict(job.payload.get("params") or {})
    run = JobRun(
        job, cfg, layout, locs, outbox, asset, video, layout.jobs_dir / job.id, params, reporter
    )
    if job.kind == "perception":
        return _perception(run)
    if job.kind == "splat":
        return _splat(run)
    raise InvalidInput(f"unknown job kind {job.kind!r}")


def _perception(run: JobRun) -> dict[str, Any]:
    from perception.pipeline import run_perception

    pcfg = msgspec.structs.replace(run.cfg.perception, **run.params)
    facts = run_perception(run.video, run.work / "perception", pcfg, run.reporter)
    return Stages(run.work, run.reporter).run(
        "publish",
        lambda _: {
            "scene_facts_asset_id": run.publish(
                facts, "scene_facts", ".scene_facts.json", "application/json"
            )
        },
    )


def _splat(run: JobRun) -> dict[str, Any]:
    from perception.splat.pipeline import run_splat

    scfg = msgspec.structs.replace(run.cfg.splat, **run.params)
    ply = run_splat(run.video, run.work / "splat", scfg, run.reporter)
    export = Stages(run.work / "splat").done("export") or {}
    thumb = export.get("thumbnail")

    def publish(_: Path) -> dict[str, Any]:
        out = {
            "splat_asset_id": run.publish(ply, "splat", ".splat.ply", "application/octet-stream")
        }
        if isinstance(thumb, str) and Path(thumb).is_file():
            out["thumbnail_asset_id"] = run.publish(
                Path(thumb), "thumbnail", ".thumb.jpg", "image/jpeg"
            )
        return out

    return Stages(run.work, run.reporter).run("publish", publish)
