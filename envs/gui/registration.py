"""Registration of the GUI environments (headless Chromium) and their suites."""

from __future__ import annotations

from turngym.envs.registration import register
from turngym.envs.tasks import register_suite

_MINIWOB = "turngym.envs.gui.miniwob"
_APPS = "turngym.envs.gui.apps.tasks"

SUITES = {
    "miniwob": (f"{_MINIWOB}:load_miniwob", "MiniWoB++: every ref-operable task x seeds 0-49 train / 10000-10019 test"),
    "miniwob-core": (f"{_MINIWOB}:load_miniwob_core", "MiniWoB++: 11 easy tasks x seeds 0-49 train / 10000-10019 test"),
    "miniwob-heldout": (f"{_MINIWOB}:load_miniwob_heldout", "MiniWoB++: about one task in five held out for test"),
    "webapps": (f"{_APPS}:load_webapps", "turngym web apps (shop, form, settings): 6 task kinds x 20 train / 10 test seeds"),
    "webapps-shop": (f"{_APPS}:load_webapps_shop", "turngym shop: add to cart, buy, price question, remove from cart"),
    "webapps-form": (f"{_APPS}:load_webapps_form", "turngym multi-page registration form"),
    "webapps-settings": (f"{_APPS}:load_webapps_settings", "turngym settings page"),
}


def register_all() -> None:
    for name, (loader, desc) in SUITES.items():
        register_suite(name, loader, desc)
    miniwob, webapp = f"{_MINIWOB}:MiniWoBEnv", "turngym.envs.gui.webapps:WebAppEnv"
    register("turngym/MiniWoB-v0", miniwob, {"suite": "miniwob"},
             "MiniWoB++ web tasks in headless Chromium (accessibility snapshot + click/type/select tools).")
    register("turngym/MiniWoB-Core-v0", miniwob, {"suite": "miniwob-core"},
             "MiniWoB++: 11 easy tasks (click-button, enter-text, login-user, ...).")
    # One env per site; other suites by keyword: make("turngym/WebApps-v0", suite="webapps-shop").
    register("turngym/WebApps-v0", webapp, {"suite": "webapps"},
             "turngym's web apps on loopback: shop, multi-page form, settings; programmatic checks.")
