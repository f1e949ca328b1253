"""A three-page registration form: account, plan, review and submit."""

from __future__ import annotations

import re

from turngym.envs.gui.apps.server import AppState, Request, Response, Route, esc, page, redirect

__all__ = ["PLANS", "ROUTES"]

PLANS = ("Basic", "Pro", "Team")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _alert(error: str) -> str:
    return f"<p role='alert'>{esc(error)}</p>" if error else ""


def step1(state: AppState, req: Request, m: re.Match | None = None, error: str = "") -> Response:
    d = state.form_draft
    body = (
        f"<h1>Create your account</h1><p>Step 1 of 3</p>{_alert(error)}"
        "<form action='/form/step1' method='post'>"
        f"<p><label for='fullname'>Full name</label> <input id='fullname' name='fullname' type='text' value='{esc(d.get('name', ''), quote=True)}'></p>"
        f"<p><label for='email'>Email</label> <input id='email' name='email' type='text' value='{esc(d.get('email', ''), quote=True)}'></p>"
        "<button type='submit'>Next</button></form>"
    )
    return page("Registration: account", body)


def step1_post(state: AppState, req: Request, m: re.Match) -> Response:
    name, email = req.field("fullname"), req.field("email")
    state.form_draft.update(name=name, email=email)
    if not name:
        return step1(state, req, error="Please enter your full name.")
    if not _EMAIL.match(email):
        return step1(state, req, error="Please enter a valid email address.")
    return redirect("/form/step2")


def step2(state: AppState, req: Request, m: re.Match | None = None, error: str = "") -> Response:
    if not state.form_draft.get("email"):
        return redirect("/form/step1")
    chosen = state.form_draft.get("plan", "")
    radios = "".join(
        f"<p><input type='radio' id='plan-{p.lower()}' name='plan' value='{p}'{' checked' if p == chosen else ''}>"
        f" <label for='plan-{p.lower()}'>{p}</label></p>"
        for p in PLANS
    )
    news = " checked" if state.form_draft.get("newsletter") else ""
    body = (
        f"<h1>Choose a plan</h1><p>Step 2 of 3</p>{_alert(error)}"
        f"<form action='/form/step2' method='post'><fieldset><legend>Plan</legend>{radios}</fieldset>"
        f"<p><input type='checkbox' id='newsletter' name='newsletter' value='yes'{news}>"
        " <label for='newsletter'>Subscribe to the newsletter</label></p>"
        "<button type='submit'>Next</button></form><p><a href='/form/step1'>Back</a></p>"
    )
    return page("Registration: plan", body)


def step2_post(state: AppState, req: Request, m: re.Match) -> Response:
    plan = req.field("plan")
    state.form_draft["newsletter"] = req.field("newsletter") == "yes"
    if plan not in PLANS:
        return step2(state, req, error="Please choose a plan.")
    state.form_draft["plan"] = plan
    return redirect("/form/step3")


def step3(state: AppState, req: Request, m: re.Match) -> Response:
    d = state.form_draft
    if not d.get("plan"):
        return redirect("/form/step2")
    body = (
        "<h1>Review</h1><p>Step 3 of 3</p><ul>"
        f"<li>Name: {esc(d['name'])}</li><li>Email: {esc(d['email'])}</li><li>Plan: {esc(d['plan'])}</li>"
        f"<li>Newsletter: {'yes' if d.get('newsletter') else 'no'}</li></ul>"
        "<form action='/form/submit' method='post'><button type='submit'>Submit</button></form>"
        "<p><a href='/form/step2'>Back</a></p>"
    )
    return page("Registration: review", body)


def submit(state: AppState, req: Request, m: re.Match) -> Response:
    d = state.form_draft
    if not d.get("plan"):
        return redirect("/form/step1")
    state.registrations.append(
        {"name": d["name"], "email": d["email"], "plan": d["plan"], "newsletter": bool(d.get("newsletter"))}
    )
    state.form_draft = {}
    return redirect("/form/done")


def done(state: AppState, req: Request, m: re.Match) -> Response:
    return page("Registered", "<h1>Registration complete</h1><p>Welcome aboard.</p>")


ROUTES: list[Route] = [
    ("GET", r"/form/?(?:step1)?", step1),
    ("POST", r"/form/step1", step1_post),
    ("GET", r"/form/step2", step2),
    ("POST", r"/form/step2", step2_post),
    ("GET", r"/form/step3", step3),
    ("POST", r"/form/submit", submit),
    ("GET", r"/form/done", done),
]
