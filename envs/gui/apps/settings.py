"""An account settings page: a display name, two drop-downs, two switches and a Save button."""

from __future__ import annotations

import re

from turngym.envs.gui.apps.server import AppState, Request, Response, Route, esc, page, redirect

__all__ = ["DEFAULT_SETTINGS", "LANGUAGES", "THEMES", "ROUTES"]

THEMES = ("Light", "Dark", "System")
LANGUAGES = ("English", "Deutsch", "Français", "Español")
DEFAULT_SETTINGS = {
    "display_name": "Sam",
    "theme": "Light",
    "language": "English",
    "email_notifications": True,
    "sms_notifications": False,
}


def _select(name: str, label: str, values: tuple[str, ...], chosen: str) -> str:
    opts = "".join(f"<option{' selected' if v == chosen else ''}>{esc(v)}</option>" for v in values)
    return f"<p><label for='{name}'>{label}</label> <select id='{name}' name='{name}'>{opts}</select></p>"


def _checkbox(name: str, label: str, on: bool) -> str:
    return (
        f"<p><input type='checkbox' id='{name}' name='{name}' value='on'{' checked' if on else ''}>"
        f" <label for='{name}'>{label}</label></p>"
    )


def show(state: AppState, req: Request, m: re.Match) -> Response:
    s = state.settings
    saved = "<p role='status'>Settings saved.</p>" if req.query.get("saved") else ""
    body = (
        f"<h1>Settings</h1>{saved}<form action='/settings' method='post'>"
        f"<p><label for='display_name'>Display name</label> <input id='display_name' name='display_name' type='text' value='{esc(s['display_name'], quote=True)}'></p>"
        + _select("theme", "Theme", THEMES, s["theme"])
        + _select("language", "Language", LANGUAGES, s["language"])
        + _checkbox("email_notifications", "Email notifications", s["email_notifications"])
        + _checkbox("sms_notifications", "SMS notifications", s["sms_notifications"])
        + "<button type='submit'>Save</button></form>"
    )
    return page("Settings", body)


def save(state: AppState, req: Request, m: re.Match) -> Response:
    state.settings = {
        "display_name": req.field("display_name") or state.settings["display_name"],
        "theme": req.field("theme") if req.field("theme") in THEMES else state.settings["theme"],
        "language": req.field("language") if req.field("language") in LANGUAGES else state.settings["language"],
        "email_notifications": req.field("email_notifications") == "on",
        "sms_notifications": req.field("sms_notifications") == "on",
    }
    state.saves += 1
    return redirect("/settings?saved=1")


ROUTES: list[Route] = [("GET", r"/settings/?", show), ("POST", r"/settings/?", save)]
