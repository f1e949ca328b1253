"""Test-wide settings."""

import os

# Tiny models on a 2-core machine: one torch thread is fastest, and with other work on the
# machine (environment threads, containers, a browser) OpenMP's spinning threads can make a
# forward pass many times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
