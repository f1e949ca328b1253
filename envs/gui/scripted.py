"""Scripted solvers for the GUI tasks: the next reply from the task and the current observation.

They read only what a model sees (the observation text, refs included) plus the task's spec, so
they exercise the whole loop: snapshot -> refs -> tool calls -> browser -> check. Used by the
tests ("scripted policies solve every web-app task"), the benchmark and as demonstrations.

``solve_reply(task, observation) -> str`` dispatches through :data:`SOLVERS` by the task's kind
(web apps) or MiniWoB++ task name; each solver decides from the page path in the observation
("Page: /shop/cart") what to do next.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from turngym.envs.gui.apps import shop
from turngym.envs.gui.snapshot import find_ref, find_refs
from turngym.envs.tasks import Task

__all__ = ["SOLVERS", "call", "solve_reply", "random_reply"]

Solver = Callable[[Task, str], str]


class NoMoveError(LookupError):
    """The solver found nothing to do on this page (a bug in the solver or the app)."""


def call(name: str, **arguments: object) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


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
def _to_product(obs: str, product: shop.Product) -> str | None:
    """Search for the product and open it; None once on its page."""
    path = _path(obs)
    if path.startswith("/shop/product/"):
        return None
    if path.startswith("/shop/search"):
        return call("click", ref=_ref(obs, "link", product.name))
    return call("type", ref=_ref(obs, "textbox", "Search products"), text=product.name, submit=True)


def _shop_add(task: Task, obs: str) -> str:
    spec = task.metadata["spec"]
    p = next(p for p in shop.PRODUCTS if p.id == spec["product"])
    return _to_product(obs, p) or "".join(
        [call("select", ref=_ref(obs, "combobox", "Color"), option=spec["color"]),
         call("select", ref=_ref(obs, "combobox", "Size"), option=spec["size"]),
         call("click", ref=_ref(obs, "button", "Add to cart"))]
    )


def _shop_buy(task: Task, obs: str) -> str:
    spec = task.metadata["spec"]
    item = spec["items"][0]
    p = next(p for p in shop.PRODUCTS if p.id == item["product"])
    path = _path(obs)
    if path == "/shop/cart":
        return call("click", ref=_ref(obs, "link", "Checkout"))
    if path == "/shop/checkout":
        return "".join(
            [call("type", ref=_ref(obs, "textbox", "Full name"), text=spec["name"]),
             call("type", ref=_ref(obs, "textbox", "Address"), text=spec["address"]),
             call("select", ref=_ref(obs, "combobox", "Shipping"), option=spec["shipping"].title()),
             call("click", ref=_ref(obs, "button", "Place order"))]
        )
    return _to_product(obs, p) or "".join(
        [call("select", ref=_ref(obs, "combobox", "Color"), option=item["color"]),
         call("select", ref=_ref(obs, "combobox", "Size"), option=item["size"]),
         call("type", ref=_ref(obs, "spinbutton", "Quantity"), text=str(item["quantity"])),
         call("click", ref=_ref(obs, "button", "Add to cart"))]
    )


def _shop_price(task: Task, obs: str) -> str:
    p = next(p for p in shop.PRODUCTS if p.id == task.metadata["spec"]["product"])
    move = _to_product(obs, p)
    if move:
        return move
    price = re.search(r"Price: \$(\d+\.\d\d)", obs)
    if price is None:
        raise NoMoveError("no price on the product page")
    return call("answer", text=price.group(1))


def _shop_remove(task: Task, obs: str) -> str:
    if _path(obs) != "/shop/cart":
        return call("click", ref=_ref(obs, "link", "Cart", exact=False))
    kept = {line["product"] for line in task.metadata["spec"]["keep"]}
    target = next(line for line in task.metadata["spec"]["cart"] if line["product"] not in kept)
    name = next(p.name for p in shop.PRODUCTS if p.id == target["product"])
    return call("click", ref=_ref(obs, "button", f"Remove {name}"))


def _form_register(task: Task, obs: str) -> str:
    spec, path = task.metadata["spec"], _path(obs)
    if path.startswith("/form/step2"):
        calls = [call("click", ref=_ref(obs, "radio", spec["plan"]))]
        box = _ref(obs, "checkbox", "Subscribe to the newsletter")
        if _checked(obs, box) != spec["newsletter"]:
            calls.append(call("click", ref=box))
        return "".join(calls + [call("click", ref=_ref(obs, "button", "Next"))])
    if path.startswith("/form/step3"):
        return call("click", ref=_ref(obs, "button", "Submit"))
    return "".join(
        [call("type", ref=_ref(obs, "textbox", "Full name"), text=spec["name"]),
         call("type", ref=_ref(obs, "textbox", "Email"), text=spec["email"]),
         call("click", ref=_ref(obs, "button", "Next"))]
    )


def _settings_update(task: Task, obs: str) -> str:
    target = task.metadata["spec"]["target"]
    calls = [
        call("type", ref=_ref(obs, "textbox", "Display name"), text=target["display_name"]),
        call("select", ref=_ref(obs, "combobox", "Theme"), option=target["theme"]),
        call("select", ref=_ref(obs, "combobox", "Language"), option=target["language"]),
    ]
    for key, label in (("email_notifications", "Email notifications"), ("sms_notifications", "SMS notifications")):
        box = _ref(obs, "checkbox", label)
        if _checked(obs, box) != target[key]:
            calls.append(call("click", ref=box))
    return "".join(calls + [call("click", ref=_ref(obs, "button", "Save"))])


# -- MiniWoB++ ----------------------------------------------------------------------------------
def _utterance(obs: str) -> str:
    return obs.split("\n", 1)[0].removeprefix("Task: ")


def _quoted(obs: str) -> list[str]:
    return re.findall(r'"([^"]*)"', _utterance(obs))


def _click_button(task: Task, obs: str) -> str:
    return call("click", ref=_ref(obs, "button", _quoted(obs)[0]))


def _click_test(task: Task, obs: str) -> str:
    return call("click", ref=_ref(obs, "button", "Click Me!"))


def _click_test_2(task: Task, obs: str) -> str:
    name = re.search(r"Click button (\S+?)\.", _utterance(obs)).group(1)  # type: ignore[union-attr]
    return call("click", ref=_ref(obs, "button", name))


def _enter_text(task: Task, obs: str) -> str:
    return call("type", ref=_ref(obs, "textbox"), text=_quoted(obs)[0]) + call("click", ref=_ref(obs, "button", "Submit"))


def _focus_text(task: Task, obs: str) -> str:
    return call("click", ref=_ref(obs, "textbox"))


_ORDINALS = {"1st": 0, "2nd": 1, "3rd": 2, "4th": 3, "5th": 4}


def _focus_text_2(task: Task, obs: str) -> str:
    nth = next(v for k, v in _ORDINALS.items() if k in _utterance(obs))
    return call("click", ref=find_refs(_page(obs), "textbox")[nth])


def _click_checkboxes(task: Task, obs: str) -> str:
    wanted = re.search(r"Select (.*) and click Submit", _utterance(obs)).group(1)  # type: ignore[union-attr]
    names = [] if wanted == "nothing" else [w.strip() for w in wanted.split(",") if w.strip()]
    calls = [call("click", ref=_ref(obs, "checkbox", name)) for name in names]
    return "".join(calls + [call("click", ref=_ref(obs, "button", "Submit"))])


def _login_user(task: Task, obs: str) -> str:
    user, password = _quoted(obs)[:2]
    boxes = find_refs(_page(obs), "textbox")
    return call("type", ref=boxes[0], text=user) + call("type", ref=boxes[1], text=password) + call(
        "click", ref=_ref(obs, "button", "Login"))


def _enter_password(task: Task, obs: str) -> str:
    password = _quoted(obs)[0]
    boxes = find_refs(_page(obs), "textbox")
    return "".join(call("type", ref=b, text=password) for b in boxes[:2]) + call("click", ref=_ref(obs, "button", "Submit"))


def _choose_list(task: Task, obs: str) -> str:
    option = re.search(r"Select (.*) from the list", _utterance(obs)).group(1)  # type: ignore[union-attr]
    return call("select", ref=_ref(obs, "combobox"), option=option) + call("click", ref=_ref(obs, "button", "Submit"))


def _click_option(task: Task, obs: str) -> str:
    option = re.search(r"Select (.*) and click Submit", _utterance(obs)).group(1)  # type: ignore[union-attr]
    return call("click", ref=_ref(obs, "radio", option)) + call("click", ref=_ref(obs, "button", "Submit"))


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


def solve_reply(task: Task, observation: str) -> str:
    """The scripted next reply for ``task`` given the latest full observation (with its page)."""
    key = task.metadata.get("kind") or task.metadata.get("task")
    return SOLVERS[key](task, observation)


def random_reply(rng: object, observation: str) -> str:
    """A random action on the current page: click or type into a random ref, or scroll.

    ``rng`` is a ``numpy.random.Generator`` (or anything with ``integers`` and ``random``).
    """
    refs = re.findall(r"- \[(e\d+)\]", _page(observation))
    if not refs or rng.random() < 0.1:  # type: ignore[attr-defined]
        return call("scroll", direction="down")
    ref = refs[int(rng.integers(len(refs)))]  # type: ignore[attr-defined]
    if rng.random() < 0.3:  # type: ignore[attr-defined]
        return call("type", ref=ref, text="hello")
    return call("click", ref=ref)
