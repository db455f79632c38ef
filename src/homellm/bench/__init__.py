"""``homellm bench``: speed and quality of what you serve, next to published figures."""
