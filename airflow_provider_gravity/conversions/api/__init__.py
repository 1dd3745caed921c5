"""Gravity's Conversions API: the HTTP client with its retries, and the outcome of each event sent."""
