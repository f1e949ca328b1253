"""TurnShop: search, product pages, a cart and a checkout."""

from __future__ import annotations

import re
from dataclasses import dataclass

from turngym.envs.gui.apps.server import AppState, Request, Response, Route, esc, page, redirect

__all__ = ["PRODUCTS", "Product", "ROUTES", "product_by_name", "search"]


@dataclass(frozen=True)
class Product:
    id: str
    name: str
    category: str
    price: float
    colors: tuple[str, ...]
    sizes: tuple[str, ...]
    description: str


PRODUCTS: tuple[Product, ...] = (
    Product("p1", "Cotton T-Shirt", "clothing", 12.00, ("White", "Black", "Red"), ("S", "M", "L"), "A soft everyday t-shirt."),
    Product("p2", "Hooded Sweatshirt", "clothing", 34.50, ("Grey", "Navy"), ("M", "L", "XL"), "Warm fleece with a hood."),
    Product("p3", "Running Shoes", "shoes", 59.99, ("Blue", "Black"), ("40", "41", "42", "43"), "Light shoes for road running."),
    Product("p4", "Canvas Sneakers", "shoes", 39.00, ("White", "Green"), ("38", "39", "40", "41"), "Classic low-top sneakers."),
    Product("p5", "Wool Beanie", "accessories", 15.25, ("Red", "Grey", "Black"), ("One size",), "A knitted winter hat."),
    Product("p6", "Leather Belt", "accessories", 24.00, ("Brown", "Black"), ("S", "M", "L"), "Full-grain leather belt."),
    Product("p7", "Denim Jacket", "clothing", 79.00, ("Blue",), ("S", "M", "L", "XL"), "A sturdy denim jacket."),
    Product("p8", "Rain Coat", "clothing", 64.95, ("Yellow", "Navy"), ("S", "M", "L"), "Waterproof with taped seams."),
    Product("p9", "Hiking Boots", "shoes", 89.50, ("Brown",), ("41", "42", "43", "44"), "Ankle boots for rough trails."),
    Product("p10", "Sports Socks", "accessories", 6.50, ("White", "Black"), ("S", "M", "L"), "Cushioned socks, pack of one."),
    Product("p11", "Linen Shirt", "clothing", 42.00, ("White", "Blue"), ("S", "M", "L"), "A breathable summer shirt."),
    Product("p12", "Canvas Tote Bag", "accessories", 18.75, ("Natural", "Black"), ("One size",), "Roomy bag with long handles."),
)
_BY_ID = {p.id: p for p in PRODUCTS}


def product_by_name(name: str) -> Product:
    return next(p for p in PRODUCTS if p.name == name)


def search(query: str) -> list[Product]:
    """Products whose name or category contains every word of ``query`` (case-insensitive)."""
    words = query.lower().split()
    return [p for p in PRODUCTS if all(w in f"{p.name} {p.category}".lower() for w in words)]


def _nav(state: AppState) -> str:
    count = sum(line["quantity"] for line in state.cart)
    return (
        "<nav><a href='/shop'>TurnShop home</a> | "
        f"<a href='/shop/cart'>Cart ({count})</a></nav>"
    )


def _search_form(query: str = "") -> str:
    return (
        "<form action='/shop/search' method='get' role='search'>"
        "<label for='q'>Search products</label> "
        f"<input id='q' name='q' type='text' value='{esc(query, quote=True)}'> "
        "<button type='submit'>Search</button></form>"
    )


def home(state: AppState, req: Request, m: re.Match) -> Response:
    categories = sorted({p.category for p in PRODUCTS})
    links = "".join(f"<li><a href='/shop/search?q={c}'>{c.title()}</a></li>" for c in categories)
    body = f"<h1>TurnShop</h1>{_search_form()}<h2>Categories</h2><ul>{links}</ul>"
    return page("TurnShop", body, _nav(state))


def results(state: AppState, req: Request, m: re.Match) -> Response:
    query = req.field("q")
    found = search(query)
    items = "".join(f"<li><a href='/shop/product/{p.id}'>{esc(p.name)}</a></li>" for p in found)
    listing = f"<ul>{items}</ul>" if found else "<p>No products found.</p>"
    body = f"<h1>Results for “{esc(query)}”</h1>{_search_form(query)}{listing}"
    return page("Search results", body, _nav(state))


def _options(values: tuple[str, ...]) -> str:
    return "".join(f"<option value='{esc(v, quote=True)}'>{esc(v)}</option>" for v in values)


def product(state: AppState, req: Request, m: re.Match) -> Response:
    p = _BY_ID.get(m.group(1))
    if p is None:
        return page("Not found", "<h1>No such product</h1>", _nav(state))
    body = (
        f"<h1>{esc(p.name)}</h1><p>Price: ${p.price:.2f}</p><p>{esc(p.description)}</p>"
        "<form action='/shop/cart/add' method='post'>"
        f"<input type='hidden' name='product' value='{p.id}'>"
        f"<p><label for='color'>Color</label> <select id='color' name='color'>{_options(p.colors)}</select></p>"
        f"<p><label for='size'>Size</label> <select id='size' name='size'>{_options(p.sizes)}</select></p>"
        "<p><label for='quantity'>Quantity</label> <input id='quantity' name='quantity' type='number' min='1' max='9' value='1'></p>"
        "<button type='submit'>Add to cart</button></form>"
    )
    return page(p.name, body, _nav(state))


def cart_add(state: AppState, req: Request, m: re.Match) -> Response:
    p = _BY_ID.get(req.field("product"))
    try:
        quantity = max(1, min(9, int(req.field("quantity", "1"))))
    except ValueError:
        quantity = 1
    if p is not None and req.field("color") in p.colors and req.field("size") in p.sizes:
        key = {"product": p.id, "color": req.field("color"), "size": req.field("size")}
        for line in state.cart:
            if all(line[k] == v for k, v in key.items()):
                line["quantity"] = min(9, line["quantity"] + quantity)
                break
        else:
            state.cart.append({**key, "quantity": quantity})
    return redirect("/shop/cart")


def cart(state: AppState, req: Request, m: re.Match) -> Response:
    if not state.cart:
        return page("Cart", "<h1>Your cart</h1><p>Your cart is empty.</p>", _nav(state))
    rows, total = [], 0.0
    for i, line in enumerate(state.cart):
        p = _BY_ID[line["product"]]
        total += p.price * line["quantity"]
        rows.append(
            f"<tr><td>{esc(p.name)}</td><td>{esc(line['color'])}</td><td>{esc(line['size'])}</td>"
            f"<td>{line['quantity']}</td><td>${p.price * line['quantity']:.2f}</td><td>"
            f"<form action='/shop/cart/remove' method='post'><input type='hidden' name='line' value='{i}'>"
            f"<button type='submit' aria-label='Remove {esc(p.name, quote=True)}'>Remove</button></form></td></tr>"
        )
    body = (
        "<h1>Your cart</h1><table><tr><th>Product</th><th>Color</th><th>Size</th><th>Quantity</th>"
        f"<th>Subtotal</th><th></th></tr>{''.join(rows)}</table><p>Total: ${total:.2f}</p>"
        "<p><a href='/shop/checkout'>Checkout</a></p>"
    )
    return page("Cart", body, _nav(state))


def cart_remove(state: AppState, req: Request, m: re.Match) -> Response:
    try:
        del state.cart[int(req.field("line"))]
    except (ValueError, IndexError):
        pass
    return redirect("/shop/cart")


def checkout(state: AppState, req: Request, m: re.Match, error: str = "") -> Response:
    if not state.cart:
        return redirect("/shop/cart")
    alert = f"<p role='alert'>{esc(error)}</p>" if error else ""
    body = (
        f"<h1>Checkout</h1>{alert}<form action='/shop/order' method='post'>"
        "<p><label for='name'>Full name</label> <input id='name' name='name' type='text'></p>"
        "<p><label for='address'>Address</label> <input id='address' name='address' type='text'></p>"
        "<p><label for='shipping'>Shipping</label> <select id='shipping' name='shipping'>"
        "<option value='standard'>Standard</option><option value='express'>Express</option></select></p>"
        "<button type='submit'>Place order</button></form>"
    )
    return page("Checkout", body, _nav(state))


def order(state: AppState, req: Request, m: re.Match) -> Response:
    if not state.cart:
        return redirect("/shop/cart")
    if not req.field("name") or not req.field("address"):
        return checkout(state, req, m, error="Please enter your name and address.")
    state.orders.append(
        {"items": [dict(line) for line in state.cart], "name": req.field("name"),
         "address": req.field("address"), "shipping": req.field("shipping")}
    )
    state.cart.clear()
    return redirect(f"/shop/order/{len(state.orders)}")


def confirmation(state: AppState, req: Request, m: re.Match) -> Response:
    return page("Order placed", f"<h1>Thank you!</h1><p>Order number {esc(m.group(1))} is on its way.</p>", _nav(state))


ROUTES: list[Route] = [
    ("GET", r"/shop/?", home),
    ("GET", r"/shop/search", results),
    ("GET", r"/shop/product/(\w+)", product),
    ("POST", r"/shop/cart/add", cart_add),
    ("GET", r"/shop/cart", cart),
    ("POST", r"/shop/cart/remove", cart_remove),
    ("GET", r"/shop/checkout", checkout),
    ("POST", r"/shop/order", order),
    ("GET", r"/shop/order/(\d+)", confirmation),
]
