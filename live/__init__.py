"""Live adapters: a real fleet behind HAProxy as a Plant, chaos, load, and the HTTP API."""
