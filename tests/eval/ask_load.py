"""Load `ask_fixture.json` into a box's data dir (before its api starts): the location, its
documents, its assets (small placeholder bytes with the fixture's metadata) and one
scene-facts asset whose tracks are the fixture's, as the worker would publish it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from perception.scene_facts import rle_encode_crop
from store import documents, ingest
from store.config import StoreConfig
from store.locations import Location, Locations
from store.outbox import Outbox
from store.paths import Layout

FIXTURE = Path(__file__).with_name("ask_fixture.json")
WIDTH, HEIGHT = 640, 480


def fixture() -> dict[str, Any]:
    """The fixture, parsed."""
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return data


def _facts(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    tracks = []
    last = 0
    for t in spec["tracks"]:
        frames = []
        for obs in t["observations"]:
            x, y, w, h = obs["bbox"]
            mask = rle_encode_crop(np.ones((h, w), dtype=bool), x, y, HEIGHT, WIDTH)
            frames.append(
                {
                    "frame": obs["frame"],
                    "t": obs["t"],
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "mask": mask,
                }
            )
            last = max(last, obs["frame"])
        tracks.append(
            {
                "id": t["id"],
                "label": t["label"],
                "first_frame": frames[0]["frame"],
                "last_frame": frames[-1]["frame"],
                "frames": frames,
            }
        )
    return {
        "schema_version": 1,
        "video": {"frame_count": last + 1, "fps": 2.0, "width": WIDTH, "height": HEIGHT},
        "model": {"name": "fixture", "version": "1"},
        "mask_encoding": "coco-rle-column-major",
        "tracks": tracks,
    }


def load(data_dir: Path, cfg: StoreConfig | None = None) -> dict[str, str]:
    """Write the fixture under `data_dir`; return the fixture's source names -> record ids
    (`asset:<name>` -> asset id; documents and tracks keep theirs)."""
    spec = fixture()
    layout = Layout(data_dir)
    layout.ensure()
    cfg = cfg or StoreConfig()
    locs = Locations(layout, cfg)
    outbox = Outbox(str(layout.outbox_db), cfg)
    names: dict[str, str] = {}
    try:
        where = spec["location"]
        loc = locs.create(
            Location(
                id=where["id"],
                account=where["account"],
                geo_prefix=where["geo_prefix"],
                name=where["name"],
            )
        )
        db = locs.db(loc.id)
        for d in spec["documents"]:
            body = json.dumps(d["body"]).encode()
            documents.put(db, d["collection"], d["key"], body, if_none_match=True)
        scratch = layout.tmp_dir / "fixture"
        scratch.mkdir(parents=True, exist_ok=True)
        for a in spec["assets"]:
            src = scratch / a["filename"]
            src.write_bytes(f"placeholder bytes of {a['filename']}".encode())
            made = ingest.add_file(
                layout,
                locs,
                outbox,
                loc.id,
                src,
                kind=a["kind"],
                filename=a["filename"],
                mime_type=a["mime_type"],
                project=a.get("project"),
                metadata=a.get("metadata") or {},
            )
            names[f"asset:{a['name']}"] = made.id
        sf = spec["scene_facts"]
        video = next(a for a in spec["assets"] if a["name"] == sf["source_asset"])
        src = scratch / "walkthrough.scene_facts.json"
        src.write_text(json.dumps(_facts(sf)))
        made = ingest.add_file(
            layout,
            locs,
            outbox,
            loc.id,
            src,
            kind="scene_facts",
            filename=Path(video["filename"]).stem + ".scene_facts.json",
            mime_type="application/json",
            project=video.get("project"),
            metadata={"source_asset_id": names[f"asset:{video['name']}"], "output": "scene_facts"},
        )
        names["scene_facts"] = made.id
    finally:
        outbox.close()
        locs.close()
    return names


def source_of(retrieved: dict[str, Any], ids_to_names: dict[str, str]) -> str:
    """The fixture's source name of a retrieved passage or citation (`doc:c/k`, ...)."""
    kind, rid = retrieved["source"], retrieved["id"]
    if kind == "doc":
        return f"doc:{rid}"
    if kind == "track":
        return f"track:{rid.rpartition('#')[2]}"
    return ids_to_names.get(rid, f"asset:?{rid}")
