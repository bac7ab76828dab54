"""`/v1/locations/{id}/projects/{project}/markdown`: a project as one markdown document."""

from __future__ import annotations

import time

from litestar import Controller, Response, get
from litestar.params import FromPath

from appliance import project_markdown
from appliance.auth import FIELD_ACCESS
from appliance.services import Svc
from store import assets, documents
from store.paths import check_label


class ProjectController(Controller):
    """Projects are the `project`/`projectId` field of documents and the project of assets."""

    path = "/v1/locations/{location_id:str}/projects"
    opt = FIELD_ACCESS
    tags = ["projects"]

    @get("/{project:str}/markdown", sync_to_thread=True)
    def markdown(
        self, location_id: FromPath[str], project: FromPath[str], svc: Svc
    ) -> Response[str]:
        """The project's documents and assets as markdown with YAML front matter."""
        check_label("project", project)
        loc = svc.locations.get(location_id)
        db = svc.locations.db(location_id)
        text = project_markdown.render(
            loc,
            project,
            documents.for_project(db, project),
            assets.for_project(db, loc.id, project),
            time.time(),
        )
        return Response(text, media_type="text/markdown; charset=utf-8")
