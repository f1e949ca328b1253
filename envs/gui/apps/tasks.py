"""Tasks on turngym's web apps: generated from a seed, checked against the app's state.

A :class:`TaskKind` says where the episode starts, how to draw a task from a seed (its prompt
and its spec), the app state it starts from, and the check: a pure function of the final
:class:`~turngym.envs.gui.apps.server.AppState`, the spec and the agent's answer (None when it
gave none). Kinds are registered by name in :data:`TASK_KINDS`.

Suites: ``webapps`` (every kind), ``webapps-shop``, ``webapps-form``, ``webapps-settings``;
task ids ``"<kind>/<seed>"``, seeds 0-19 train and 1000-1009 test.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from turngym.envs.gui.apps import form, settings, shop
from turngym.envs.gui.apps.server import AppState
from turngym.envs.tasks import Task, TaskSuite

__all__ = ["TASK_KINDS", "TaskKind", "ROUTES", "make_task", "initial_state", "check_task", "load_webapps"]

ROUTES = [*shop.ROUTES, *form.ROUTES, *settings.ROUTES]
TRAIN_SEEDS = range(0, 20)
TEST_SEEDS = range(1000, 1010)

_PEOPLE = ("Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov", "Donald Knuth", "Frances Allen")
_STREETS = ("12 Elm Street", "7 Harbour Road", "221 Baker Street", "5 Mill Lane", "40 Station Avenue")


@dataclass(frozen=True)
class TaskKind:
    start: str
    """The path the episode starts at."""
    generate: Callable[[random.Random], tuple[str, dict[str, Any]]]
    """seed's RNG -> (prompt, spec)."""
    check: Callable[[AppState, dict[str, Any], str | None], bool]
    """(final state, spec, answer) -> solved?"""
    initial: Callable[[dict[str, Any]], AppState] = field(default=lambda spec: AppState(settings=dict(settings.DEFAULT_SETTINGS)))
    """spec -> the state the episode starts from."""


def _line(p: shop.Product, color: str, size: str) -> dict[str, Any]:
    return {"product": p.id, "color": color, "size": size}


def _sized(p: shop.Product, size: str) -> str:
    return "" if size == "One size" else f" in size {size}"


# -- shop ---------------------------------------------------------------------------------
def _gen_add(rng: random.Random):
    p = rng.choice(shop.PRODUCTS)
    color, size = rng.choice(p.colors), rng.choice(p.sizes)
    return f"Add a {color.lower()} {p.name}{_sized(p, size)} to the cart.", _line(p, color, size)


def _check_add(state: AppState, spec: dict, answer: str | None) -> bool:
    return any(all(line[k] == v for k, v in spec.items()) for line in state.cart)


def _gen_buy(rng: random.Random):
    p = rng.choice(shop.PRODUCTS)
    color, size, qty = rng.choice(p.colors), rng.choice(p.sizes), rng.randint(2, 3)
    who, where, ship = rng.choice(_PEOPLE), rng.choice(_STREETS), rng.choice(("standard", "express"))
    prompt = (f"Buy {qty} of the {p.name} ({color.lower()}{_sized(p, size).replace(' in', ',')}) with {ship} "
              f"shipping, for {who} at {where}.")
    spec = {"items": [{**_line(p, color, size), "quantity": qty}], "name": who, "address": where, "shipping": ship}
    return prompt, spec


def _check_buy(state: AppState, spec: dict, answer: str | None) -> bool:
    if not state.orders:
        return False
    got = state.orders[-1]
    same = lambda a, b: a.strip().lower() == b.strip().lower()  # noqa: E731
    return (got["items"] == spec["items"] and same(got["name"], spec["name"])
            and same(got["address"], spec["address"]) and got["shipping"] == spec["shipping"])


def _gen_price(rng: random.Random):
    p = rng.choice(shop.PRODUCTS)
    return f"What does the {p.name} cost? Answer with the price in dollars.", {"product": p.id, "price": p.price}


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _check_price(state: AppState, spec: dict, answer: str | None) -> bool:
    numbers = [float(n) for n in _NUMBER.findall((answer or "").replace(",", ""))]
    return len(numbers) == 1 and abs(numbers[0] - spec["price"]) < 0.005


def _gen_remove(rng: random.Random):
    a, b = rng.sample(shop.PRODUCTS, 2)
    lines = [{**_line(p, p.colors[0], p.sizes[0]), "quantity": 1} for p in (a, b)]
    rng.shuffle(lines)
    return f"Remove the {a.name} from the cart and keep everything else.", {"cart": lines, "keep": [ln for ln in lines if ln["product"] != a.id]}


def _check_remove(state: AppState, spec: dict, answer: str | None) -> bool:
    return state.cart == spec["keep"]


def _init_remove(spec: dict) -> AppState:
    return AppState(cart=[dict(line) for line in spec["cart"]], settings=dict(settings.DEFAULT_SETTINGS))


# -- form -----------------------------------------------------------------------------------
def _gen_register(rng: random.Random):
    who = rng.choice(_PEOPLE)
    email = who.split()[0].lower() + "@" + rng.choice(("example.com", "mail.test", "turngym.dev"))
    plan, news = rng.choice(form.PLANS), rng.random() < 0.5
    prompt = (f"Register {who} with the email {email} for the {plan} plan, and "
              f"{'subscribe to' if news else 'do not subscribe to'} the newsletter.")
    return prompt, {"name": who, "email": email, "plan": plan, "newsletter": news}


def _check_register(state: AppState, spec: dict, answer: str | None) -> bool:
    return bool(state.registrations) and state.registrations[-1] == spec


# -- settings -------------------------------------------------------------------------------
def _change_theme(rng: random.Random, start: dict, target: dict) -> str:
    target["theme"] = rng.choice([t for t in settings.THEMES if t != start["theme"]])
    return f"switch the theme to {target['theme']}"


def _change_language(rng: random.Random, start: dict, target: dict) -> str:
    target["language"] = rng.choice([lang for lang in settings.LANGUAGES if lang != start["language"]])
    return f"set the language to {target['language']}"


def _toggle(key: str, label: str) -> Callable[[random.Random, dict, dict], str]:
    def change(rng: random.Random, start: dict, target: dict) -> str:
        target[key] = not start[key]
        return f"turn {'on' if target[key] else 'off'} {label}"

    return change


def _change_name(rng: random.Random, start: dict, target: dict) -> str:
    target["display_name"] = rng.choice(_PEOPLE).split()[0]
    return f"change the display name to {target['display_name']}"


_SETTING_CHANGES = {
    "theme": _change_theme,
    "language": _change_language,
    "sms": _toggle("sms_notifications", "SMS notifications"),
    "email": _toggle("email_notifications", "email notifications"),
    "name": _change_name,
}


def _gen_settings(rng: random.Random):
    start = dict(settings.DEFAULT_SETTINGS)
    start["theme"] = rng.choice(settings.THEMES)
    start["email_notifications"] = rng.random() < 0.5
    target = dict(start)
    changes = [_SETTING_CHANGES[name](rng, start, target) for name in rng.sample(sorted(_SETTING_CHANGES), 3)]
    prompt = "In the settings, " + ", ".join(changes[:-1]) + f" and {changes[-1]}; then save. Leave everything else as it is."
    return prompt, {"start": start, "target": target}


def _check_settings(state: AppState, spec: dict, answer: str | None) -> bool:
    return state.saves > 0 and state.settings == spec["target"]


def _init_settings(spec: dict) -> AppState:
    return AppState(settings=dict(spec["start"]))


TASK_KINDS: dict[str, TaskKind] = {
    "shop-add": TaskKind("/shop", _gen_add, _check_add),
    "shop-buy": TaskKind("/shop", _gen_buy, _check_buy),
    "shop-price": TaskKind("/shop", _gen_price, _check_price),
    "shop-remove": TaskKind("/shop", _gen_remove, _check_remove, _init_remove),
    "form-register": TaskKind("/form/step1", _gen_register, _check_register),
    "settings-update": TaskKind("/settings", _gen_settings, _check_settings, _init_settings),
}


def make_task(kind: str, seed: int, split: str) -> Task:
    prompt, spec = TASK_KINDS[kind].generate(random.Random(f"{kind}/{seed}"))
    return Task(id=f"{kind}/{seed}", prompt=prompt, metadata={"kind": kind, "spec": spec}, split=split)


def initial_state(task: Task) -> AppState:
    return TASK_KINDS[task.metadata["kind"]].initial(task.metadata["spec"])


def check_task(task: Task, state: AppState, answer: str | None) -> bool:
    return TASK_KINDS[task.metadata["kind"]].check(state, task.metadata["spec"], answer)


def load_webapps(prefix: str = "") -> TaskSuite:
    kinds = [k for k in TASK_KINDS if k.startswith(prefix)]
    tasks = [make_task(k, s, "train") for k in kinds for s in TRAIN_SEEDS]
    tasks += [make_task(k, s, "test") for k in kinds for s in TEST_SEEDS]
    return TaskSuite(f"webapps-{prefix}".rstrip("-"), tasks)


def load_webapps_shop() -> TaskSuite:
    return load_webapps("shop")


def load_webapps_form() -> TaskSuite:
    return load_webapps("form")


def load_webapps_settings() -> TaskSuite:
    return load_webapps("settings")


