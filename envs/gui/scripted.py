"""Scripted solvers for the GUI tasks: the next reply from the task and the current observation.

They read only what a model sees (the observation text, refs included) plus the task's spec, so
they exercise the whole loop: snapshot -> refs -> tool calls -> browser -> check. Used by the
tests ("scripted policies solve every web-app task"), the benchmark and as demonstrations.

``solve_calls(task, observation) -> list[ToolCall]`` dispatches through :data:`SOLVERS` by the
task's kind (web apps) or MiniWoB++ task name; each solver decides from the page path in the
observation ("Page: /shop/cart") what to do next. ``solve_reply(task, observation, style)``
writes those calls as one reply in a tool-call style (:func:`render_calls`; Hermes by default),
so the expert's demonstrations are in the episode's style.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from turngym.envs.gui.apps import shop
from turngym.envs.gui.snapshot import find_ref, find_refs
from turngym.envs.tasks import Task
from turngym.tools.base import ToolCall
from turngym.tools.parsers import render_tool_call

__all__ = ["SOLVERS", "call", "render_calls", "solve_calls", "solve_reply", "random_reply"]

Calls = list[ToolCall]
Solver = Callable[[Task, str], Calls]


class NoMoveError(LookupError):
    """The solver found nothing to do on this page (a bug in the solver or the app)."""


def call(name: str, **arguments: object) -> str:
    """One call in Hermes (for scripts and tests that drive a Hermes episode by hand)."""
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def _call(name: str, **arguments: object) -> ToolCall:
    return ToolCall(name=name, arguments=arguments)


def render_calls(calls: Calls, style: str | None = None) -> str:
    """``calls`` as one reply in ``style`` (Hermes for None), each written by
    :func:`~turngym.tools.parsers.render_tool_call`. One-line calls are run together, as the
    Hermes demonstrations always were; calls that span lines (ReAct) go on lines of their own,
    because their parser finds a call's ``Action:`` only at the start of a line."""
    texts = [render_tool_call(c.name, c.arguments, style) for c in calls]
    return ("\n" if any("\n" in t for t in texts) else "").join(texts)


def _ref(obs: str, role: str, name: str | None = None, exact: bool = True) -> str:
    ref = find_ref(_page(obs), role, name, exact)
    if ref is None:
        raise NoMoveError(f"no {role} {name!r} on the page")
    return ref


def _page(obs: str) -> str:
    return obs.split("\nPage: ", 1)[-1]


def _path(obs: str) -> str:
    m = re.search(r"^Page: (\S*)", obs, re.MULTILINE)
    return m.group(1) if m else ""


def _checked(obs: str, ref: str) -> bool:
    line = next((ln for ln in obs.splitlines() if f"[{ref}] " in ln), "")
    return "[checked]" in line


# -- web apps -------------------------------------------------------------------------------
def _to_product(obs: str, product: shop.Product) -> Calls | None:
    """Search for the product and open it; None once on its page."""
    path = _path(obs)
    if path.startswith("/shop/product/"):
        return None
    if path.startswith("/shop/search"):
        return [_call("click", ref=_ref(obs, "link", product.name))]
    return [_call("type", ref=_ref(obs, "textbox", "Search products"), text=product.name, submit=True)]


def _shop_add(task: Task, obs: str) -> Calls:
    spec = task.metadata["spec"]
    p = next(p for p in shop.PRODUCTS if p.id == spec["product"])
    return _to_product(obs, p) or [
        _call("select", ref=_ref(obs, "combobox", "Color"), option=spec["color"]),
        _call("select", ref=_ref(obs, "combobox", "Size"), option=spec["size"]),
        _call("click", ref=_ref(obs, "button", "Add to cart")),
    ]


def _shop_buy(task: Task, obs: str) -> Calls:
    spec = task.metadata["spec"]
    item = spec["items"][0]
    p = next(p for p in shop.PRODUCTS if p.id == item["product"])
    path = _path(obs)
    if path == "/shop/cart":
        return [_call("click", ref=_ref(obs, "link", "Checkout"))]
    if path == "/shop/checkout":
        return [
            _call("type", ref=_ref(obs, "textbox", "Full name"), text=spec["name"]),
            _call("type", ref=_ref(obs, "textbox", "Address"), text=spec["address"]),
            _call("select", ref=_ref(obs, "combobox", "Shipping"), option=spec["shipping"].title()),
            _call("click", ref=_ref(obs, "button", "Place order")),
        ]
    return _to_product(obs, p) or [
        _call("select", ref=_ref(obs, "combobox", "Color"), option=item["color"]),
        _call("select", ref=_ref(obs, "combobox", "Size"), option=item["size"]),
        _call("type", ref=_ref(obs, "spinbutton", "Quantity"), text=str(item["quantity"])),
        _call("click", ref=_ref(obs, "button", "Add to cart")),
    ]


def _shop_price(task: Task, obs: str) -> Calls:
    p = next(p for p in shop.PRODUCTS if p.id == task.metadata["spec"]["product"])
    move = _to_product(obs, p)
    if move:
        return move
    price = re.search(r"Price: \$(\d+\.\d\d)", obs)
    if price is None:
        raise NoMoveError("no price on the product page")
    return [_call("answer", text=price.group(1))]


def _shop_remove(task: Task, obs: str) -> Calls:
    if _path(obs) != "/shop/cart":
        return [_call("click", ref=_ref(obs, "link", "Cart", exact=False))]
    kept = {line["product"] for line in task.metadata["spec"]["keep"]}
    target = next(line for line in task.metadata["spec"]["cart"] if line["product"] not in kept)
    name = next(p.name for p in shop.PRODUCTS if p.id == target["product"])
    return [_call("click", ref=_ref(obs, "button", f"Remove {name}"))]


def _form_register(task: Task, obs: str) -> Calls:
    spec, path = task.metadata["spec"], _path(obs)
    if path.startswith("/form/step2"):
        calls = [_call("click", ref=_ref(obs, "radio", spec["plan"]))]
        box = _ref(obs, "checkbox", "Subscribe to the newsletter")
        if _checked(obs, box) != spec["newsletter"]:
            calls.append(_call("click", ref=box))
        return calls + [_call("click", ref=_ref(obs, "button", "Next"))]
    if path.startswith("/form/step3"):
        return [_call("click", ref=_ref(obs, "button", "Submit"))]
    return [
        _call("type", ref=_ref(obs, "textbox", "Full name"), text=spec["name"]),
        _call("type", ref=_ref(obs, "textbox", "Email"), text=spec["email"]),
        _call("click", ref=_ref(obs, "button", "Next")),
    ]


def _settings_update(task: Task, obs: str) -> Calls:
    target = task.metadata["spec"]["target"]
    calls = [
        _call("type", ref=_ref(obs, "textbox", "Display name"), text=target["display_name"]),
        _call("select", ref=_ref(obs, "combobox", "Theme"), option=target["theme"]),
        _call("select", ref=_ref(obs, "combobox", "Language"), option=target["language"]),
    ]
    for key, label in (("email_notifications", "Email notifications"), ("sms_notifications", "SMS notifications")):
        box = _ref(obs, "checkbox", label)
        if _checked(obs, box) != target[key]:
            calls.append(_call("click", ref=box))
    return calls + [_call("click", ref=_ref(obs, "button", "Save"))]


# -- MiniWoB++ ----------------------------------------------------------------------------------
def _utterance(obs: str) -> str:
    return obs.split("\n", 1)[0].removeprefix("Task: ")


def _quoted(obs: str) -> list[str]:
    return re.findall(r'"([^"]*)"', _utterance(obs))


def _click_button(task: Task, obs: str) -> Calls:
    return [_call("click", ref=_ref(obs, "button", _quoted(obs)[0]))]


def _click_test(task: Task, obs: str) -> Calls:
    return [_call("click", ref=_ref(obs, "button", "Click Me!"))]


def _click_test_2(task: Task, obs: str) -> Calls:
    name = re.search(r"Click button (\S+?)\.", _utterance(obs)).group(1)  # type: ignore[union-attr]
    return [_call("click", ref=_ref(obs, "button", name))]


def _enter_text(task: Task, obs: str) -> Calls:
    return [_call("type", ref=_ref(obs, "textbox"), text=_quoted(obs)[0]), _call("click", ref=_ref(obs, "button", "Submit"))]


def _focus_text(task: Task, obs: str) -> Calls:
    return [_call("click", ref=_ref(obs, "textbox"))]


_ORDINALS = {"1st": 0, "2nd": 1, "3rd": 2, "4th": 3, "5th": 4}


def _focus_text_2(task: Task, obs: str) -> Calls:
    nth = next(v for k, v in _ORDINALS.items() if k in _utterance(obs))
    return [_call("click", ref=find_refs(_page(obs), "textbox")[nth])]


def _click_checkboxes(task: Task, obs: str) -> Calls:
    wanted = re.search(r"Select (.*) and click Submit", _utterance(obs)).group(1)  # type: ignore[union-attr]
    names = [] if wanted == "nothing" else [w.strip() for w in wanted.split(",") if w.strip()]
    calls = [_call("click", ref=_ref(obs, "checkbox", name)) for name in names]
    return calls + [_call("click", ref=_ref(obs, "button", "Submit"))]


def _login_user(task: Task, obs: str) -> Calls:
    user, password = _quoted(obs)[:2]
    boxes = find_refs(_page(obs), "textbox")
    return [_call("type", ref=boxes[0], text=user), _call("type", ref=boxes[1], text=password),
            _call("click", ref=_ref(obs, "button", "Login"))]


def _enter_password(task: Task, obs: str) -> Calls:
    password = _quoted(obs)[0]
    boxes = find_refs(_page(obs), "textbox")
    return [_call("type", ref=b, text=password) for b in boxes[:2]] + [_call("click", ref=_ref(obs, "button", "Submit"))]


def _choose_list(task: Task, obs: str) -> Calls:
    option = re.search(r"Select (.*) from the list", _utterance(obs)).group(1)  # type: ignore[union-attr]
    return [_call("select", ref=_ref(obs, "combobox"), option=option), _call("click", ref=_ref(obs, "button", "Submit"))]


def _click_option(task: Task, obs: str) -> Calls:
    option = re.search(r"Select (.*) and click Submit", _utterance(obs)).group(1)  # type: ignore[union-attr]
    return [_call("click", ref=_ref(obs, "radio", option)), _call("click", ref=_ref(obs, "button", "Submit"))]


SOLVERS: dict[str, Solver] = {
    "shop-add": _shop_add,
    "shop-buy": _shop_buy,
    "shop-price": _shop_price,
    "shop-remove": _shop_remove,
    "form-register": _form_register,
    "settings-update": _settings_update,
    "click-button": _click_button,
    "click-test": _click_test,
    "click-test-2": _click_test_2,
    "enter-text": _enter_text,
    "focus-text": _focus_text,
    "focus-text-2": _focus_text_2,
    "click-checkboxes": _click_checkboxes,
    "login-user": _login_user,
    "enter-password": _enter_password,
    "choose-list": _choose_list,
    "click-option": _click_option,
}


def solve_calls(task: Task, observation: str) -> Calls:
    """The scripted next calls for ``task`` given the latest full observation (with its page)."""
    key = task.metadata.get("kind") or task.metadata.get("task")
    return SOLVERS[key](task, observation)


def solve_reply(task: Task, observation: str, style: str | None = None) -> str:
    """The scripted next reply: :func:`solve_calls` written in ``style`` (:func:`render_calls`)."""
    return render_calls(solve_calls(task, observation), style)


def random_reply(rng: object, observation: str, style: str | None = None) -> str:
    """A random action on the current page, in ``style``: click or type into a random ref, or scroll.

    ``rng`` is a ``numpy.random.Generator`` (or anything with ``integers`` and ``random``).
    """
    refs = re.findall(r"- \[(e\d+)\]", _page(observation))
    if not refs or rng.random() < 0.1:  # type: ignore[attr-defined]
        return render_tool_call("scroll", {"direction": "down"}, style)
    ref = refs[int(rng.integers(len(refs)))]  # type: ignore[attr-defined]
    if rng.random() < 0.3:  # type: ignore[attr-defined]
        return render_tool_call("type", {"ref": ref, "text": "hello"}, style)
    return render_tool_call("click", {"ref": ref}, style)
