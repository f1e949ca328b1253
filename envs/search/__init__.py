"""Search: multi-hop question answering over a local corpus (or a web search API)."""
