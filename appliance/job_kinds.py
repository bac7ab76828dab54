"""What a job of each kind does: its pipeline in `jobs/{id}/`, then its results as assets.

Publishing is a stage of its own, and each output's asset id is fixed by (job, output), so
a job retried after a crash anywhere in publishing finds what it already stored and adds no
second asset or outbox row.

Also the worker's test-only pause points (`reached`, `reached_fraction`): nothing happens
unless `FIELDBOX_TEST_PAUSE_AT` is set, which only tests do. At the named point the worker
writes the file `FIELDBOX_TEST_PAUSE_MARKER` names and blocks that job thread forever (heartbeats
still run, so the job stays leased) until the test kills the process with a real SIGKILL.
Points: `{stage}:started` / `{stage}:done` at each stage event, `{stage}:{fraction}` at the
first progress report of that stage at or past the fraction (`train:0.45`), and
`publish:{output}:outbox` / `publish:{output}:asset` after that output's outbox row / asset
row committed.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from appliance.config import FieldboxConfig
from appliance.jobparams import JobConfig, job_config, named
from perception.config import PerceptionConfig
from perception.progress import InvalidInput, Reporter, Stages
from perception.splat.config import SplatConfig
from store import assets, ingest
from store.assets import Asset
from store.errors import InvalidDocument, InvalidName, NotFound
from store.locations import Locations
from store.outbox import Outbox
from store.paths import Layout
from store.queue import Job

PAUSE_AT_ENV = "FIELDBOX_TEST_PAUSE_AT"
PAUSE_MARKER_ENV = "FIELDBOX_TEST_PAUSE_MARKER"


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

    def publish(
        self, path: Path, kind: str, suffix: str, mime: str, extra: dict[str, Any] | None = None
    ) -> str:
        """Store a result file as an asset of the source's location, once; return its id.

        `extra` joins the asset's metadata (a splat's quality figures, say)."""
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
            metadata={
                **(extra or {}),
                "job_id": self.job.id,
                "source_asset_id": self.asset.id,
                "output": kind,
            },
            asset_id=assets.job_output_id(
                self.asset.location, self.job.id, self.job.created_at, kind
            ),
            on_step=lambda step: reached(f"publish:{kind}:{step}"),
        )
        if made.metadata.get("job_id") != self.job.id or made.kind != kind:
            # Two (job, output) pairs whose 8-hex digests met in the same millisecond.
            raise RuntimeError(f"asset {made.id} belongs to another job's output")
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
        job, cfg, layout, locs, outbox, asset, video, layout.job_dir(job.id), params, reporter
    )
    tasks = {"perception": _perception, "splat": _splat}
    if job.kind not in tasks:
        raise InvalidInput(f"unknown job kind {job.kind!r}")
    try:
        return tasks[job.kind](run)
    except InvalidInput as exc:
        raise InvalidInput(named(exc, video, asset.filename)) from exc


def _job_config(run: JobRun, kind: str) -> JobConfig:
    # The same checks as at enqueue (a job queued before them, or by an older api, too):
    # `structs.replace` would skip the section's constraints and the box's caps.
    try:
        return job_config(kind, run.params, run.cfg)
    except InvalidDocument as exc:
        raise InvalidInput(str(exc)) from exc


def _perception(run: JobRun) -> dict[str, Any]:
    from perception.pipeline import run_perception

    pcfg = _job_config(run, "perception")
    assert isinstance(pcfg, PerceptionConfig)
    facts = run_perception(run.video, run.work / "perception", pcfg, run.reporter)

    def publish(_: Path) -> dict[str, Any]:
        from perception.overlay import write_thumbnails

        out = {
            "scene_facts_asset_id": run.publish(
                facts, "scene_facts", ".scene_facts.json", "application/json"
            )
        }
        # Small copies of the frames with tracks, kept as an asset: the admin page draws
        # the masks over them long after the job's work dir is gone.
        thumbs = run.work / "frames.zip"
        doc = json.loads(facts.read_bytes())
        if write_thumbnails(doc, run.work / "perception" / "frames", thumbs):
            out["frames_asset_id"] = run.publish(thumbs, "frames", ".frames.zip", "application/zip")
        return out

    return Stages(run.work, run.reporter).run("publish", publish)


def _splat(run: JobRun) -> dict[str, Any]:
    from perception.splat.pipeline import run_splat

    scfg = _job_config(run, "splat")
    assert isinstance(scfg, SplatConfig)
    ply = run_splat(run.video, run.work / "splat", scfg, run.reporter)
    export = Stages(run.work / "splat").done("export") or {}
    quality = export.get("quality") or {}

    def publish(_: Path) -> dict[str, Any]:
        out: dict[str, Any] = {
            "splat_asset_id": run.publish(
                ply, "splat", ".splat.ply", "application/octet-stream", {"quality": quality}
            )
        }
        for key, kind, suffix, mime in (
            ("thumbnail", "thumbnail", ".thumb.jpg", "image/jpeg"),
            ("cameras", "splat_cameras", ".cameras.json", "application/json"),
        ):
            found = export.get(key)
            if isinstance(found, str) and Path(found).is_file():
                out[f"{key}_asset_id"] = run.publish(Path(found), kind, suffix, mime)
        out["quality"] = quality
        return out

    return Stages(run.work, run.reporter).run("publish", publish)


def reached(point: str) -> None:
    """Test-only: block forever if `FIELDBOX_TEST_PAUSE_AT` names `point` (no-op on a box)."""
    if os.environ.get(PAUSE_AT_ENV) == point:
        _pause(point)


def reached_fraction(stage: str, fraction: float) -> None:
    """Test-only: block forever at the first report of `stage` at or past the set fraction."""
    want = os.environ.get(PAUSE_AT_ENV)
    name, _, threshold = (want or "").partition(":")
    if name != stage:
        return
    try:
        limit = float(threshold)
    except ValueError:
        return  # a named point such as `train:done`, not a fraction
    if fraction >= limit:
        _pause(f"{stage}:{threshold}")


def _pause(point: str) -> None:
    marker = os.environ.get(PAUSE_MARKER_ENV)
    if marker:
        tmp = f"{marker}.tmp"
        with open(tmp, "w") as fh:
            fh.write(point)
        os.replace(tmp, marker)  # the test never reads half a name
    threading.Event().wait()
