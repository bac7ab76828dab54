"""Sign-in with an admin key, and sign-out."""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromQuery
from litestar.response import Redirect, Template

from appliance.admin.sessions import COOKIE, CSRF_FIELD, Session
from appliance.admin.site import site_of
from appliance.services import Svc, in_thread


class LoginForm(msgspec.Struct, kw_only=True):
    """The sign-in form's fields."""

    token: str = ""
    next: str = "/admin"
    csrf: str = msgspec.field(default="", name=CSRF_FIELD)


Form = Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)]


def _cookie(session: Session, max_age: int | None = None) -> Cookie:
    return Cookie(
        key=COOKIE,
        value=session.id,
        path="/admin",
        httponly=True,
        samesite="strict",
        max_age=max_age,
    )


# Where sign-in may send the browser back to: the admin's own pages on this origin and
# nothing else. No scheme or host (`//evil`, `/\\evil`), no `..`, no %-escapes that a
# server could decode into one, and no user content (`/admin/assets/{id}/download`).
_NEXT = re.compile(
    r"/admin(?:/(?:models|jobs|sync|assets|access|logs)|/jobs/[A-Za-z0-9_-]{1,128})?/?"
    r"(?:\?[A-Za-z0-9_.~&=+-]*)?"
)


def _next(target: str) -> str:
    """`target` if it names an admin page of this origin, else `/admin`: never an open redirect."""
    return target if _NEXT.fullmatch(target) else "/admin"


def _login_page(session: Session, nxt: str, error: str = "", status: int = 200) -> Template:
    return Template(
        template_name="login.html",
        context={"csrf": session.csrf, "csrf_field": CSRF_FIELD, "next": nxt, "error": error},
        cookies=[_cookie(session)],
        headers={"Cache-Control": "no-store"},
        status_code=status,
    )


class AuthController(Controller):
    """`/admin/login` and `/admin/logout`."""

    path = "/"

    @get("/login")
    async def login_page(
        self, request: Request[Any, Any, Any], next: FromQuery[str] = "/admin"
    ) -> Template:
        """The sign-in form (a fresh anonymous session carries its CSRF token)."""
        session = request.state.admin_session or site_of(request).sessions.new()
        if session.signed_in:
            session = site_of(request).sessions.new()
        return _login_page(session, _next(next))

    @post("/login")
    async def login(self, request: Request[Any, Any, Any], data: Form, svc: Svc) -> Response[Any]:
        """Check the key (live, `admin` scope); on success a new session replaces the old."""
        site, old = site_of(request), request.state.admin_session
        key = await in_thread(svc.verifier.verify, data.token.strip())
        if key is None or "admin" not in key.scopes:
            why = "that key is not valid" if key is None else "that key lacks the admin scope"
            return _login_page(old, _next(data.next), why, status=401)
        session = site.sessions.sign_in(old, key.id, key.name, data.token.strip())
        return Redirect(_next(data.next), status_code=303, cookies=[_cookie(session)])

    @post("/logout")
    async def logout(self, request: Request[Any, Any, Any]) -> Redirect:
        """End the session and clear the cookie."""
        site_of(request).sessions.end(request.state.admin_session.id)
        gone = Cookie(
            key=COOKIE, value="", path="/admin", httponly=True, samesite="strict", max_age=0
        )
        return Redirect("/admin/login", status_code=303, cookies=[gone])
