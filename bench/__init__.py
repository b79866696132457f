"""Benchmarks: each bench/<name>.py with a `main()` is run by `python -m bench` (`make bench`)."""
