"""NovaCron digital twin."""
