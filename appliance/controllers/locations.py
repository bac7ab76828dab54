"""`/v1/locations`: create, list and read locations."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.params import FromPath, JSONBody

from appliance.auth import FIELD_ACCESS
from appliance.schemas import LocationIn, LocationList
from appliance.services import Svc
from store.locations import Location


class LocationController(Controller):
    """Places the crews inspect; each owns a database and a blob folder."""

    path = "/v1/locations"
    opt = FIELD_ACCESS
    tags = ["locations"]

    @post("/", sync_to_thread=True)
    def create(self, data: JSONBody[LocationIn], svc: Svc) -> Location:
        """Create a location (409 if the id is taken)."""
        loc = Location(id=data.id, account=data.account, geo_prefix=data.geo_prefix, name=data.name)
        return svc.locations.create(loc)

    @get("/", sync_to_thread=True)
    def list_all(self, svc: Svc) -> LocationList:
        """Every location, by id."""
        return LocationList(items=svc.locations.list())

    @get("/{location_id:str}", sync_to_thread=False)
    def read(self, location_id: FromPath[str], svc: Svc) -> Location:
        """One location."""
        return svc.locations.get(location_id)
