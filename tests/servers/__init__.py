"""Real servers (Prometheus, ...) that tests start as local processes on 127.0.0.1."""
