"""Wire types of the two APIs homellm speaks, and pure converters between them."""
