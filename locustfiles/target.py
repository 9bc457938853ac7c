"""The app and key locust users call unless MINIREC_APP / MINIREC_API_KEY say otherwise: the bench
mall's (`bench/harness/mall.py` prepares it under these names)."""

BENCH_APP = "bench"
BENCH_KEY = "bench-key-0123456789"
