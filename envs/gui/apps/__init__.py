"""turngym's own small web apps (a shop, a multi-page form, a settings page), served on loopback."""
