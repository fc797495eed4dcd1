"""Request ids and structured request logs (one JSON line per request); dependency probes (health)."""
